"""musilingo: MusiLingo (frozen MERT encoder, linear adapter, frozen LLM) for music captioning and QA.

The layers, each importing only the ones below it (checked in CI by import-linter):

    cli -> commands -> pipelines -> data -> model -> core

The public Python API is small and imported lazily (so `musilingo --help` stays fast):

    load_model(spec, device=None, dtype=None) -> MusiLingo
    answer(paths, questions, model=...) -> list[dict]      # exactly what `musilingo ask` does
    MusiLingo, ModelConfig
"""

from musilingo_cli import _compat

__version__ = "0.2.0"
__all__ = ["MusiLingo", "ModelConfig", "answer", "load_model", "__version__"]

_compat.install()

_PUBLIC = {
    "load_model": "musilingo_cli.model.loader",
    "MusiLingo": "musilingo_cli.model.musilingo",
    "ModelConfig": "musilingo_cli.model.config",
    "answer": "musilingo_cli.pipelines.ask",
}


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'musilingo_cli' has no attribute {name!r}")
