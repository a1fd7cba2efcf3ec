"""MusiLingo, as Figure 1 of the paper reads:

    waveform -> frozen encoder -> all hidden states -> layer mean + temporal pooling (features)
             -> linear projection (the only trained part) -> audio embeddings
             -> spliced into the prompt where the audio placeholder stands -> frozen LLM

Each item's token row is  [BOS] before [AUDIO x T'] after target  where before/after are the
prompt halves around <AudioHere> (stage 2: '###Human: <Audio>' and '</Audio> {q} ###Assistant: '),
each segment tokenized separately without special tokens, as the official code does.
Audio embeddings replace the placeholder positions with `masked_scatter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import StoppingCriteriaList

from musilingo_cli.core.console import warn
from musilingo_cli.core.errors import ConfigError
from musilingo_cli.model.adapter import Adapter, combine_and_pool
from musilingo_cli.model.config import AUDIO_HERE, AUDIO_SLOT, ModelConfig
from musilingo_cli.model.encoder import AudioEncoder
from musilingo_cli.model.generation import GenerationSettings, postprocess
from musilingo_cli.model.structured import JsonGrammar

AUDIO_ID = -1  # placeholder id in token rows; never reaches the embedding table
IGNORE = -100  # label of every position that is not target


@dataclass
class Batch:
    """LLM inputs for a batch: embeddings, attention mask and (for training) labels."""

    inputs_embeds: torch.Tensor  # [B, S, H]
    attention_mask: torch.Tensor  # [B, S]
    labels: torch.Tensor | None  # [B, S], IGNORE outside the targets


class DecodedStop:
    """Stop a row once its decoded tail holds `end_sym`: a stopping criterion for transformers'
    `generate` (a fallback for any tokenizer), and `holds` serves our decoding loop."""

    def __init__(self, tokenizer, end_sym: str, tail: int = 8):
        self.tokenizer, self.end_sym, self.tail = tokenizer, end_sym, tail

    def holds(self, tails) -> list[bool]:
        """Per row of token ids (a tensor or lists): does its decoded text hold `end_sym`?"""
        return [self.end_sym in text for text in self.tokenizer.batch_decode(tails)]

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        return torch.tensor(self.holds(input_ids[:, -self.tail :]), device=input_ids.device)


class MusiLingo(nn.Module):
    """Frozen encoder + trainable adapter + frozen LLM. `encoder` may be None when training
    from cached features."""

    def __init__(self, config: ModelConfig, llm: nn.Module, tokenizer, encoder: AudioEncoder | None = None):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.llm = llm
        self.tokenizer = tokenizer
        self.adapter = Adapter(config)

    # --- audio -> features (frozen; what the feature cache stores) ---
    @torch.no_grad()
    def encode(self, waves: torch.Tensor) -> torch.Tensor:
        """Equal-length clips [B, S] -> features [B, T', D] ("mean") or [B, L, T', D] ("learned")."""
        if self.encoder is None:
            raise RuntimeError("this model was built without an audio encoder (cached-feature training)")
        hidden = self.encoder(waves)
        return combine_and_pool(hidden, self.config.layer_combine, self.config.pool_window).float()

    # --- features -> audio embeddings (trainable) ---
    def embed_audio(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Per-item features ([T'_i, D] or [L, T'_i, D]) -> all audio embeddings, row-major [sum T'_i, H]."""
        time_dim = 0 if self.config.layer_combine == "mean" else 1
        joined = torch.cat([f.to(self.adapter.proj.weight.device) for f in features], dim=time_dim)
        return self.adapter(joined.unsqueeze(0))[0]

    # --- text + audio -> LLM inputs ---
    def prompt_halves(self, question: str | None) -> tuple[str, str]:
        """The prompt around the audio; stage 1 (empty template) has no prompt at all."""
        if not self.config.prompt_template:
            return "", ""
        before, after = self.config.prompt_template.format(AUDIO_SLOT + (question or "")).split(AUDIO_HERE)
        return before, after

    def token_row(self, num_audio: int, question: str | None, answer: str | None) -> tuple[list[int], int]:
        """Token ids of one item, AUDIO_ID where audio goes; returns (ids, target length)."""
        tok = self.tokenizer
        before, after = self.prompt_halves(question)
        ids = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids += self._encode(before) + [AUDIO_ID] * num_audio + self._encode(after)
        target = self._encode(answer + self.config.end_sym)[: self.config.max_txt_len] if answer is not None else []
        return ids + target, len(target)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    def build_batch(
        self,
        features: list[torch.Tensor],
        questions: list[str | None],
        answers: list[str] | None = None,
        padding_side: str = "right",
    ) -> Batch:
        """Tokenize, pad (right for training, left for generation) and splice audio in."""
        time_dim = 0 if self.config.layer_combine == "mean" else 1
        rows = [
            self.token_row(f.shape[time_dim], q, a)
            for f, q, a in zip(features, questions, answers or [None] * len(features), strict=True)
        ]
        width = max(len(ids) for ids, _ in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, n_target) in enumerate(rows):
            start = 0 if padding_side == "right" else width - len(row)
            ids[i, start : start + len(row)] = torch.tensor(row)
            mask[i, start : start + len(row)] = 1
            if n_target:
                labels[i, start + len(row) - n_target : start + len(row)] = torch.tensor(row[-n_target:])
        return Batch(self.splice(ids, self.embed_audio(features)), mask, labels if answers is not None else None)

    def splice(self, ids: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Embed text ids and put the audio embeddings where AUDIO_ID stands: [B, S] -> [B, S, H]."""
        embed = self.llm.get_input_embeddings()
        is_audio = (ids == AUDIO_ID).to(embed.weight.device)
        text = embed(ids.to(embed.weight.device).masked_fill(is_audio, 0))  # [B, S, H]
        return text.masked_scatter(is_audio.unsqueeze(-1), audio.to(text.dtype))

    # --- training and inference ---
    def forward(self, features: list[torch.Tensor], questions: list[str | None], answers: list[str]) -> torch.Tensor:
        """Mean cross-entropy over all target tokens of the batch (token-weighted, as official)."""
        batch = self.build_batch(features, questions, answers, padding_side="right")
        device = batch.inputs_embeds.device
        out = self.llm(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask.to(device),
            labels=batch.labels.to(device),
        )
        return out.loss

    @torch.no_grad()
    def generate(
        self,
        features: list[torch.Tensor],
        questions: list[str | None],
        settings: GenerationSettings | None = None,
        compile: bool = False,
    ) -> list[str]:
        """Answer each (features, question); generation stops per item at end_sym.

        Our decoding loop (decoding.Decoder: CUDA graphs on CUDA, `compile` compiles its step)
        serves greedy and sampling; beam search and repetition penalties go through transformers'
        `generate`.
        """
        settings = settings or GenerationSettings.from_preset("greedy")
        batch = self.build_batch(features, questions, padding_side="left")
        mask = batch.attention_mask.to(batch.inputs_embeds.device)
        if settings.json_schema is not None:  # constrained: no stop string (it may sit inside a JSON string)
            if settings.needs_transformers:
                raise ConfigError(
                    "--json-schema works with greedy or sampling decoding, not beam search or repetition penalties"
                )
            constraint = self._json_grammar(settings.json_schema).start(len(features))
            out = self._decoder(compile).generate(
                batch.inputs_embeds, mask, settings, self._eos_ids(), self.tokenizer.pad_token_id, None, constraint
            )
            return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        if settings.needs_transformers:
            out = self._transformers_generate(batch.inputs_embeds, mask, settings)
        else:
            stop = DecodedStop(self.tokenizer, self.config.end_sym).holds if self.config.end_sym else None
            out = self._decoder(compile).generate(
                batch.inputs_embeds, mask, settings, self._eos_ids(), self.tokenizer.pad_token_id, stop
            )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [postprocess(t, self.config.end_sym) for t in texts]

    def _decoder(self, compile: bool):
        """The decoding loop for this LLM: CUDA graphs on CUDA; `compile` compiles the step."""
        from musilingo_cli.model.decoding import Decoder

        decoders = self.__dict__.setdefault("_decoders", {})  # kept off nn.Module's registries
        if compile and getattr(self.llm, "is_quantized", False):  # bitsandbytes kernels do not compile
            if not self.__dict__.get("_quantized_note"):  # one note per model
                self.__dict__["_quantized_note"] = True
                warn("--compile does not apply to a quantized LLM: decoding with the eager step (a CUDA graph on CUDA)")
            compile = False
        if compile not in decoders:
            on_cuda = next(self.llm.parameters()).device.type == "cuda"
            mode = ("compiled" if compile else "eager") if not on_cuda else ("compiled-graph" if compile else "graph")
            decoders[compile] = Decoder(self.llm, mode)
        return decoders[compile]

    def _json_grammar(self, schema_text: str):
        """The schema compiled for this tokenizer, once per schema (structured.JsonGrammar)."""
        grammars = self.__dict__.setdefault("_grammars", {})  # kept off nn.Module's registries
        if schema_text not in grammars:
            vocab = self.llm.get_output_embeddings().weight.shape[0]
            grammars[schema_text] = JsonGrammar(self.tokenizer, vocab, self._eos_ids(), schema_text)
        return grammars[schema_text]

    def _eos_ids(self) -> list[int]:
        """The ids that end an answer, as transformers' generate reads them (generation config first)."""
        eos = getattr(getattr(self.llm, "generation_config", None), "eos_token_id", None)
        eos = eos if eos is not None else self.llm.config.eos_token_id
        eos = eos if eos is not None else self.tokenizer.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    def _transformers_generate(self, embeds: torch.Tensor, mask: torch.Tensor, settings: GenerationSettings):
        kwargs = {**settings.generate_kwargs(), "disable_compile": True}
        if self.config.end_sym:
            kwargs["stopping_criteria"] = StoppingCriteriaList([self._stop_criterion()])
        return self.llm.generate(
            inputs_embeds=embeds, attention_mask=mask, pad_token_id=self.tokenizer.pad_token_id, **kwargs
        )

    def _stop_criterion(self):
        """Per-row stop at end_sym: transformers' vectorised StopStringCriteria when the tokenizer
        can spell end_sym, else a decoding check (e.g. '\n' in a vocabulary without it)."""
        if getattr(self, "_stop", None) is None:
            from transformers import StopStringCriteria

            try:
                self._stop = StopStringCriteria(self.tokenizer, [self.config.end_sym])
            except ValueError:
                self._stop = DecodedStop(self.tokenizer, self.config.end_sym)
        return self._stop

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Only the trained tensors (what a checkpoint holds)."""
        return {k: v.detach().cpu() for k, v in self.adapter.state_dict().items()}
