"""The worker image: size, cached rebuild, container start-up, Docker-backend efficiency.

Four measurements, each with its baseline measured in the same run:

- **size** of the image ``inv build`` makes, against the 50 MB target. The
  seed's image (186 MB) and the official ``python:3.11-slim`` (about 124 MB)
  are reference figures from their documentation; the slim image is measured
  too when the daemon has it.
- **cached rebuild**: ``ttg_ops.images.build_image`` with no change in the
  tree, median of ``--repeats``, against one build with ``nocache=True``
  (every layer rebuilt from the same base) in the same run.
- **start to first line**: from ``container.start()`` to the worker's first
  log line, median of ``--repeats``, against the same worker started as a
  local process (``python -m ttg_worker``), the process backend's way.
- **Docker-backend efficiency**: ``ttg_ops.runner.run`` on 10,000 parameters
  x ``simulate(cost_ms=2)`` with 2 workers; the ideal is 10,000 x 2 ms / 2 =
  10 s. The process backend runs the same spec, interleaved. Target: Docker
  efficiency >= 0.85 of ideal.

Run: ``uv run python benchmarks/bench_image.py [--repeats 3] [--skip-efficiency]``.
The load average is printed before and after: other work on the machine skews
every figure.
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
from pathlib import Path
from typing import Any

from docker.errors import ImageNotFound
from rich.console import Console
from rich.table import Table
from ttg_ops import dockerapi, images
from ttg_ops.backends.docker import DockerBackend
from ttg_ops.backends.process import ProcessBackend
from ttg_ops.runner import run
from ttg_ops.spec import DEFAULT_VERSION, RunSpec

TARGET_SIZE_MB = 50.0
SEED_SIZE_MB = 186.0
SLIM_SIZE_MB = 124.0
TARGET_EFFICIENCY = 0.85
BENCH_TAG = "ttg-worker:bench"
WORKER_ENV = {
    "JOB_COMPLETION_INDEX": "0",
    "TTG_TOTAL_WORKERS": "1",
    "TTG_TOTAL_PARAMS": "10",
    "TTG_BATCH_SIZE": "10",
}


def median(values: list[float]) -> float:
    return statistics.median(values)


def measure_size(client: Any) -> tuple[float, float | None]:
    """The built image's size in MB, and the official slim image's when present."""
    result = images.build_image(DEFAULT_VERSION, tags=[BENCH_TAG])
    slim = None
    try:
        slim = client.images.get(images.DEFAULT_BASE).attrs["Size"] / 1e6
    except ImageNotFound:  # usual offline: the reference figure stands in
        slim = None
    return result.size / 1e6, slim


def measure_rebuild(repeats: int) -> tuple[list[float], float]:
    """Cached rebuild seconds (``repeats`` times) and one no-cache build's seconds."""
    cached = [images.build_image(DEFAULT_VERSION, tags=[BENCH_TAG]).seconds for _ in range(repeats)]
    cold = images.build_image(DEFAULT_VERSION, tags=[BENCH_TAG], nocache=True).seconds
    # Put the cache back in the state `inv build` leaves it in.
    images.build_image(DEFAULT_VERSION, tags=[BENCH_TAG])
    return cached, cold


def first_line_container(client: Any, output: Path) -> float:
    """Seconds from starting a worker container to its first log line."""
    container = client.containers.create(
        BENCH_TAG,
        environment=WORKER_ENV,
        labels={"ttg.project": "distributed-compute", "ttg.component": "benchmark"},
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        volumes={str(output): {"bind": "/output", "mode": "rw"}},
        user=f"{os.getuid()}:{os.getgid()}" if os.geteuid() else "10001:10001",
    )
    try:
        # Attach before starting, as `docker run` does, so no line can be missed.
        stream = container.attach(stream=True, logs=True, stdout=True, stderr=True)
        start = time.perf_counter()
        container.start()
        for _chunk in stream:
            return time.perf_counter() - start
        raise SystemExit("the worker container printed nothing")
    finally:
        container.remove(force=True)


def first_line_process(output: Path) -> float:
    """Seconds from spawning ``python -m ttg_worker`` to its first line."""
    env = {**os.environ, **WORKER_ENV, "TTG_OUTPUT_DIR": str(output), "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttg_worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.wait(timeout=60)
    return elapsed


def measure_start(client: Any, repeats: int) -> tuple[list[float], list[float]]:
    container_times, process_times = [], []
    with tempfile.TemporaryDirectory(prefix="ttg-bench-") as scratch:
        output = Path(scratch)
        if os.geteuid() == 0:
            os.chown(output, 10001, 10001)
        for _ in range(repeats):
            container_times.append(first_line_container(client, output))
            process_times.append(first_line_process(output))
    return container_times, process_times


def time_backend(name: str, params: int, runs: Path, n: int) -> float:
    spec = RunSpec(
        workers=2,
        params=params,
        batch_size=500,
        task_options={"cost_ms": 2},
        run_id=f"bench-{name}-{n}",
    )
    backend = DockerBackend(image=BENCH_TAG) if name == "docker" else ProcessBackend()
    start = time.perf_counter()
    report = run(spec, backend, runs / spec.run_id, console=Console(file=io.StringIO()))
    elapsed = time.perf_counter() - start
    if report["status"] != "succeeded" or not report["results"]["complete"]:
        raise SystemExit(f"benchmark run {spec.run_id} did not succeed: {report['status']}")
    return elapsed


def measure_efficiency(params: int, repeats: int) -> tuple[list[float], list[float]]:
    docker_times, process_times = [], []
    with tempfile.TemporaryDirectory(prefix="ttg-bench-runs-") as scratch:
        for n in range(repeats):
            docker_times.append(time_backend("docker", params, Path(scratch), n))
            process_times.append(time_backend("process", params, Path(scratch), n))
    return docker_times, process_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--params", type=int, default=10_000)
    parser.add_argument("--skip-efficiency", action="store_true")
    args = parser.parse_args()
    console = Console()
    client = dockerapi.client()
    console.print(f"load average before: {os.getloadavg()}")

    size, slim = measure_size(client)
    cached, cold = measure_rebuild(args.repeats)
    container_start, process_start = measure_start(client, max(args.repeats, 5))

    table = Table("measure", "median", "baseline", "ratio", "target")
    slim_text = f"{slim:.1f} MB (measured)" if slim else f"{SLIM_SIZE_MB:.0f} MB (reference)"
    table.add_row(
        "image size",
        f"{size:.1f} MB",
        f"seed {SEED_SIZE_MB:.0f} MB (reference); slim {slim_text}",
        f"{size / SEED_SIZE_MB:.2f} of the seed",
        f"<= {TARGET_SIZE_MB:.0f} MB: {'met' if size <= TARGET_SIZE_MB else 'MISSED'}",
    )
    table.add_row(
        f"cached rebuild (n={len(cached)})",
        f"{median(cached):.2f} s",
        f"no-cache build {cold:.1f} s",
        f"{median(cached) / cold:.3f}",
        "",
    )
    table.add_row(
        f"start to first line (n={len(container_start)})",
        f"{median(container_start) * 1000:.0f} ms",
        f"local process {median(process_start) * 1000:.0f} ms",
        f"{median(container_start) / median(process_start):.2f}",
        "",
    )
    if not args.skip_efficiency:
        ideal = args.params * 0.002 / 2
        docker_times, process_times = measure_efficiency(args.params, args.repeats)
        docker_eff = ideal / median(docker_times)
        process_eff = ideal / median(process_times)
        table.add_row(
            f"docker backend, {args.params} x 2 ms, 2 workers (n={len(docker_times)})",
            f"{median(docker_times):.2f} s (efficiency {docker_eff:.2f})",
            f"process backend {median(process_times):.2f} s (efficiency {process_eff:.2f}); "
            f"ideal {ideal:.1f} s",
            f"{median(process_times) / median(docker_times):.2f} of process speed",
            f">= {TARGET_EFFICIENCY}: {'met' if docker_eff >= TARGET_EFFICIENCY else 'MISSED'}",
        )
    console.print(table)
    console.print(f"load average after: {os.getloadavg()}")
    client.images.remove(BENCH_TAG)
    client.close()


if __name__ == "__main__":
    main()
