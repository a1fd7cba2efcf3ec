"""Old flat import paths (`musilingo_cli.loading`, `musilingo_cli.ask`, ...) keep working for one
release, with a DeprecationWarning naming the new module. 0.2 moved every module into the layered
packages `core`, `model`, `data` and `pipelines`; this finder maps each old name to its new home
and returns the very same module object, so monkeypatching either name patches both."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module (0.1) -> new module (0.2); remove in 0.3
MOVED = {
    "errors": "core.errors",
    "console": "core.console",
    "jsonfiles": "core.files",
    "journal": "core.journal",
    "config": "model.config",
    "audio": "model.audio",
    "encoder": "model.encoder",
    "adapter": "model.adapter",
    "llm": "model.llm",
    "generation": "model.generation",
    "decoding": "model.decoding",
    "checkpoint": "model.checkpoint",
    "official": "model.release",
    "hub": "model.hub",
    "loading": "model.loader",
    "datasets": "data.datasets",
    "captions": "data.captions",
    "inputs": "data.inputs",
    "batching": "data.batching",
    "features": "data.feature_cache",
    "ask": "pipelines.ask",
    "train": "pipelines.train",
    "schedule": "pipelines.train.schedule",
    "make_mi": "pipelines.make_mi",
    "chat_api": "pipelines.chat_api",
    "evaluate": "pipelines.evaluate",
    "metrics": "pipelines.evaluate.metrics",
    "nltk_data": "pipelines.evaluate.nltk_data",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.partition(".")
        if head != "musilingo_cli" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = "musilingo_cli." + MOVED[spec.name.partition(".")[2]]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes in 0.3", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module):  # the new module is already executed
        pass


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
