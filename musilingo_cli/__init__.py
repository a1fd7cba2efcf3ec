"""musilingo: MusiLingo (frozen MERT encoder, linear adapter, frozen LLM) for music captioning and QA."""

__version__ = "0.1.0"
