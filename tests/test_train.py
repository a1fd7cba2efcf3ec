"""`musilingo train` on CPU with tiny real models and real DeepSpeed (gloo): the loss falls,
labels, ZeRO-2 and ZeRO-3, the cache, presets, schedule, data order. Multi-process tests
(kill-and-resume, two ranks) are in test_train_dist.py."""

from __future__ import annotations

import json
import math
import os
import random
import sys

import numpy as np
import pytest
import torch
from train_helpers import dist_env, make_parts, train_config, write_clips, write_qa_jsonl, yaml_config  # noqa: F401

from musilingo_cli.core.errors import CheckpointError, ConfigError, DataError
from musilingo_cli.core.journal import atomic_path, atomic_write_text, read_jsonl
from musilingo_cli.model.generation import GenerationSettings
from musilingo_cli.pipelines.train import TrainConfig, resolve_config, run
from musilingo_cli.pipelines.train.checkpoints import _rng_state, _set_rng_state, safe_load
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
    assert (pre["lr"], pre["min_lr"], pre["warmup_lr"], pre["warmup_steps"], pre["micro_batch"], pre["grad_accum"]) == (
        1e-4,
        8e-5,
        1e-6,
        5000,
        8,
        1,
    )
    assert (fine["lr"], fine["min_lr"], fine["micro_batch"], fine["grad_accum"]) == (3e-5, 1e-5, 2, 16)
    # official schedules counted micro-batches: 3000 warm-up and 6 x 3000 iterations at accumulation 16
    assert (fine["warmup_steps"], fine["max_steps"]) == (math.ceil(3000 / 16), 18000 // 16 + 0)
    assert TrainConfig().weight_decay == 0.05 and TrainConfig().betas == (0.9, 0.999)


def test_config_precedence_preset_file_flags(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("stage: pretrain\nlr: 0.5\nmax_steps: 7\ndata: one.json\n")
    config = resolve_config({"max_steps": 3, "lr": None}, str(path))
    assert (config.stage, config.preset, config.lr, config.max_steps, config.data) == (
        "pretrain",
        "pretrain",
        0.5,
        3,
        ["one.json"],
    )
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
    config = train_config(
        tmp,
        setup["llm"],
        setup["mert"],
        setup["words"],
        setup["audio"],
        stage="pretrain",
        max_steps=60,
        micro_batch=4,
        grad_accum=1,
        lr=3e-2,
        min_lr=3e-2,
        warmup_steps=0,
        save_every=25,
        cache_dir=str(setup["root"] / "cache"),
    )
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
    config = train_config(
        tmp,
        setup["llm"],
        setup["mert"],
        setup["words"],
        setup["audio"],
        stage="pretrain",
        zero_stage=3,
        max_steps=4,
        micro_batch=2,
        grad_accum=2,
        save_every=2,
        cache_dir=str(setup["root"] / "cache"),
    )
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
    data.write_text(
        json.dumps(
            [
                {
                    "audio_name": n,
                    "conversation": [{"from": "human", "value": "Genre?"}, {"from": "gpt", "value": "Rock."}],
                }
                for n in names
            ]
        )
    )
    config = train_config(
        tmp, setup["llm"], setup["mert"], data, audio, cache=False, layer_combine="learned", max_steps=2, save_every=2
    )
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
        config = train_config(
            tmp,
            setup["llm"],
            setup["mert"],
            setup["qa"],
            setup["audio"],
            max_steps=2,
            save_every=2,
            compile=compiled,
            cache_dir=str(setup["root"] / "cache"),
        )
        run(config)
        losses[compiled] = [r["loss"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_bf16_run_matches_fp32_and_saves_an_fp32_adapter(setup, dist_env):
    """bf16 precision (DeepSpeed bf16 on CPU) computes the same losses as fp32 up to bf16 rounding,
    and the saved adapter stays fp32."""
    losses = {}
    for precision in ("fp32", "bf16"):
        tmp = setup["root"] / f"precision-{precision}"
        run(
            train_config(
                tmp,
                setup["llm"],
                setup["mert"],
                setup["qa"],
                setup["audio"],
                precision=precision,
                max_steps=3,
                save_every=3,
                cache_dir=str(setup["root"] / "cache"),
            )
        )
        losses[precision] = [r["loss"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)
    assert losses["bf16"] != losses["fp32"]  # it really ran in bf16
    from safetensors.torch import load_file

    saved = load_file(setup["root"] / "precision-bf16" / "run" / "final" / "adapter.safetensors")
    assert saved["proj.weight"].dtype == torch.float32


# --- run folders: atomic files, one training per folder, resume -------------------------------------


def test_atomic_writes_never_follow_a_file_planted_at_a_temporary_name(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "train_config.yaml"
    planted = [f".{target.name}.{os.getpid()}.tmp", f".{target.name}.tmp"]  # the old, predictable names
    for name in planted:
        (tmp_path / name).symlink_to(victim)
    atomic_write_text(target, "stage: finetune\n")
    assert target.read_text() == "stage: finetune\n" and not target.is_symlink()
    assert victim.read_text() == "keep me"
    with pytest.raises(OSError, match="No space left"):  # a full disk mid-write keeps the old file whole
        with atomic_path(target) as tmp:
            tmp.write_text("stage: fi")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "stage: finetune\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([victim.name, target.name, *planted])


class _Planted:
    """A pickle that runs code when fully unpickled (what a stranger's run folder could hold)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",)


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(_rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    _set_rng_state(safe_load(tmp_path / "rng.pt"))
    got = (random.random(), float(np.random.rand()), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])
    marker = tmp_path / "ran"
    torch.save({"module": _Planted(marker)}, tmp_path / "planted.pt")
    with pytest.raises(CheckpointError, match="planted.pt: not a loadable checkpoint file"):
        safe_load(tmp_path / "planted.pt")
    assert not marker.exists()
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):  # not EOFError (click would call it Ctrl-C)
        safe_load(tmp_path / "empty.pt")


def test_resume_with_nothing_to_resume_fails_before_loading_anything(setup, dist_env, tmp_path):
    # neither the audio nor the encoder exists: the resume check must come first
    config = train_config(
        tmp_path, setup["llm"], tmp_path / "no-encoder", setup["qa"], tmp_path / "no-audio", resume=True
    )
    with pytest.raises(ConfigError, match="nothing to resume in .*--resume-if-possible"):
        run(config)


def test_a_second_training_on_the_same_out_is_refused(setup, dist_env, tmp_path):
    from filelock import FileLock

    config = train_config(tmp_path, setup["llm"], setup["mert"], setup["qa"], setup["audio"], resume="auto")
    (tmp_path / "run").mkdir()
    with FileLock(tmp_path / "run" / ".musilingo-train.lock"):  # held as a running training holds it
        with pytest.raises(ConfigError, match="is in use by another training"):
            run(config)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".musilingo-train.lock"]


def _main(monkeypatch, capsys, *args):
    """The console script in-process: (exit code, stderr)."""
    from musilingo_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["musilingo", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exited:
        code = exited.code
    return code, capsys.readouterr().err


def test_resume_if_possible_starts_a_run_then_continues_it(setup, dist_env, monkeypatch, capsys):
    tmp = setup["root"] / "auto"
    config = train_config(
        tmp,
        setup["llm"],
        setup["mert"],
        setup["qa"],
        setup["audio"],
        max_steps=2,
        save_every=2,
        cache_dir=str(setup["root"] / "cache"),
    )
    yaml = yaml_config(setup["root"] / "auto.yaml", config)
    code, err = _main(monkeypatch, capsys, "train", "--config", str(yaml), "--resume-if-possible")
    assert code == 0, err
    assert "resumed" not in err
    code, err = _main(monkeypatch, capsys, "train", "--config", str(yaml), "--resume-if-possible", "--max-steps", "3")
    assert code == 0, err
    assert "resumed from" in err and "at step 2" in err
    assert [r["step"] for r in read_jsonl(tmp / "run" / "metrics.jsonl")] == [1, 2, 3]


def test_damaged_or_planted_newest_state_resumes_from_the_previous_one(setup, dist_env, monkeypatch, capsys):
    tmp = setup["root"] / "damaged"
    kw = dict(max_steps=4, save_every=2, cache_dir=str(setup["root"] / "cache"))
    run(train_config(tmp, setup["llm"], setup["mert"], setup["qa"], setup["audio"], **kw))
    out, states = tmp / "run", tmp / "run" / "deepspeed"
    original = {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl")}
    marker = tmp / "planted-code-ran"
    torch.save({"module": _Planted(marker)}, states / "step_4" / "mp_rank_00_model_states.pt")
    capsys.readouterr()
    result = run(train_config(tmp, setup["llm"], setup["mert"], setup["qa"], setup["audio"], resume=True, **kw))
    err = capsys.readouterr().err.replace("\n", " ")
    assert not marker.exists()  # the planted object was never rebuilt
    assert f"{states / 'step_4'} is damaged (not a loadable checkpoint file" in err
    assert f"resumed from {states / 'step_2'} at step 2" in err
    resumed = {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl")}
    assert result.steps == 4 and sorted(resumed) == [1, 2, 3, 4]
    assert resumed == pytest.approx(original, abs=1e-6)  # DeepSpeed's files loaded weights_only, exactly

    # a power cut: an empty file in one state, a file cut in half in the other
    (states / "step_2" / "mp_rank_00_model_states.pt").write_bytes(b"")
    optim = states / "step_4" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    optim.write_bytes(optim.read_bytes()[: optim.stat().st_size // 2])
    config = train_config(tmp, setup["llm"], setup["mert"], setup["qa"], setup["audio"], **kw)
    yaml = yaml_config(tmp / "train.yaml", config)
    code, err = _main(monkeypatch, capsys, "train", "--config", str(yaml), "--resume")
    assert code == 1 and "aborted" not in err  # a CheckpointError, not an EOFError shown as Ctrl-C
    assert "no intact DeepSpeed state" in err and "step_4" in err and "step_2" in err and "empty" in err
