"""The live batch of `serve`'s continuous batching, on a tiny random Llama: rows that join late, leave
early and outgrow the cache's spare columns decode the same greedy tokens as each row alone.
The `gpu` case (strided cache views in CUDA attention) runs where CUDA is (benchmarks/gpu_suite.sh)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from musilingo_cli.model.live_cache import ColumnLayer, LiveBatch

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
    ),
]


@pytest.fixture(scope="module")
def tiny_llm():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(params=DEVICES)
def llm(request, tiny_llm):
    return tiny_llm.to(request.param)


def prompt(llm, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One row's embeddings [1, S, H] and its mask [1, S]."""
    embed = llm.get_input_embeddings()
    return embed(torch.tensor([ids], device=embed.weight.device)), torch.ones(1, len(ids), dtype=torch.long)


@torch.no_grad()
def alone(llm, ids: list[int], steps: int) -> list[int]:
    batch = LiveBatch(llm)
    batch.join(*prompt(llm, ids))
    out = []
    for _ in range(steps):
        out.append(int(batch.logits.argmax(-1)[0]))
        batch.advance(torch.tensor(out[-1:]))
    return out


def test_rows_joining_and_leaving_decode_as_they_would_alone(llm):
    """Three prompts of different lengths: B joins after 5 steps, A leaves after 12, C joins after
    20; all run past the 64 spare columns, so the buffers are reallocated on the way."""
    prompts = {"A": [3, 14, 15, 92, 65], "B": [35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50], "C": [2, 71]}
    limits = {"A": 12, "B": 80, "C": 75}
    joins = {0: "A", 5: "B", 20: "C"}
    expected = {name: alone(llm, ids, limits[name]) for name, ids in prompts.items()}
    batch, rows, got = LiveBatch(llm), [], {name: [] for name in prompts}
    with torch.no_grad():
        for step in range(100):
            if step in joins:
                batch.join(*prompt(llm, prompts[joins[step]]))
                rows.append(joins[step])
            tokens = batch.logits.argmax(-1).tolist()
            for name, token in zip(rows, tokens):
                got[name].append(token)
            keep = [i for i, name in enumerate(rows) if len(got[name]) < limits[name]]
            if len(keep) < len(rows):
                batch.keep(keep)
                rows = [rows[i] for i in keep]
            if not rows:
                break
            batch.advance(torch.tensor([got[name][-1] for name in rows]))
    assert got == expected
    assert batch.size == 0


def test_column_layer_writes_in_place_and_cuts_and_selects_rows():
    keys, values = torch.randn(3, 2, 4, 8), torch.randn(3, 2, 4, 8)
    layer = ColumnLayer(keys, values, room=2)
    buffer = layer._k
    new_k, new_v = torch.randn(3, 2, 1, 8), torch.randn(3, 2, 1, 8)
    k, v = layer.update(new_k, new_v)
    assert layer._k is buffer  # written in place, no copy
    assert torch.equal(k, torch.cat([keys, new_k], dim=-2)) and torch.equal(v, torch.cat([values, new_v], dim=-2))
    more_k, more_v = torch.randn(3, 2, 3, 8), torch.randn(3, 2, 3, 8)
    k, _ = layer.update(more_k, more_v)  # past the spare room: reallocated
    assert layer._k is not buffer and torch.equal(k, torch.cat([keys, new_k, more_k], dim=-2))
    layer.cut(2)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert layer.get_seq_length() == 6
    assert torch.equal(layer.keys, torch.cat([keys, new_k, more_k], dim=-2)[[2, 0], :, 2:])


@pytest.mark.parametrize("kind", ["metaspace", "byte_level"])
def test_text_grows_token_by_token_as_the_whole_decodes(tmp_path, kind):
    """The engine's incremental detokenisation gives, after every token, the text of all the tokens
    decoded whole (once a character split over byte-level tokens is complete), for a SentencePiece-like
    tokenizer (the tests' tiny one) and a byte-level BPE (as SmolLM2's), special tokens skipped."""
    from model_helpers import make_tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from musilingo_cli.model.generation import GenerationSettings
    from musilingo_cli.model.live_batch import Request, extend_text

    text = "Héllo wörld: a jazz trio, 120 bpm; 日本の音楽 🎷!  Double  spaces ### Assistant: end."
    if kind == "metaspace":
        tok = make_tokenizer(tmp_path, extra_alphabet="Héöü:;")
    else:
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        core.train_from_iterator(["a jazz trio with a double bass", "Hello world, music!"], trainer)
        tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")
    ids = [tok.bos_token_id] + tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]
    request = Request([], [], GenerationSettings.from_preset("greedy"), lambda event: None)
    for n, token in enumerate(ids, 1):
        grown = extend_text(request, token, tok.backend_tokenizer)
        whole = tok.decode(ids[:n], skip_special_tokens=True)
        assert grown == whole or (whole.endswith("\ufffd") and whole.startswith(grown))
    assert request.text == tok.decode(ids, skip_special_tokens=True)
    assert kind != "byte_level" or request.text == text  # every character spelt (the tiny one has <unk>)


def test_engine_holds_its_rows_while_requests_are_on_their_way_but_not_for_longer_than_it_may(tmp_path):
    """A row is not stepped while `coming` says a request is on its way (it would cost the encoder the
    cores): it waits for the second request, and both answer as they do alone. With `coming` stuck
    (a request that never arrives), the hold ends after `hold_seconds` and the row is answered."""
    import queue
    import time

    from model_helpers import build_model

    from musilingo_cli.model.generation import GenerationSettings
    from musilingo_cli.model.live_batch import Engine, Request

    model = build_model(tmp_path)
    tok = model.tokenizer
    prompts = [
        [tok.bos_token_id] + tok.encode(q, add_special_tokens=False) for q in ["What genre?", "Which tempo is it"]
    ]
    settings = GenerationSettings.from_preset("greedy", max_new_tokens=8)

    def answer(engine: Engine, ids: list[int]) -> tuple[Request, queue.Queue]:
        events: queue.Queue = queue.Queue()
        request = Request(ids, [], settings, events.put)
        engine.submit(request)
        return request, events

    def final(events: queue.Queue) -> str:
        while not (event := events.get(timeout=60)).done:
            pass
        return event.text

    alone = Engine(model, max_batch=4)
    try:
        expected = [final(answer(alone, ids)[1]) for ids in prompts]
    finally:
        alone.close()
    coming = [1]
    engine = Engine(model, max_batch=4, coming=lambda: coming[0], hold_seconds=600)
    try:
        first, first_events = answer(engine, prompts[0])
        time.sleep(0.5)  # unheld, the row would have taken all its 8 steps many times over by now
        assert first.tokens == [] and first_events.empty()
        coming[0] = 0
        _, second_events = answer(engine, prompts[1])
        assert [final(first_events), final(second_events)] == expected
    finally:
        engine.close()
    stuck = Engine(model, max_batch=4, coming=lambda: 1, hold_seconds=0.05)
    try:
        assert final(answer(stuck, prompts[0])[1]) == expected[0]
    finally:
        stuck.close()
