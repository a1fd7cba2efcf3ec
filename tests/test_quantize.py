"""--quantize 8bit | 4bit through bitsandbytes, which runs on CPU (>= 0.46): a tiny real LLM is
loaded with bitsandbytes' Linear8bitLt / Linear4bit (NF4) layers, answers through our decoding
loop and `ask` (the record names the quantization), trains QLoRA (4bit + --lora) with DeepSpeed,
and a bad value or an official release says what to pass instead."""

from __future__ import annotations

import json

import pytest
import torch
from model_helpers import build_model
from train_helpers import dist_env, make_parts, train_config, write_clips, write_qa_jsonl  # noqa: F401

from musilingo_cli.core.errors import ConfigError
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.model.checkpoint import save_checkpoint
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.model.loader import load_model

bnb = pytest.importorskip("bitsandbytes")
GREEDY = GenerationSettings.from_preset("greedy", max_new_tokens=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    model = build_model(root)
    save_checkpoint(root / "ckpt", model.config, model.trainable_state())
    return {"root": root, "ckpt": str(root / "ckpt"), "model": model}


@pytest.mark.parametrize("kind,layer", [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantized_llm_answers_through_our_loop(tiny, kind, layer):
    model = load_model(tiny["ckpt"], quantize=kind)
    q_proj = model.llm.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == layer
    assert model.encoder.model.dtype == torch.float32  # the encoder is not quantized
    assert model.llm.get_memory_footprint() < tiny["model"].llm.get_memory_footprint()
    torch.manual_seed(3)
    feats = [model.encode(torch.randn(1, 24000 * 3) * 0.1)[0], model.encode(torch.randn(1, 24000) * 0.1)[0]]
    answers = model.generate(feats, ["What genre is this?", "Tempo?"], GREEDY)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    # the same logits as the fp32 model up to quantization error (random tiny weights: a loose bound)
    batch = model.build_batch(feats, ["What genre is this?", "Tempo?"], padding_side="left")
    with torch.no_grad():
        q = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
        full = tiny["model"].llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
    assert torch.corrcoef(torch.stack([q.flatten(), full.flatten()]))[0, 1] > 0.9
    assert not torch.equal(q, full)


def test_ask_records_the_quantization(tiny, tmp_path):
    from audio_helpers import write_music

    from musilingo_cli.pipelines.ask import AskConfig, run

    write_music(tmp_path / "song.wav", 2, 24000, seed=1)
    run(
        AskConfig(
            inputs=[str(tmp_path / "song.wav")],
            questions=["What genre?"],
            model=tiny["ckpt"],
            preset="greedy",
            max_new_tokens=6,
            device="cpu",
            quantize="4bit",
            output=tmp_path / "a.jsonl",
        )
    )
    (record,) = read_jsonl(tmp_path / "a.jsonl")
    assert record["error"] is None and record["model"].endswith("quantize=4bit")


def test_bad_values_say_what_to_pass(tiny):
    with pytest.raises(ConfigError, match="use 8bit or 4bit"):
        load_model(tiny["ckpt"], quantize="3bit")
    from musilingo_cli.model.loader import load_llm_part

    with pytest.raises(ConfigError, match="official release"):
        load_llm_part("m-a-p/MusiLingo-short-v1", "cpu", torch.float32, "4bit")


def test_qlora_trains_on_a_4bit_llm_and_the_checkpoint_loads(tmp_path, dist_env):
    from musilingo_cli.pipelines.train import run

    llm, mert = make_parts(tmp_path)
    names = write_clips(tmp_path / "audio", 4)
    data = write_qa_jsonl(tmp_path / "qa.jsonl", names)
    config = train_config(
        tmp_path,
        llm,
        mert,
        data,
        tmp_path / "audio",
        max_steps=8,
        micro_batch=4,
        grad_accum=1,
        lr=1e-2,
        min_lr=1e-2,
        warmup_steps=0,
        save_every=8,
        lora=True,
        lora_rank=8,
        lora_dropout=0.0,
        quantize="4bit",
    )
    run(config)
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert losses[-1] < 0.5 * losses[0], losses
    final = tmp_path / "run" / "final"
    assert json.loads((final / "musilingo.json").read_text())["lora"] == "lora"
    assert "quantize: 4bit" in (final / "train_config.yaml").read_text()  # recorded with the checkpoint
    for kind in ("4bit", None):  # LoRA weights trained on the NF4 LLM load on it and on the full one
        model = load_model(str(final), quantize=kind)
        torch.manual_seed(3)
        answer = model.generate([model.encode(torch.randn(1, 24000) * 0.1)[0]], ["What genre?"], GREEDY)
        assert isinstance(answer[0], str)
