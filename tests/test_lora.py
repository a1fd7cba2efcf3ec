"""`train --lora` on CPU with tiny real models, real peft and real DeepSpeed (ZeRO-2): LoRA on the
LLM learns more than the adapter alone in the same steps, its checkpoint (PEFT format under
lora/) reloads and answers identically, `--resume` gives the same losses, `export --merge`."""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import dist_env, make_parts, train_config, write_clips, write_qa_jsonl  # noqa: F401

from musilingo_cli.core.errors import ConfigError
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.model.lora import LoraSettings, apply_lora
from musilingo_cli.pipelines.train import run

GREEDY = GenerationSettings.from_preset("greedy", max_new_tokens=6)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    llm, mert = make_parts(root)
    names = write_clips(root / "audio", 4)
    qa = write_qa_jsonl(root / "qa.jsonl", names)
    return {"root": root, "llm": llm, "mert": mert, "audio": root / "audio", "qa": qa}


def _config(setup, name: str, **overrides):
    values = dict(
        max_steps=12,
        micro_batch=4,
        grad_accum=1,
        lr=1e-2,
        min_lr=1e-2,
        warmup_steps=0,
        save_every=6,
        cache_dir=str(setup["root"] / "cache"),
        lora_rank=8,
        lora_alpha=16.0,
        lora_dropout=0.0,
    )
    values.update(overrides)
    return train_config(setup["root"] / name, setup["llm"], setup["mert"], setup["qa"], setup["audio"], **values)


def _losses(setup, name: str) -> list[float]:
    return [r["loss"] for r in read_jsonl(setup["root"] / name / "run" / "metrics.jsonl")]


def _features(model, setup):
    from musilingo_cli.model.audio import load_audio

    return [
        model.encode(torch.from_numpy(load_audio(setup["audio"] / f"clip{i}.wav", 24000))[None])[0] for i in range(4)
    ]


QUESTIONS = ["What genre is this?", "Describe the audio.", "What is the tempo?", "What instruments are playing?"]


@pytest.fixture(scope="module")
def trained(setup):
    import os

    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        run(_config(setup, "adapter-only"))
        run(_config(setup, "lora", lora=True))
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return setup["root"] / "lora" / "run" / "final"


def test_lora_learns_more_than_the_adapter_alone(setup, trained):
    adapter_only, lora = _losses(setup, "adapter-only"), _losses(setup, "lora")
    assert len(adapter_only) == len(lora) == 12
    assert lora[0] == pytest.approx(adapter_only[0], rel=1e-5)  # B starts at zero: the same first step
    assert lora[-1] < 0.7 * adapter_only[-1], (lora, adapter_only)


def test_the_checkpoint_holds_peft_weights_and_reloads_identically(setup, trained):
    body = json.loads((trained / "musilingo.json").read_text())
    assert body["lora"] == "lora"
    assert (trained / "adapter.safetensors").is_file()
    peft_config = json.loads((trained / "lora" / "adapter_config.json").read_text())
    assert peft_config["r"] == 8 and peft_config["lora_alpha"] == 16.0
    assert set(peft_config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    from safetensors.torch import load_file

    lora_weights = load_file(trained / "lora" / "adapter_model.safetensors")
    assert all(t.dtype == torch.float32 for t in lora_weights.values())
    assert any("lora_B" in k and t.abs().max() > 0 for k, t in lora_weights.items())  # it trained

    from peft import PeftModel

    from musilingo_cli.model.checkpoint import read_checkpoint
    from musilingo_cli.model.llm import load_llm
    from musilingo_cli.model.loader import assemble, load_model

    merged = load_model(str(trained))  # the loader merges the LoRA the checkpoint names
    feats = _features(merged, setup)
    answers = merged.generate(feats, QUESTIONS, GREEDY)
    # the same weights through PEFT, unmerged (what training ran): the same logits and answers
    config, state = read_checkpoint(trained)
    unmerged_llm = PeftModel.from_pretrained(load_llm(config.llm), str(trained / "lora")).eval()
    import dataclasses

    unmerged = assemble(
        dataclasses.replace(config, lora=None), state, llm_model=unmerged_llm, tokenizer=merged.tokenizer
    )
    batch = merged.build_batch(feats, QUESTIONS, padding_side="left")
    with torch.no_grad():
        a = merged.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
        b = unmerged.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert unmerged.generate(feats, QUESTIONS, GREEDY) == answers
    # without the LoRA the same adapter answers differently: the LoRA weights are really applied
    plain = assemble(dataclasses.replace(config, lora=None), state)
    with torch.no_grad():
        c = plain.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
    assert not torch.allclose(a, c, atol=1e-3)


def test_export_merge_writes_a_plain_model_that_answers_the_same(setup, trained, tmp_path):
    from typer.testing import CliRunner

    from musilingo_cli.cli import app
    from musilingo_cli.model.loader import load_model

    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", str(trained), "--out", str(out), "--merge"])
    assert result.exit_code == 0, result.output
    body = json.loads((out / "musilingo.json").read_text())
    assert body["lora"] is None and body["llm"] == "llm" and (out / "llm" / "config.json").is_file()
    assert not (out / "llm" / "adapter_config.json").exists()  # a plain causal LM
    original, exported = load_model(str(trained)), load_model(str(out))
    feats = _features(original, setup)
    assert exported.generate(feats, QUESTIONS, GREEDY) == original.generate(feats, QUESTIONS, GREEDY)
    from musilingo_cli.pipelines.export import merge_export

    with pytest.raises(ConfigError, match="already holds a model"):  # never overwritten
        merge_export(str(trained), out)
    with pytest.raises(ConfigError, match="no LoRA weights"):  # a merged checkpoint has nothing left to merge
        merge_export(str(out), tmp_path / "again")


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(setup, dist_env):
    straight = _config(setup, "straight", lora=True, max_steps=4, save_every=2, lora_dropout=0.1)
    run(straight)
    run(_config(setup, "parted", lora=True, max_steps=2, save_every=2, lora_dropout=0.1))
    run(_config(setup, "parted", lora=True, max_steps=4, save_every=2, lora_dropout=0.1, resume=True))
    assert _losses(setup, "parted") == pytest.approx(_losses(setup, "straight"), abs=1e-6)
    from safetensors.torch import load_file

    a = load_file(setup["root"] / "straight" / "run" / "final" / "lora" / "adapter_model.safetensors")
    b = load_file(setup["root"] / "parted" / "run" / "final" / "lora" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_bad_lora_settings_and_lora_init_say_what_to_do(setup, dist_env, trained):
    with pytest.raises(ConfigError, match="not found in the LLM"):
        from musilingo_cli.model.llm import load_llm

        apply_lora(load_llm(str(setup["llm"])), LoraSettings(target_modules=("query_key_value",)))
    with pytest.raises(ConfigError, match="--lora-rank"):
        LoraSettings(rank=0)
    with pytest.raises(ConfigError, match="export --merge"):
        run(_config(setup, "from-lora", init=str(trained)))


def test_the_start_line_counts_the_lora_weights_beside_the_adapter():
    from torch import nn

    from musilingo_cli.pipelines.train.loop import _what_trains

    module = nn.Module()
    module.adapter = nn.Linear(4, 2)
    assert _what_trains(module) == "10 adapter parameters"
    module.lora = nn.ModuleList([nn.Linear(3, 1)])
    assert _what_trains(module) == "10 adapter parameters and 4 LoRA parameters"
