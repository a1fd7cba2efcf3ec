"""ModelConfig: everything that defines a MusiLingo model besides its weights. Saved as
`musilingo.json` in every checkpoint so a model never depends on flags remembered by a user."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from musilingo_cli import __version__
from musilingo_cli.core.errors import ConfigError

# The official stage-2 template; the audio placeholder is spliced in where <AudioHere> stands.
FINETUNE_TEMPLATE = "###Human: {} ###Assistant: "
AUDIO_SLOT = "<Audio><AudioHere></Audio> "
AUDIO_HERE = "<AudioHere>"
CAPTION_INSTRUCTION = "Please give a caption to the music."

OFFICIAL_ENCODER = "m-a-p/MERT-v1-330M"
OFFICIAL_LLM = "lmsys/vicuna-7b-v1.5"  # the paper used v0 (a delta); v1.5 needs no merge


@dataclass(frozen=True)
class EncoderInfo:
    """What the rest of the pipeline needs to know about an encoder before loading its weights.

    Attributes:
        sample_rate: Hz the encoder hears (MERT-v1: 24000).
        normalize: per-clip zero-mean/unit-variance input (the preprocessor's do_normalize).
        hidden_size: D, the width of each hidden state (MERT-v1-330M: 1024).
        num_hidden_states: L, hidden states returned per frame (layers + the input embedding: 25).
        pool_window: the default frames per audio token for this encoder (the same 4.33 s as MERT's 325).
    """

    sample_rate: int
    normalize: bool
    hidden_size: int
    num_hidden_states: int
    pool_window: int = 325  # frames per audio token: MERT's 325 frames = 4.33 s; others match that time


@dataclass
class ModelConfig:
    """What a MusiLingo model is: parts, adapter shape and text format (official defaults).

    Attributes:
        encoder: hub id or local directory of the frozen audio encoder (MERT by default).
        llm: hub id or local directory of the frozen causal LM.
        tokenizer: where the tokenizer comes from when it differs from `llm`.
        layer_combine: "mean" (official code: plain mean of all hidden states) or "learned"
            (the paper's text: softmax-weighted layers, trained with the adapter).
        pool_window: frames averaged into one audio token (325 = 4.33 s at 75 Hz).
        encoder_hidden_size / llm_hidden_size / num_hidden_states: shapes of the adapter.
        prompt_template: "" for stage 1 (no prompt at all), FINETUNE_TEMPLATE for stage 2.
        end_sym: appended to every target and where generation stops ("\\n" or "###").
        max_txt_len: target tokens kept (answer + end_sym), 32 in stage 1, 160 in stage 2.
        stage: "pretrain" or "finetune".
        normalize_audio: per-clip zero-mean/unit-variance input; None = the encoder's
            preprocessor_config decides.
        lora: folder of LoRA weights for the LLM in PEFT's format ("lora" inside a checkpoint),
            merged into the LLM when the model is loaded; None = no LoRA (model/lora.py).
    """

    encoder: str = OFFICIAL_ENCODER
    llm: str = OFFICIAL_LLM
    tokenizer: str | None = None
    layer_combine: Literal["mean", "learned"] = "mean"
    pool_window: int = 325
    encoder_hidden_size: int = 1024
    llm_hidden_size: int = 4096
    num_hidden_states: int = 25
    prompt_template: str = FINETUNE_TEMPLATE
    end_sym: str = "###"
    max_txt_len: int = 160
    stage: Literal["pretrain", "finetune"] = "finetune"
    normalize_audio: bool | None = None
    lora: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    version: str = __version__

    def __post_init__(self) -> None:
        if self.layer_combine not in ("mean", "learned"):
            raise ConfigError(f"layer_combine must be 'mean' or 'learned', not {self.layer_combine!r}")
        if self.pool_window < 1:
            raise ConfigError(f"pool_window must be a positive number of frames, not {self.pool_window}")
        if self.prompt_template and (self.prompt_template.count("{}") != 1):
            raise ConfigError("prompt_template must contain exactly one '{}' where the audio and question go")
        if self.stage not in ("pretrain", "finetune"):
            raise ConfigError(f"stage must be 'pretrain' or 'finetune', not {self.stage!r}")

    @classmethod
    def for_stage(cls, stage: str, **overrides: Any) -> ModelConfig:
        """The official text format of a training stage (pretrain: no prompt, "\\n", 32 tokens)."""
        if stage == "pretrain":
            base = {"prompt_template": "", "end_sym": "\n", "max_txt_len": 32}
        else:
            base = {"prompt_template": FINETUNE_TEMPLATE, "end_sym": "###", "max_txt_len": 160}
        return cls(stage=stage, **{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the body of musilingo.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Read musilingo.json; unknown keys from newer versions go to `extra`, not an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs.setdefault("extra", {}).update({k: v for k, v in data.items() if k not in known})
        return cls(**kwargs)
