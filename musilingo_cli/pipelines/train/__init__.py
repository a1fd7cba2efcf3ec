"""`musilingo train`: stage 1 (pretrain) and stage 2 (finetune) of the adapter under DeepSpeed ZeRO.

config.py       the official recipes (PRESETS), TrainConfig, resolve_config, TrainResult
distributed.py  ranks, the process group, barrier, cross-rank mean of the logged loss
engine.py       the ModelConfig and --init state, the model, the adapter-only DeepSpeed engine, AdamW, the LR
schedule.py     the learning-rate schedule (a function of the optimizer step)
data_source.py  DataOrder (seeded, sharded, resumable) and FeatureSource (feature cache or encoder in the loop)
checkpoints.py  DeepSpeed state, our adapter checkpoint, final/, resume
metrics.py      progress bar, metrics.jsonl, TensorBoard, loss.png
loop.py         run(config): the training loop that ties them together
"""

from musilingo_cli.pipelines.train.config import PRESETS, TrainConfig, TrainResult, check_inputs, resolve_config

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "check_inputs", "resolve_config", "run"]


def __getattr__(name: str):
    # lazy: `run` pulls in torch and DeepSpeed; `musilingo train --help` reads only the config module
    if name == "run":
        from musilingo_cli.pipelines.train.loop import run

        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
