"""`ask` on many processes: `torchrun --nproc_per_node N [--nnodes M ...] -m musilingo_cli ask ... -o out.jsonl`.

    every rank: the same items (same inputs) -> keep those it owns: sha1(item id) mod WORLD_SIZE
      -> skip what is answered already: in out.jsonl and in EVERY part file beside it, whatever
         world size wrote it -> answer the rest into its own part file, as ask always writes
         (journal.Journal: one record per line, flushed as written, locked)
    the end: barrier -> rank 0 merges out.jsonl + all part files into out.jsonl, one record per id,
      in input order (atomic), and removes the part files -> barrier -> every rank exits

Part files are `out.jsonl.part-RRRRR-of-WWWWW` (rank, world size, five digits) next to the output.
Ownership depends only on the item's id and the world size, never on positions, so ranks never
share an item, and a rerun with any other number of ranks reads every part file left by a crash,
answers only what none of them holds, and merges them all. One rank alone (a plain `musilingo ask`,
or torchrun with one process) writes the output directly, as ask always did, unless part files lie
beside it: then it is rank 0 of 1 and merges them. torch.distributed is used for
the two barriers only: gloo on CPU, NCCL on GPUs (each rank on cuda:LOCAL_RANK).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musilingo_cli.core.errors import ConfigError, DataError
from musilingo_cli.core.journal import hold_lock, read_jsonl, rewrite_jsonl

# The slowest rank may finish hours after the fastest (long files, an uneven catalogue): the final
# barrier must outwait it, so the process group's timeout is long.
BARRIER_HOURS = 72


@dataclass(frozen=True)
class Shard:
    """This process's place: rank `rank` of `world`, on local GPU `local_rank`; `launched` when a
    launcher (torchrun, deepspeed, mpirun through torch) set RANK and WORLD_SIZE."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False

    @classmethod
    def from_env(cls) -> Shard:
        """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; one plain process without them.
        Raises ConfigError when they are not numbers or RANK is not below WORLD_SIZE."""
        if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
            return cls()
        try:
            rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise ConfigError(
                "RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them; unset them to run alone)"
            ) from None
        if not 0 <= rank < world:
            raise ConfigError(f"RANK={rank} is not below WORLD_SIZE={world}; start ranks with torchrun")
        return cls(rank, world, local_rank, launched=True)


def owner(item_id: str, world: int) -> int:
    """The rank that answers `item_id` among `world` ranks: sha1(id) as an integer, mod `world`.
    The same for every rank, process and run (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(item_id.encode("utf-8")).digest()[:8], "big") % world


def part_path(output: Path, shard: Shard) -> Path:
    """Rank `shard.rank`'s part file: `OUTPUT.part-RRRRR-of-WWWWW` beside the output."""
    return output.with_name(f"{output.name}.part-{shard.rank:05d}-of-{shard.world:05d}")


def part_files(output: Path) -> list[Path]:
    """Every part file beside `output`, whatever world size wrote it, oldest first (by mtime, then name)."""
    pattern = re.compile(re.escape(output.name) + r"\.part-\d{5,}-of-\d{5,}")
    try:
        found = [p for p in output.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file()]
    except FileNotFoundError:
        return []
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


def device_for(device: str | None, shard: Shard) -> str | None:
    """Under a launcher, `cuda` (or no --device, when CUDA is there) means this rank's GPU,
    cuda:LOCAL_RANK; anything else (cpu, cuda:3) is used as given."""
    if not shard.launched or device not in (None, "cuda"):
        return device
    import torch

    return f"cuda:{shard.local_rank}" if torch.cuda.is_available() else device


def latest_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One record per id: the last answer (error: null) if any, else the last error record.
    (An answered id is never asked again, so a later record for it can only be an error.)"""
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        ident = record["id"]
        if ident not in best or not record.get("error") or best[ident].get("error"):
            best[ident] = record
    return best


def _records(path: Path) -> list[dict[str, Any]]:
    """read_jsonl(path), checked to be ask's records (JSON objects with an id)."""
    records = read_jsonl(path)
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise DataError(
                f"{path}: record {number} is not an answer record (a JSON object with an `id`); "
                "choose another output file or remove it"
            )
    return records


class Parts:
    """One rank's side of a sharded output: its part file, what others answered, the final merge.

    Rank 0 holds the output's lock (`OUTPUT.lock`) from start to merge, so a second job on the same
    output is refused in one line; each rank's Journal locks its own part file. With more than one
    rank a process group is started (gloo on CPU, NCCL on CUDA) for the barriers; `close()` ends it.
    """

    def __init__(self, output: Path, shard: Shard, device: str):
        self.output, self.shard = Path(output), shard
        self.path = part_path(self.output, shard)
        self._group = False
        self._lock = None
        if self.output.is_dir():  # as Journal says it for a single process
            raise ConfigError(
                f"{self.output}: cannot write the output file here (it is a folder); choose another output file"
            )
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"{self.output}: cannot write the output file here ({err.strerror or err}); choose another output file"
            ) from None
        if shard.world > 1:
            self._start_group(device)
        if shard.rank == 0:
            self._lock = hold_lock(self.output)

    def _start_group(self, device: str) -> None:
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        on_cuda = str(device).startswith("cuda")
        if on_cuda:
            torch.cuda.set_device(torch.device(device))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # torchrun sets both; other launchers may not
        os.environ.setdefault("MASTER_PORT", "29500")
        dist.init_process_group(
            backend="nccl" if on_cuda else "gloo",
            timeout=timedelta(hours=BARRIER_HOURS),
            **({"device_id": torch.device(device)} if on_cuda else {}),
        )
        self._group = True

    def own(self, items: list) -> list:
        """The items this rank answers (all of them for one rank)."""
        return [i for i in items if owner(i.id, self.shard.world) == self.shard.rank]

    def answered_elsewhere(self) -> list[dict[str, Any]]:
        """Records in the output file and in every other part file (this rank's own part is its
        Journal's). Another live rank's part may grow while it is read: its torn last line is
        skipped, and its items are that rank's anyway."""
        sources = [self.output] + [p for p in part_files(self.output) if p != self.path]
        return [r for p in sources for r in _records(p)]

    def finish(self, order: list[str]) -> int | None:
        """After this rank's last record: wait for every rank, rank 0 merges, wait again (so no rank
        exits, and no launcher tears rank 0 down, mid-merge). Rank 0 returns how many records the
        output holds, the others None."""
        self._barrier()
        merged = merge(self.output, order) if self.shard.rank == 0 else None
        self._barrier()
        return merged

    def _barrier(self) -> None:
        if self._group:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Release the output's lock and end the process group (also after an error)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._group = False


def merge(output: Path, order: list[str]) -> int:
    """Write `output` as one record per id (`latest_records`) from itself and every part file beside
    it, ids in `order` first in that order, any others (earlier runs' items) after them as they came;
    atomically. Then remove the part files and their locks. Returns the number of records."""
    output = Path(output)
    parts = part_files(output)
    records = [r for p in [output, *parts] for r in _records(p)]
    position = {ident: n for n, ident in enumerate(order)}
    best = latest_records(records).values()
    merged = sorted(best, key=lambda r: position.get(r["id"], len(position)))  # stable: others keep their order
    rewrite_jsonl(output, merged)
    for part in parts:  # only after the output holds their records: a crash here leaves duplicates a rerun drops
        part.unlink(missing_ok=True)
        Path(f"{part}.lock").unlink(missing_ok=True)
    return len(merged)
