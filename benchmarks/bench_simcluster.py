"""The simulated cluster: start-up time with cached binaries, and its memory.

Each repeat starts a fresh :class:`ttg_ops.simcluster.SimCluster` (new
certificates, empty etcd) in a temporary directory and measures:

- **to API ready**: from ``start()`` to kube-apiserver answering ``/readyz``
  (certificates, etcd, API server). This is the baseline: the part every
  control plane pays.
- **to cluster ready**: from ``start()`` to the four nodes Ready and the
  ``default`` service account created, i.e. what the ``sim_cluster`` fixture
  waits for; the ratio to the baseline is what the controller manager,
  scheduler and kwok add.
- **RSS**: the resident memory of the five processes, summed from /proc,
  right after ready and again after an Indexed Job of 3 pods has completed.

Run: ``uv run python benchmarks/bench_simcluster.py [--repeats 3]``. Needs the
binaries (``uv run inv cluster.sim-build``). The load average is printed
before and after: other work on the machine skews every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ttg_ops.simcluster import SimCluster, binaries


def _job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "bench"},
        "spec": {
            "completions": 3,
            "parallelism": 3,
            "completionMode": "Indexed",
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "w", "image": "bench", "imagePullPolicy": "Never"}],
                }
            },
        },
    }


def _run_job(cluster: SimCluster, timeout: float = 60.0) -> float:
    """Seconds from creating a 3-pod Indexed Job to its Complete condition."""
    from kubernetes import client

    batch: Any = client.BatchV1Api(cluster.api_client())
    started = time.monotonic()
    batch.create_namespaced_job("default", _job())
    deadline = started + timeout
    while time.monotonic() < deadline:
        conditions = batch.read_namespaced_job("bench", "default").status.conditions or []
        if any(c.type == "Complete" and c.status == "True" for c in conditions):
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"the benchmark Job did not complete within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cluster starts to measure")
    args = parser.parse_args()
    binaries()  # fail early, with the build hint, when nothing is built
    print(f"load average before: {os.getloadavg()}")
    api_ready, ready, rss_idle, rss_busy, job = [], [], [], [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="ttg-bench-sim-") as tmp:
            cluster = SimCluster(f"bench{repeat}", run_dir=Path(tmp) / "run")
            with cluster:
                api_ready.append(cluster.timings["apiserver_ready_s"])
                ready.append(cluster.timings["ready_s"])
                rss_idle.append(cluster.status().rss_bytes / 2**20)
                job.append(_run_job(cluster))
                rss_busy.append(cluster.status().rss_bytes / 2**20)
        print(
            f"run {repeat + 1}: API ready {api_ready[-1]:.1f} s, cluster ready {ready[-1]:.1f} s, "
            f"RSS {rss_idle[-1]:.0f} MiB, 3-pod Job {job[-1]:.1f} s, RSS {rss_busy[-1]:.0f} MiB"
        )
    base = statistics.median(api_ready)
    full = statistics.median(ready)
    print(f"median to API ready (baseline):   {base:.1f} s")
    print(f"median to cluster ready:          {full:.1f} s  ({full / base:.2f}x the baseline)")
    print(f"median 3-pod Indexed Job:         {statistics.median(job):.1f} s")
    print(f"median RSS after ready:           {statistics.median(rss_idle):.0f} MiB")
    print(f"median RSS after the Job:         {statistics.median(rss_busy):.0f} MiB")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
