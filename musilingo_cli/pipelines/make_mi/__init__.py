"""`musilingo make-mi`: Music Instruct Q&A pairs from captions through a chat API, then an LLM filter.

Modules: config (MakeMIConfig), prompts (prompt files), replies (parsing replies, outlier rules),
runner (journal state, worker threads, requests), outputs (MI files from the journal), cost
(prices, dry run), pipeline (`run`, which ties them together).
"""

from musilingo_cli.pipelines.make_mi.config import KIND_DEFAULTS, KINDS, MakeMIConfig
from musilingo_cli.pipelines.make_mi.cost import PRICES, dry_run_report, estimate_cost, estimate_tokens, prices_for
from musilingo_cli.pipelines.make_mi.outputs import assemble, write_outputs
from musilingo_cli.pipelines.make_mi.pipeline import run
from musilingo_cli.pipelines.make_mi.prompts import Prompt, load_prompt
from musilingo_cli.pipelines.make_mi.replies import parse_pairs, parse_verdicts, rule_rejects

__all__ = [
    "KINDS",
    "KIND_DEFAULTS",
    "PRICES",
    "MakeMIConfig",
    "Prompt",
    "assemble",
    "dry_run_report",
    "estimate_cost",
    "estimate_tokens",
    "load_prompt",
    "parse_pairs",
    "parse_verdicts",
    "prices_for",
    "rule_rejects",
    "run",
    "write_outputs",
]
