"""`musilingo train`: stage 1 (pretrain) and stage 2 (finetune) of the adapter under DeepSpeed ZeRO."""

from musilingo_cli.pipelines.train.loop import TrainConfig, resolve_config, run  # noqa: F401
