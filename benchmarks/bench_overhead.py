"""Measure the worker's own cost per parameter with the ``noop`` task.

The worker path is :func:`ttg_worker.runner.run`, the function the
``ttg-worker`` entry point calls: sharding, batches, the task call, one
results line per parameter, a flush per batch and an fsync at most once a
second (the worker's default), a PROGRESS event per batch (logging
configured as in a container, into a discarded stream) and the summary. It
is measured a second time with an fsync after every batch, to show what the
sync policy buys. The baseline, measured in the same run, is a bare Python
loop calling the same ``noop`` function and writing ``json.dumps`` of the
same results object to a file, with no batching, logging or fsync.

Run: ``uv run python benchmarks/bench_overhead.py [--params 200000] [--repeats 5]``.
The target is at most 10 µs per parameter for the worker path.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import ttg_worker.results
from ttg_logging import configure
from ttg_worker.config import WorkerConfig
from ttg_worker.runner import run
from ttg_worker.tasks import noop

TARGET_US = 10.0


def worker_path(params: int, batch_size: int, directory: Path, fsync_interval: float) -> float:
    """Seconds for one in-process worker run over ``params`` parameters."""
    ttg_worker.results.FSYNC_INTERVAL = fsync_interval
    config = WorkerConfig(
        worker_id=0,
        workers=1,
        params=params,
        task="noop",
        batch_size=batch_size,
        output_dir=str(directory),
        run_id="bench",
    )
    configure(0, "INFO", "text", stream=io.StringIO(), intercept_stdlib=False)
    start = time.perf_counter()
    code = run(config, install_signals=False)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the worker run failed with exit code {code}")
    lines = (directory / "results-00000.jsonl").read_text().count("\n")
    if lines != params:
        raise SystemExit(f"the worker wrote {lines} results lines, expected {params}")
    return elapsed


def baseline(params: int, directory: Path) -> float:
    """Seconds for a bare loop: call noop, json.dumps the results object, write it."""
    path = directory / "baseline.jsonl"
    start = time.perf_counter()
    with path.open("w", encoding="utf-8") as handle:
        for index in range(params):
            value = noop(index)
            record = {"index": index, "params": index, "value": value, "error": None}
            handle.write(json.dumps(record) + "\n")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=200_000, help="parameters per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each path")
    parser.add_argument("--batch-size", type=int, default=500, help="worker batch size")
    parser.add_argument(
        "--dir", default=None, help="where results go (default: a temporary directory)"
    )
    args = parser.parse_args()

    default_interval = ttg_worker.results.FSYNC_INTERVAL
    worker_times: list[float] = []
    synced_times: list[float] = []
    base_times: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ttg-bench-") as root:
        for repeat in range(args.repeats):
            # Alternate the two paths so that machine noise hits both alike.
            base_dir = Path(root) / f"base-{repeat}"
            base_dir.mkdir()
            base_times.append(baseline(args.params, base_dir))
            run_dir = Path(root) / f"w-{repeat}"
            worker_times.append(
                worker_path(args.params, args.batch_size, run_dir, default_interval)
            )
            run_dir = Path(root) / f"s-{repeat}"
            synced_times.append(worker_path(args.params, args.batch_size, run_dir, 0.0))

    n = args.params
    worker_us = statistics.median(worker_times) / n * 1e6
    synced_us = statistics.median(synced_times) / n * 1e6
    base_us = statistics.median(base_times) / n * 1e6
    print(f"parameters per run: {n}, repeats: {args.repeats}, batch size: {args.batch_size}")
    print(f"worker path (noop, results, fsync <= 1/s):   median {worker_us:.2f} µs/param")
    print(f"worker path (noop, results, fsync per batch): median {synced_us:.2f} µs/param")
    print(f"baseline (bare loop, json.dumps + write):     median {base_us:.2f} µs/param")
    print(f"ratio worker/baseline: {worker_us / base_us:.2f}x")
    print(f"difference worker - baseline: {worker_us - base_us:+.2f} µs/param")
    verdict = "met" if worker_us <= TARGET_US else "MISSED"
    print(f"target <= {TARGET_US:.0f} µs/param: {verdict}")


if __name__ == "__main__":
    main()
