"""CUDA-graph decoding, `ask`'s default path on CUDA, gives eager decoding's tokens (issue 11, kind 6).

The `gpu` tests run only where CUDA is (benchmarks/gpu_suite.sh runs them on a lent GPU); the first
test runs everywhere: without transformers' device-side cache counter the graph modes fall back to
the eager (or compiled) step with one warning.
"""

from __future__ import annotations

import threading

import pytest
import torch
from audio_helpers import write_music
from model_helpers import build_model

from musilingo_cli.model import decoding
from musilingo_cli.model.decoding import CAPTURE_LOCK, Decoder
from musilingo_cli.model.generation import GenerationSettings

GREEDY = GenerationSettings.from_preset("greedy", max_new_tokens=40)
QUESTIONS = ["What genre is this?", "Describe the audio in detail.", "Tempo?"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_graph_modes_fall_back_with_one_warning_when_the_cache_counter_is_missing(tmp_path, monkeypatch, capsys):
    from transformers.cache_utils import StaticLayer

    model = build_model(tmp_path)
    assert decoding.graph_step_supported(model.llm.config)  # the transformers installed here has it
    original = StaticLayer.__init__

    def older_static_layer(self, *args, **kwargs):  # transformers before the device counter
        original(self, *args, **kwargs)
        del self.cumulative_length

    monkeypatch.setattr(StaticLayer, "__init__", older_static_layer)
    monkeypatch.setattr(decoding, "_FALLBACK_WARNED", False)
    assert not decoding.graph_step_supported(model.llm.config)
    assert Decoder(model.llm, "graph").mode == "eager"
    assert Decoder(model.llm, "compiled-graph").mode == "compiled"
    assert Decoder(model.llm, "eager").mode == "eager"
    err = capsys.readouterr().err
    assert err.count("decoding without CUDA graphs") == 1 and "cumulative_length" in err


@pytest.fixture(scope="module")
def cuda_model(tmp_path_factory):
    model = build_model(tmp_path_factory.mktemp("gpu")).to("cuda")
    torch.manual_seed(5)
    features = [model.encode(torch.randn(1, 24000 * s, device="cuda") * 0.1)[0] for s in (10, 25, 4)]
    batch = model.build_batch(features, QUESTIONS, padding_side="left")
    args = (batch.inputs_embeds, batch.attention_mask, GREEDY, model._eos_ids(), model.tokenizer.pad_token_id)
    return model, args


@pytest.mark.gpu
@needs_cuda
def test_graph_and_compiled_graph_give_the_eager_tokens(cuda_model):
    model, args = cuda_model
    eager = Decoder(model.llm, "eager").generate(*args)
    assert len({tuple(row) for row in eager.tolist()}) > 1  # real, different answers
    for mode in ("graph", "compiled-graph"):
        decoder = Decoder(model.llm, mode)
        assert decoder.mode == mode  # no fallback with the transformers we require
        assert torch.equal(decoder.generate(*args), eager), mode
        assert torch.equal(decoder.generate(*args), eager), f"{mode}, replayed with the reused cache"


@pytest.mark.gpu
@needs_cuda
def test_a_capture_while_the_encoder_thread_encodes_gives_the_eager_tokens(cuda_model):
    model, args = cuda_model
    eager = Decoder(model.llm, "eager").generate(*args)
    stop, encoded = threading.Event(), []
    waves = torch.randn(4, 24000 * 5, device="cuda") * 0.1

    def encoder_thread():  # what ask's encoder thread does: its own stream, under the capture lock
        stream = torch.cuda.Stream()
        while not stop.is_set():
            with CAPTURE_LOCK, torch.cuda.stream(stream):
                encoded.append(model.encode(waves).sum().item())

    worker = threading.Thread(target=encoder_thread)
    worker.start()
    try:
        for mode in ("graph", "compiled-graph"):
            for _ in range(3):  # a fresh decoder captures anew each time, while the encoder works
                assert torch.equal(Decoder(model.llm, mode).generate(*args), eager), mode
    finally:
        stop.set()
        worker.join()
    assert len(encoded) > 1


@pytest.mark.gpu
@needs_cuda
def test_ask_on_cuda_answers_as_eager_decoding_does(cuda_model, tmp_path):
    from musilingo_cli.core.journal import read_jsonl
    from musilingo_cli.pipelines.ask import AskConfig, run

    model, _ = cuda_model
    paths = []
    for k in range(12):
        paths.append(str(tmp_path / f"c{k}.wav"))
        write_music(paths[-1], 3 + k % 4, 24000, seed=k)
    answers = {}
    for name, modes in (("graph", None), ("eager", {False: "eager", True: "eager"})):
        model.__dict__.pop("_decoders", None)
        if modes:
            model.__dict__["_decoders"] = {k: Decoder(model.llm, m) for k, m in modes.items()}
        config = AskConfig(
            inputs=paths,
            questions=QUESTIONS[:2],
            preset="greedy",
            max_new_tokens=24,
            device="cuda",
            dtype="fp32",
            batch_size=4,
            compile=False,
            output=tmp_path / f"{name}.jsonl",
        )
        run(config, model=model)  # several windows: captures while the encoder thread encodes the next
        answers[name] = {r["id"]: r["answer"] for r in read_jsonl(tmp_path / f"{name}.jsonl")}
    model.__dict__.pop("_decoders", None)
    assert len(answers["graph"]) == 24 and answers["graph"] == answers["eager"]
