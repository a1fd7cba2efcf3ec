"""The rows of `serve`'s live batch (model.live_batch.Engine): their KV cache, mask, positions and logits.

The cache is a transformers DynamicCache whose rows are left-padded to a common width: a joining
group is padded on the left to the batch's width (or the batch to the group's), and columns no
row needs any more are cut off the left when rows leave. Its layers are ColumnLayers: keys and
values live in buffers with room for more columns, so a step writes one column in place instead
of copying every row's cache (transformers' DynamicLayer concatenates at every step); only a
join or a leave copies. Position ids are per row, so padding never shifts a row's positions, and
padded columns are masked: a row decodes the same tokens whether it runs alone or beside others
(up to float rounding in the padded matmuls).
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def embed_rows(model, rows: list[tuple[list[int], list[torch.Tensor]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded LLM inputs for token rows with AUDIO_ID placeholders: ([B, S, H], mask [B, S]).

    The audio embeddings go in row-major order, as MusiLingo.build_batch puts them."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), model.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, _) in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    features = [f for _, feats in rows for f in feats]
    if features:
        return model.splice(ids, model.embed_audio(features)), mask
    embed = model.llm.get_input_embeddings()
    return embed(ids.to(embed.weight.device)), mask


class ColumnLayer(DynamicLayer):
    """One layer's keys and values [B, H, n, D]: views of buffers with spare columns on the right.

    `update` (called by the attention at each forward) writes the new columns in place; when the
    room runs out the buffers are reallocated with twice the columns in use (amortised O(1) per
    step). Rows are chosen with `batch_select_indices` and columns cut off the left with `cut`.
    A transformers DynamicLayer for its cache and masks; only what LiveBatch calls is overridden.
    """

    is_croppable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int = 64):
        super().__init__()
        self.is_initialized = True
        self.device, self.dtype = keys.device, keys.dtype
        self._fill(keys, values, room)

    def _fill(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        """New buffers holding `keys`/`values` [B, H, n, D] at the left, `room` spare columns."""
        n = keys.shape[-2]
        k = keys.new_empty((*keys.shape[:-2], n + room, keys.shape[-1]))
        v = values.new_empty((*values.shape[:-2], n + room, values.shape[-1]))
        k[..., :n, :], v[..., :n, :] = keys, values
        self._k, self._v, self.start, self.end = k, v, 0, n
        self._views()

    def _views(self) -> None:
        self.keys = self._k[..., self.start : self.end, :]
        self.values = self._v[..., self.start : self.end, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        if self.end + n > self._k.shape[-2]:
            self._fill(self.keys, self.values, room=self.end - self.start + n)
        self._k[..., self.end : self.end + n, :] = key_states
        self._v[..., self.end : self.end + n, :] = value_states
        self.end += n
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.end - self.start

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._views()

    def cut(self, first: int) -> None:
        """Drop the `first` leftmost columns (no copy)."""
        self.start += first
        self._views()


class LiveBatch:
    """The rows being decoded: a DynamicCache, its mask [B, W], next positions [B], logits [B, V]."""

    def __init__(self, llm: torch.nn.Module):
        self.llm = llm
        self._cache_arg = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
        self.cache = self.mask = self.positions = self.logits = None

    @property
    def size(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @torch.no_grad()
    def join(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Prefill left-padded prompts [n, S, H] and append them as the last n rows."""
        device = inputs_embeds.device
        mask = attention_mask.to(device)
        cache = DynamicCache()
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: cache},
        )
        logits, next_pos = out.logits[:, -1].float(), mask.sum(dim=1)
        if self.mask is None:
            cache.layers = [ColumnLayer(layer.keys, layer.values) for layer in cache.layers]
            self.cache, self.mask, self.positions, self.logits = cache, mask, next_pos, logits
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.cache.layers = [
            ColumnLayer(
                torch.cat([_left_pad(a.keys, width), _left_pad(b.keys, width)]),
                torch.cat([_left_pad(a.values, width), _left_pad(b.values, width)]),
            )
            for a, b in zip(self.cache.layers, cache.layers)
        ]
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self.positions = torch.cat([self.positions, next_pos])
        self.logits = torch.cat([self.logits, logits])

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> None:
        """Feed one token per row [B]; `logits` become the next step's."""
        device = self.mask.device
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        out = self.llm(
            input_ids=tokens.to(device)[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            use_cache=True,
            **{self._cache_arg: self.cache},
        )
        self.logits = out.logits[:, -1].float()
        self.positions = self.positions + 1

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in this order); columns no kept row attends to are cut off the left."""
        if not rows:
            self.cache = self.mask = self.positions = self.logits = None
            return
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]
        first = int(self.mask.any(dim=0).long().argmax())
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.cut(first)


def _left_pad(x: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """Zeros on the left of `dim` up to `width`."""
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)
