"""make-mi throughput against the local test server with 200 ms latency per request.

Runs the real pipeline (openai client over HTTP, journal, filter) at several concurrencies under
one rate limit and prints pairs/s and the ratio to concurrency 1. Throughput should grow with
concurrency (each worker waits 200 ms per request) until the rate limit caps it.

    .venv/bin/python benchmarks/bench_make_mi.py [--rpm 2400] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import openai  # noqa: F401  (imported first so its import time is not in the first measurement)
from chat_server import ChatServer
from make_mi_helpers import MUSICCAPS_EXCERPT

from musilingo_cli.pipelines.make_mi import MakeMIConfig, run


def write_captions(path: Path, n: int) -> Path:
    """n captions: the real excerpt cycled, with distinct ids."""
    rows = list(csv.DictReader(io.StringIO(MUSICCAPS_EXCERPT)))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for i in range(n):
            writer.writerow({**rows[i % len(rows)], "ytid": f"{rows[i % len(rows)]['ytid']}-{i}"})
    return path


def measure(base_url: str, workdir: Path, concurrency: int, rpm: float, captions: int) -> tuple[float, int, int]:
    config = MakeMIConfig(
        captions=write_captions(workdir / f"caps{concurrency}.csv", captions),
        out=workdir / f"out{concurrency}",
        kinds=("short",),
        model="local-bench",
        base_url=base_url,
        concurrency=concurrency,
        requests_per_minute=rpm,
        retry_base=0.01,
        timeout=5,
        show_progress=False,
    )
    start = time.perf_counter()
    summary = run(config)
    seconds = time.perf_counter() - start
    return seconds, sum(summary["pairs_kept"].values()) + summary["pairs_rejected"], summary["units_done"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=float, default=2400, help="rate limit, requests per minute")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    cap = args.rpm / 60
    print(
        f"local server latency {args.latency * 1000:.0f} ms, rate limit {args.rpm:g} rpm ({cap:g} requests/s), "
        "kind short, 2 requests per caption"
    )
    print(f"{'concurrency':>11} {'captions':>8} {'seconds':>8} {'requests/s':>10} {'pairs/s':>8} {'vs c=1':>7}")
    base = None
    with ChatServer(latency=args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        for c in levels:
            captions = max(10, 8 * c)
            seconds, pairs, units = measure(server.base_url, Path(tmp), c, args.rpm, captions)
            rate = pairs / seconds
            base = base or rate
            print(f"{c:>11} {units:>8} {seconds:>8.2f} {2 * units / seconds:>10.1f} {rate:>8.1f} {rate / base:>6.2f}x")


if __name__ == "__main__":
    main()
