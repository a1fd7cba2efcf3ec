"""`musilingo eval`: metric tables under a named profile, with the floor."""

from musilingo_cli.pipelines.evaluate.pipeline import EvalConfig, run  # noqa: F401
