"""`musilingo make-mi`: Music Instruct Q&A pairs from captions through a chat API, then an LLM filter."""

from musilingo_cli.pipelines.make_mi.pipeline import MakeMIConfig, run  # noqa: F401
