"""Distributed set-up: ranks from the launcher's environment, the process group (NCCL on GPUs,
gloo on CPU), a barrier, and the cross-rank mean of the logged loss."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: str


def setup_distributed() -> Dist:
    """Read RANK/WORLD_SIZE/LOCAL_RANK (torchrun, the deepspeed launcher, or a plain single
    process) and start the process group: NCCL on GPUs, gloo on CPU."""
    import torch

    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, default)
    if os.environ["WORLD_SIZE"] == "1":  # no peer to agree with: a free port, whatever an earlier run left set
        os.environ["MASTER_PORT"] = str(_free_port())
    os.environ.setdefault("MASTER_PORT", "29500")
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator().device_name()
    if accelerator == "cpu":
        # DeepSpeed's CPU backend JIT-compiles a shared-memory allreduce op (1-3 minutes) on
        # first use; gloo does the same work, and the adapter's gradients are tiny.
        import importlib

        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    local_rank = int(os.environ["LOCAL_RANK"])
    if accelerator == "cuda":
        torch.cuda.set_device(local_rank)
    deepspeed.init_distributed(dist_backend="gloo" if accelerator == "cpu" else None, verbose=False)
    device = "cpu" if accelerator == "cpu" else f"{accelerator}:{local_rank}"
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank, device)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _reduce_mean(loss: float, samples: int, dist_info: Dist) -> tuple[float, int]:
    """Mean loss and total samples over all ranks (for logging only)."""
    import torch
    import torch.distributed as dist

    if dist_info.world == 1:
        return loss, samples
    t = torch.tensor([loss, float(samples)], dtype=torch.float64, device=dist_info.device)
    dist.all_reduce(t)
    return float(t[0]) / dist_info.world, int(t[1])


def _sum_ints(values: list[int], dist_info: Dist) -> list[int]:
    """Element-wise sums over all ranks (collective; e.g. cache hits and crops encoded)."""
    import torch
    import torch.distributed as dist

    if dist_info.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=dist_info.device)
    dist.all_reduce(t)
    return [int(v) for v in t.tolist()]


def _from_rank0(value, dist_info: Dist):
    """Rank 0's `value` on every rank (collective): decisions made once, such as whether the run
    folder may be used and which checkpoint to resume, so every rank acts on the same answer."""
    import torch.distributed as dist

    if dist_info.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=None if dist_info.device == "cpu" else dist_info.device)
    return box[0]
