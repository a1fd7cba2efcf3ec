"""`musilingo train` on CPU with tiny real models and real DeepSpeed (gloo): the loss falls,
labels, ZeRO-2 and ZeRO-3, the cache, presets, schedule, data order. Multi-process tests
(kill-and-resume, two ranks) are in test_train_dist.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_helpers import dist_env, make_parts, train_config, write_clips, write_qa_jsonl, yaml_config  # noqa: F401

from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.core.journal import read_jsonl
from musilingo_cli.pipelines.train import TrainConfig, resolve_config, run
from musilingo_cli.pipelines.train.config import PRESETS
from musilingo_cli.pipelines.train.data_source import DataOrder
from musilingo_cli.pipelines.train.engine import deepspeed_config, param_groups
from musilingo_cli.pipelines.train.schedule import warmup_cosine_lr

WORDS = ["rock", "piano", "guitar", "bass"]  # one token each in the tiny tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    llm, mert = make_parts(root)
    names = write_clips(root / "audio", 8)
    qa = write_qa_jsonl(root / "qa.jsonl", names)
    words = root / "words.jsonl"
    words.write_text("".join(json.dumps({"audio": names[i], "answer": w}) + "\n" for i, w in enumerate(WORDS)))
    return {"root": root, "llm": llm, "mert": mert, "audio": root / "audio", "qa": qa, "words": words}


# --- pure parts -------------------------------------------------------------------------------------


def test_schedule_warmup_then_cosine_without_a_jump():
    kw = dict(init_lr=1e-4, min_lr=8e-5, warmup_lr=1e-6, warmup_steps=100, total_steps=1000)
    assert warmup_cosine_lr(0, **kw) == pytest.approx(1e-6)
    assert warmup_cosine_lr(50, **kw) == pytest.approx(1e-6 + (1e-4 - 1e-6) / 2)
    assert warmup_cosine_lr(99, **kw) < warmup_cosine_lr(100, **kw) == pytest.approx(1e-4)
    assert warmup_cosine_lr(550, **kw) == pytest.approx(9e-5)
    assert warmup_cosine_lr(1000, **kw) == pytest.approx(8e-5) == warmup_cosine_lr(5000, **kw)
    rates = [warmup_cosine_lr(s, **kw) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_presets_are_the_official_recipes():
    pre, fine = PRESETS["pretrain"], PRESETS["finetune"]
    assert (pre["lr"], pre["min_lr"], pre["warmup_lr"], pre["warmup_steps"], pre["micro_batch"], pre["grad_accum"]) == \
        (1e-4, 8e-5, 1e-6, 5000, 8, 1)
    assert (fine["lr"], fine["min_lr"], fine["micro_batch"], fine["grad_accum"]) == (3e-5, 1e-5, 2, 16)
    # official schedules counted micro-batches: 3000 warm-up and 6 x 3000 iterations at accumulation 16
    assert (fine["warmup_steps"], fine["max_steps"]) == (math.ceil(3000 / 16), 18000 // 16 + 0)
    assert TrainConfig().weight_decay == 0.05 and TrainConfig().betas == (0.9, 0.999)


def test_config_precedence_preset_file_flags(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("stage: pretrain\nlr: 0.5\nmax_steps: 7\ndata: one.json\n")
    config = resolve_config({"max_steps": 3, "lr": None}, str(path))
    assert (config.stage, config.preset, config.lr, config.max_steps, config.data) == ("pretrain", "pretrain", 0.5, 3, ["one.json"])
    assert config.warmup_steps == PRESETS["pretrain"]["warmup_steps"]
    again = resolve_config({}, str(yaml_config(tmp_path / "saved.yaml", config)))
    assert again == config
    path.write_text("learning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown training option.*learning_rate"):
        resolve_config({}, str(path))
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config({"preset": "nope"})


def test_deepspeed_config_batch_and_precision(tmp_path):
    config = resolve_config({"micro_batch": 3, "grad_accum": 4, "precision": "fp16", "zero_stage": 3})
    ds = deepspeed_config(config, world=2)
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"], ds["zero_optimization"]["stage"]) == (24, 4, 3)
    assert ds["fp16"]["enabled"] and not ds["bf16"]["enabled"]
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 1, "overlap_comm": True}}))
    ds = deepspeed_config(resolve_config({"deepspeed_config": str(own)}), world=1)
    assert ds["zero_optimization"] == {"stage": 1, "overlap_comm": True} and ds["bf16"]["enabled"]
    own.write_text(json.dumps({"train_batch_size": 8}))
    with pytest.raises(ConfigError, match="remove 'train_batch_size'"):
        deepspeed_config(resolve_config({"deepspeed_config": str(own)}), world=1)


def test_data_order_shards_are_disjoint_deterministic_and_resumable():
    def epoch(order):
        return [order.next()[1] for _ in range(order.per_epoch)]

    ranks = [DataOrder(11, 2, r, 2, seed=3) for r in range(2)]
    e0 = [epoch(o) for o in ranks]
    flat = [i for shard in e0 for batch in shard for i in batch]
    assert len(flat) == len(set(flat)) == 8  # 11 trimmed to a multiple of 2 x 2
    assert [epoch(o) for o in ranks] != e0  # a new permutation each epoch
    order, twin = DataOrder(11, 2, 0, 2, seed=3), DataOrder(11, 2, 0, 2, seed=3)
    seen = [order.next() for _ in range(3)]
    twin.epoch, twin.index = order.epoch, order.index
    assert [order.next() for _ in range(4)] == [twin.next() for _ in range(4)]
    assert seen[0] == (0, e0[0][0])
    with pytest.raises(DataError, match="fewer than micro_batch"):
        DataOrder(3, 2, 0, 2, seed=0)


def test_labels_are_ignore_outside_the_target(setup):
    from musilingo_cli.model.loader import assemble
    from musilingo_cli.model.musilingo import IGNORE

    config = resolve_config({"encoder": str(setup["mert"]), "llm": str(setup["llm"])})
    from musilingo_cli.pipelines.train.engine import model_config_for

    model = assemble(model_config_for(config)[0], None, with_encoder=False)
    feats = [torch.randn(3, 32), torch.randn(5, 32)]
    answers = ["It is rock.", "A calm piano piece with soft strings."]
    batch = model.build_batch(feats, ["What genre?", "Describe it."], answers)
    for row, answer in zip(batch.labels, answers):
        target = model.tokenizer(answer + "###", add_special_tokens=False).input_ids
        kept = row[row != IGNORE].tolist()
        assert kept == target
        positions = (row != IGNORE).nonzero().flatten().tolist()
        assert positions == list(range(positions[0], positions[0] + len(target)))  # one contiguous span


def test_weight_decay_only_on_weight_matrices(setup):
    from musilingo_cli.model.loader import assemble
    from musilingo_cli.pipelines.train.engine import _trainable_module, model_config_for

    config = resolve_config({"encoder": str(setup["mert"]), "llm": str(setup["llm"]), "layer_combine": "learned"})
    model = assemble(model_config_for(config)[0], None, with_encoder=False)
    module = _trainable_module(model)
    decay, rest = param_groups(module, 0.05)
    assert [p.shape for p in decay["params"]] == [model.adapter.proj.weight.shape] and decay["weight_decay"] == 0.05
    assert {p.shape for p in rest["params"]} == {model.adapter.proj.bias.shape, model.adapter.layer_weights.shape}
    assert rest["weight_decay"] == 0.0
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in model.adapter.parameters())


# --- real runs ----------------------------------------------------------------------------------------


def test_zero2_loss_falls_and_the_checkpoint_answers(setup, dist_env):
    tmp = setup["root"] / "zero2"
    config = train_config(tmp, setup["llm"], setup["mert"], setup["words"], setup["audio"], stage="pretrain",
                          max_steps=60, micro_batch=4, grad_accum=1, lr=3e-2, min_lr=3e-2, warmup_steps=0,
                          save_every=25, cache_dir=str(setup["root"] / "cache"))
    result = run(config)
    losses = [r["loss"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")]
    assert [r["step"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")] == list(range(1, 61))
    assert losses[-1] <= 0.2 * losses[0], losses  # one fixed batch of 4: the adapter learns through the frozen LLM
    assert result.steps == 60 and result.encoded == 4 and result.final == tmp / "run" / "final"
    run_dir = tmp / "run"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_25", "step_50", "step_60"]
    assert (run_dir / "loss.png").stat().st_size > 1000
    saved = resolve_config({}, str(run_dir / "final" / "train_config.yaml"))
    assert saved == config
    assert sorted(p.name for p in (run_dir / "deepspeed").glob("step_*")) == ["step_50", "step_60"]  # keep_deepspeed=2

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    ds_state = get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "deepspeed"))
    assert sorted(ds_state) == ["adapter.proj.bias", "adapter.proj.weight"]  # nothing frozen was saved
    ours = load_file(run_dir / "final" / "adapter.safetensors")
    torch.testing.assert_close(ours["proj.weight"], ds_state["adapter.proj.weight"].float())

    from musilingo_cli.model.audio import load_audio
    from musilingo_cli.model.loader import load_model

    model = load_model(str(run_dir / "final"))
    assert model.config.stage == "pretrain" and model.config.end_sym == "\n"
    feats = model.encode(torch.from_numpy(load_audio(setup["audio"] / "clip1.wav", 24000))[None])
    answer = model.generate([feats[0]], [None], GenerationSettings.from_preset("greedy", max_new_tokens=4))[0]
    assert answer.split()[0] == WORDS[1]  # the trained adapter makes the frozen LLM name this clip's word


def test_zero3_from_a_warm_cache(setup, dist_env):
    tmp = setup["root"] / "zero3"
    config = train_config(tmp, setup["llm"], setup["mert"], setup["words"], setup["audio"], stage="pretrain",
                          zero_stage=3, max_steps=4, micro_batch=2, grad_accum=2, save_every=2,
                          cache_dir=str(setup["root"] / "cache"))
    result = run(config)
    assert (result.encoded, result.cache_hits) == (0, 4)  # the encoder was never loaded
    assert [r["step"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")] == [1, 2, 3, 4]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    ds_state = get_fp32_state_dict_from_zero_checkpoint(str(tmp / "run" / "deepspeed"))
    ours = load_file(tmp / "run" / "final" / "adapter.safetensors")
    assert ours["proj.weight"].shape == (64, 32)
    torch.testing.assert_close(ours["proj.weight"], ds_state["adapter.proj.weight"].float())


def test_encoder_in_the_loop_with_learned_layers_and_random_crops(setup, dist_env):
    tmp = setup["root"] / "nocache"
    audio = tmp / "audio"
    names = write_clips(audio, 4, seconds=2.0, sr=16000)
    data = tmp / "musicqa.json"
    data.write_text(json.dumps([{"audio_name": n, "conversation": [{"from": "human", "value": "Genre?"},
                                                                   {"from": "gpt", "value": "Rock."}]} for n in names]))
    config = train_config(tmp, setup["llm"], setup["mert"], data, audio, cache=False, layer_combine="learned",
                          max_steps=2, save_every=2)
    assert run(config).encoded == 0
    from safetensors.torch import load_file

    state = load_file(tmp / "run" / "final" / "adapter.safetensors")
    assert state["layer_weights"].shape == (3,) and not torch.equal(state["layer_weights"], torch.zeros(3))
    assert not (tmp / "run" / "features").exists()


def test_missing_audio_stops_before_training(setup, dist_env, tmp_path):
    config = train_config(tmp_path, setup["llm"], setup["mert"], setup["qa"], tmp_path)
    with pytest.raises(DataError, match="8 of 8 items .* missing audio"):
        run(config)


def test_an_existing_run_needs_resume(setup, dist_env):
    config = train_config(setup["root"] / "zero3", setup["llm"], setup["mert"], setup["words"], setup["audio"])
    with pytest.raises(ConfigError, match="--resume"):
        run(config)


def test_compiled_llm_gives_the_same_losses(setup, dist_env):
    """--compile changes speed, not numbers (CPU inductor; fp32)."""
    losses = {}
    for compiled in (False, True):
        tmp = setup["root"] / f"compile{compiled}"
        config = train_config(tmp, setup["llm"], setup["mert"], setup["qa"], setup["audio"], max_steps=2,
                              save_every=2, compile=compiled, cache_dir=str(setup["root"] / "cache"))
        run(config)
        losses[compiled] = [r["loss"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_bf16_run_matches_fp32_and_saves_an_fp32_adapter(setup, dist_env):
    """bf16 precision (DeepSpeed bf16 on CPU) computes the same losses as fp32 up to bf16 rounding,
    and the saved adapter stays fp32."""
    losses = {}
    for precision in ("fp32", "bf16"):
        tmp = setup["root"] / f"precision-{precision}"
        run(train_config(tmp, setup["llm"], setup["mert"], setup["qa"], setup["audio"], precision=precision,
                         max_steps=3, save_every=3, cache_dir=str(setup["root"] / "cache")))
        losses[precision] = [r["loss"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    assert losses["bf16"] != losses["fp32"]  # it really ran in bf16
    from safetensors.torch import load_file

    saved = load_file(setup["root"] / "precision-bf16" / "run" / "final" / "adapter.safetensors")
    assert saved["proj.weight"].dtype == torch.float32
