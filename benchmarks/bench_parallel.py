"""Parallel efficiency of the ``inv run`` path against ``multiprocessing.Pool``.

The work: ``simulate`` with ``cost_ms=2`` over 10,000 parameters on 2 workers,
so the ideal wall time is 10,000 x 2 ms / 2 = 10 s. Three ways are timed in
the same process, interleaved, ``--repeats`` times each:

- ``run``: :func:`ttg_ops.runner.run` with the process backend, from the
  first worker spawn to ``report.json`` and ``results.jsonl`` written (what
  ``inv run`` does after parsing its flags), with the live display in its
  non-terminal form (status lines into a discarded stream).
- ``cli``: the whole ``inv run`` command as a subprocess, including invoke's
  and TTG's imports and the printed tables (skip with ``--no-cli``).
- ``pool``: ``multiprocessing.Pool(2).map(simulate, range(10000), chunksize)``
  with the default start method, pool creation and teardown included; the
  baseline.

Efficiency is ideal / median wall time. Targets: ``run`` efficiency >= 0.90
and ``run`` within 5 % of the pool. Prints the load average before and after,
since other work on the machine skews every figure.

Run: ``uv run python benchmarks/bench_parallel.py [--repeats 3] [--params 10000]``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from rich.console import Console
from ttg_logging import configure
from ttg_ops.backends.process import ProcessBackend
from ttg_ops.runner import run
from ttg_ops.spec import RunSpec
from ttg_worker.tasks import simulate

ROOT = Path(__file__).resolve().parents[1]
TARGET_EFFICIENCY = 0.90
TARGET_POOL_RATIO = 1.05


def breakdown(report: dict[str, Any], start: float, end: float) -> dict[str, float]:
    """Where one run's wall time went, from its report (seconds).

    ``start-up``: from the call to the slowest worker's first batch starting
    (interpreter, imports, configuration); ``compute``: the slowest worker's
    batches; ``wind-down``: from its last batch to its process exit (summary,
    interpreter shutdown); ``report``: from the last exit to ``run`` returning
    (report, merge, writes).
    """
    firsts, lasts = [], []
    for worker in report["workers"]:
        batches = worker["batches"]
        firsts.append(batches[0]["end"] - batches[0]["batch_time"])
        lasts.append(batches[-1]["end"])
    exits = [w["finished_at"] for w in report["workers"]]
    return {
        "start-up": max(firsts) - start,
        "compute": max(lasts) - max(firsts),
        "wind-down": max(exits) - max(lasts),
        "report": end - max(exits),
    }


def time_run(  # noqa: PLR0917 - one value per benchmark setting
    params: int,
    workers: int,
    cost_ms: float,
    batch: int,
    runs: Path,
    n: int,
    phases: list[dict[str, float]],
) -> float:
    """Seconds for one :func:`ttg_ops.runner.run` on local processes; adds its breakdown."""
    spec = RunSpec(
        workers=workers,
        params=params,
        batch_size=batch,
        task_options={"cost_ms": cost_ms},
        run_id=f"bench-{n}",
    )
    start, wall = time.perf_counter(), time.time()
    report = run(spec, ProcessBackend(), runs / spec.run_id, console=Console(file=io.StringIO()))
    elapsed = time.perf_counter() - start
    phases.append(breakdown(report, wall, wall + elapsed))
    if report["status"] != "succeeded" or not report["results"]["complete"]:
        raise SystemExit(f"benchmark run {spec.run_id} did not succeed: {report['status']}")
    return elapsed


def time_cli(  # noqa: PLR0917 - one value per benchmark setting
    params: int, workers: int, cost_ms: float, batch: int, runs: Path, n: int
) -> float:
    """Seconds for the whole ``inv run`` command."""
    command = [
        sys.executable, "-m", "invoke", "run",
        "--workers", str(workers), "--params", str(params), "--batch-size", str(batch),
        "--task-options", f'{{"cost_ms": {cost_ms}}}',
        "--run-id", f"cli-{n}", "--runs-dir", str(runs),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"inv run failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


def time_pool(params: int, workers: int, cost_ms: float, chunksize: int) -> float:
    """Seconds for ``Pool(workers).map`` of the same task over the same parameters."""
    start = time.perf_counter()
    with Pool(workers) as pool:
        values = pool.map(partial(simulate, cost_ms=cost_ms), range(params), chunksize=chunksize)
    elapsed = time.perf_counter() - start
    assert len(values) == params
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cost-ms", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--chunksize", type=int, default=500, help="Pool.map chunk size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip timing the inv command")
    args = parser.parse_args()
    configure("bench", "WARNING", "text", stream=sys.stderr, intercept_stdlib=False)

    ideal = args.params * args.cost_ms / 1000.0 / args.workers
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{args.params:,} x simulate({args.cost_ms} ms) on {args.workers} workers, "
        f"{os.cpu_count()} cores; ideal {ideal:.2f} s; batch {args.batch_size}, "
        f"Pool chunksize {args.chunksize}; {args.repeats} repeats"
    )
    timings: dict[str, list[float]] = {"pool": [], "run": []}
    phases: list[dict[str, float]] = []
    if not args.no_cli:
        timings["cli"] = []
    with tempfile.TemporaryDirectory(prefix="ttg-bench-") as tmp:
        runs = Path(tmp)
        for n in range(args.repeats):
            timings["pool"].append(
                time_pool(args.params, args.workers, args.cost_ms, args.chunksize)
            )
            timings["run"].append(
                time_run(args.params, args.workers, args.cost_ms, args.batch_size, runs, n, phases)
            )
            if "cli" in timings:
                timings["cli"].append(
                    time_cli(args.params, args.workers, args.cost_ms, args.batch_size, runs, n)
                )
            print(
                f"  repeat {n + 1}: "
                + ", ".join(f"{name} {values[-1]:.3f} s" for name, values in timings.items())
            )

    pool = statistics.median(timings["pool"])
    print(f"{'path':<6}{'median s':>10}{'efficiency':>12}{'vs pool':>10}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:<6}{median:>10.3f}{ideal / median:>12.3f}{median / pool:>10.3f}")
    print(
        "run path, median seconds per phase: "
        + ", ".join(
            f"{name} {statistics.median(p[name] for p in phases):.3f}" for name in phases[0]
        )
    )
    run_median = statistics.median(timings["run"])
    efficiency, ratio = ideal / run_median, run_median / pool
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    verdict = (
        "meets" if efficiency >= TARGET_EFFICIENCY and ratio <= TARGET_POOL_RATIO else "misses"
    )
    print(
        f"run path {verdict} the targets: efficiency {efficiency:.3f} (target >= "
        f"{TARGET_EFFICIENCY}), {ratio:.3f} x the Pool (target <= {TARGET_POOL_RATIO})"
    )


if __name__ == "__main__":
    main()
