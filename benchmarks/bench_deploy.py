"""`inv deploy` on the simulated cluster: time to Complete, API calls, time to the first pod.

Each repeat deploys 3 workers x 10,000 parameters into a fresh namespace of a
simulated cluster (a real kube-apiserver, scheduler and Job controller; kwok
plays the kubelets and keeps each pod Running for its default 1 s), twice:

- **TTG**: ``ttg_ops.backends.kubernetes.deploy`` with ``wait``: preflight
  (version, nodes), strict offline validation, namespace, Job, then the live
  follow (two resumable watches, one log stream per pod) until the Job's
  ``Complete`` condition, and the pod distribution table.
- **baseline**: the same rendered Job with plain ``kubectl create -f`` then
  ``kubectl wait --for=condition=complete`` (no preflight, no validation, no
  live progress).

Reported: median wall time from the call to the Job's ``Complete`` condition,
the ratio TTG / kubectl, TTG's median time from the call to the first pod
seen, and the number of HTTP requests TTG's client sent per run (counted by
wrapping ``kubernetes.client.ApiClient.call_api``; a watch or a log stream is
one request however long it stays open).

Run: ``uv run python benchmarks/bench_deploy.py [--repeats 5]``. Needs the
simulated cluster's binaries (``uv run inv cluster.sim-build``) and kubectl.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from rich.console import Console
from ttg_ops import manifests
from ttg_ops.backends import kubernetes as kube
from ttg_ops.simcluster import SimCluster
from ttg_ops.spec import RunSpec


class CallCounter:
    """Counts the requests every ApiClient sends while installed."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = client.ApiClient.call_api

    def __enter__(self) -> CallCounter:
        original = self._original
        counter = self

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter.calls += 1
            return original(self, *args, **kwargs)

        client.ApiClient.call_api = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        client.ApiClient.call_api = self._original  # type: ignore[method-assign]


def wait_schedulable(sim: SimCluster, timeout: float = 60) -> None:
    core: Any = client.CoreV1Api(sim.api_client())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(kube.schedulable_nodes(core.list_node().items)) == 3:
            return
        time.sleep(0.5)
    raise SystemExit("the simulated workers stayed tainted not-ready")


def ttg_run(sim: SimCluster, namespace: str, runs: Path) -> tuple[float, float, int]:
    spec = RunSpec(workers=3, params=10_000)
    options = kube.DeployOptions(
        context=sim.context,
        kubeconfig=sim.kubeconfig,
        namespace=namespace,
        runs_root=runs,
        timeout=120,
    )
    console = Console(file=io.StringIO(), width=120)
    with CallCounter() as counter:
        began = time.monotonic()
        result = kube.deploy(spec, options, console)
        elapsed = time.monotonic() - began
    assert result.follow is not None and result.follow.outcome == "Complete"
    first = (result.follow.first_pod_at or began) - began
    return elapsed, first, counter.calls


def kubectl_run(sim: SimCluster, namespace: str, work: Path) -> float:
    spec = RunSpec(workers=3, params=10_000)
    job = manifests.render_job(spec, namespace=namespace)
    path = work / f"{spec.run_id}.yaml"
    path.write_text(yaml.safe_dump(job))
    base = ["kubectl", "--kubeconfig", sim.kubeconfig, "--context", sim.context, "-n", namespace]
    began = time.monotonic()
    subprocess.run([*base, "create", "-f", str(path)], check=True, capture_output=True)
    subprocess.run(
        [
            *base,
            "wait",
            "--for=condition=complete",
            f"job/{job['metadata']['name']}",
            "--timeout=120s",
        ],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("kubectl") is None:
        raise SystemExit("kubectl is needed for the baseline: apt-get install kubernetes-client")

    print(f"load average before: {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    sim = SimCluster(run_dir=work / "sim")
    sim.start()
    try:
        wait_schedulable(sim)
        core: Any = client.CoreV1Api(sim.api_client())
        ttg_times, firsts, calls, kubectl_times = [], [], [], []
        for i in range(args.repeats):
            for which in ("ttg", "kubectl") if i % 2 == 0 else ("kubectl", "ttg"):
                namespace = f"bench-{which}-{i}"
                core.create_namespace({"metadata": {"name": namespace}})
                if which == "ttg":
                    elapsed, first, count = ttg_run(sim, namespace, work / "runs")
                    ttg_times.append(elapsed)
                    firsts.append(first)
                    calls.append(count)
                else:
                    kubectl_times.append(kubectl_run(sim, namespace, work))
                core.delete_namespace(namespace, propagation_policy="Background")
        ttg_median = statistics.median(ttg_times)
        kubectl_median = statistics.median(kubectl_times)
        print(f"repeats: {args.repeats}, 3 workers x 10,000 parameters, kwok run time 1 s/pod")
        print(f"TTG deploy to Complete: median {ttg_median:.2f} s  (all: {_fmt(ttg_times)})")
        print(
            f"kubectl create + wait:  median {kubectl_median:.2f} s  (all: {_fmt(kubectl_times)})"
        )
        print(f"ratio TTG / kubectl: {ttg_median / kubectl_median:.2f}")
        print(f"TTG call to first pod seen: median {statistics.median(firsts):.2f} s")
        print(f"TTG API requests per run: median {statistics.median(calls):.0f} (all: {calls})")
    finally:
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")
    return 0


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
