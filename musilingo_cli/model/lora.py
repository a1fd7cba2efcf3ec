"""LoRA on the LLM, through `peft`: the settings (rank, alpha, dropout, target modules), wrapping
a frozen causal LM for training, writing the trained LoRA weights in PEFT's own format (a
`lora/` folder beside `adapter.safetensors`: adapter_config.json + adapter_model.safetensors,
readable by `PeftModel.from_pretrained` outside musilingo too), and reading them back merged
into the LLM's weights, so inference runs a plain causal LM (our decoding loop, no PEFT
overhead per token).

LoRA (Hu et al. 2021, arXiv:2106.09685): W' = W + (alpha / rank) * B @ A, with A [rank, in]
and B [out, rank]; B starts at zero, so a fresh LoRA changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from musilingo_cli.core.errors import CheckpointError, ConfigError

LORA_DIR = "lora"  # the folder inside a checkpoint; musilingo.json names it under "lora"

# Llama-family names (Vicuna, Llama 2/3, Mistral, Qwen2 share them): attention and MLP
# projections, as QLoRA (Dettmers et al. 2023, arXiv:2305.14314) adapts every linear layer.
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSettings:
    """What LoRA adds to the LLM.

    Attributes:
        rank: r, the inner dimension of B @ A (8-64 is usual).
        alpha: scale numerator: the update is (alpha / rank) * B @ A.
        dropout: dropout on the LoRA branch's input while training (0 = none).
        target_modules: names of the linear layers adapted (default: Llama attention + MLP).
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = field(default=LLAMA_TARGETS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.rank < 1:
            raise ConfigError(f"--lora-rank must be a positive integer, not {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"--lora-alpha must be positive, not {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--lora-dropout must be in [0, 1), not {self.dropout}")
        if not self.target_modules:
            raise ConfigError("--lora-targets names no module: give e.g. q_proj,v_proj")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_modules": list(self.target_modules)}


def _peft():
    """peft, an optional extra (imported on use: `ask` without LoRA never needs it)."""
    try:
        import peft
    except ImportError:
        raise ConfigError("LoRA needs peft: pip install 'musilingo-cli[lora]'") from None
    return peft


def apply_lora(llm: torch.nn.Module, settings: LoraSettings, seed: int | None = None) -> torch.nn.Module:
    """Wrap a frozen causal LM with trainable LoRA layers (a peft.PeftModel). Only the LoRA
    weights require gradients; A is drawn from torch's generator (seeded with `seed` when given,
    without disturbing the global state), B is zero. Raises ConfigError when a target module
    does not exist in this LLM."""
    peft = _peft()
    present = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [t for t in settings.target_modules if t not in present]
    if missing:
        raise ConfigError(
            f"--lora-targets: {', '.join(missing)} not found in the LLM "
            f"({type(llm).__name__}); pick from its linear layers, e.g. q_proj,v_proj"
        )
    config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        wrapped = peft.get_peft_model(llm, config, autocast_adapter_dtype=False)
    return wrapped


def lora_parameters(llm: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The trainable LoRA parameters of a wrapped LLM (a compiled one is unwrapped), by name."""
    llm = getattr(llm, "_orig_mod", llm)
    return {name: p for name, p in llm.named_parameters() if "lora_" in name and p.requires_grad}


def lora_modules(llm: torch.nn.Module) -> torch.nn.ModuleDict:
    """The small lora_A / lora_B containers of a wrapped LLM gathered in one ModuleDict (keys
    with '.' replaced), so a training engine can own them without owning the frozen LLM."""
    llm = getattr(llm, "_orig_mod", llm)
    found = {name.replace(".", "-"): m for name, m in llm.named_modules() if name.endswith(("lora_A", "lora_B"))}
    return torch.nn.ModuleDict(found)


def save_lora(llm: torch.nn.Module, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the LoRA weights of a wrapped LLM in PEFT's format to `directory` (fp32). `state`
    (names as `lora_parameters`) replaces the live tensors, e.g. a ZeRO master copy."""
    llm = getattr(llm, "_orig_mod", llm)
    state = state if state is not None else {n: p.detach() for n, p in lora_parameters(llm).items()}
    state = {n: t.detach().to("cpu", torch.float32).contiguous() for n, t in state.items()}
    llm.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
    return Path(directory)


def merge_lora(llm: torch.nn.Module, directory: str | Path) -> torch.nn.Module:
    """A plain causal LM with the LoRA weights in `directory` (PEFT format) merged into its
    linear layers, frozen. Raises CheckpointError when the folder is missing or does not fit."""
    peft = _peft()
    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise CheckpointError(
            f"{directory}: no adapter_config.json; the checkpoint names LoRA weights that are "
            "missing (copy the whole checkpoint folder)"
        )
    try:
        wrapped = peft.PeftModel.from_pretrained(llm, str(directory), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(
            f"{directory}: LoRA weights do not fit the LLM "
            f"({' '.join(str(err).split())[:200]}); pass the --llm they were trained on"
        ) from None
    return wrapped.merge_and_unload().eval().requires_grad_(False)
