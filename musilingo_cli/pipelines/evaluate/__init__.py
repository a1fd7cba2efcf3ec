"""`musilingo eval`: metric tables under a named profile, with the floor.

The package's front: EvalConfig and `run` (pipeline.py), the EvalReport that `run` returns, and how a
report is shown (report.py). The steps live in config, readers, pairing, answering, metrics, report.
"""

from musilingo_cli.pipelines.evaluate.config import EvalConfig, EvalReport  # noqa: F401
from musilingo_cli.pipelines.evaluate.pipeline import check_inputs, run  # noqa: F401
from musilingo_cli.pipelines.evaluate.report import render_text, rich_table  # noqa: F401
