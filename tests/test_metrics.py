"""`inv metrics` and `inv logs` for cluster runs, with real worker output in the pod logs.

kwok runs nothing inside the pods, so each test runs the real worker locally
(``python -m ttg_worker``) with the pod's own environment (worker_env of the
run, the pod's name and node), and the simulated cluster serves that output
as the pod's container log. TTG then reads it back through the API server
exactly as from a kubelet: raw bytes, split into lines, parsed by the grammar.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rich.console import Console
from ttg_ops import labels
from ttg_ops.backends import kubernetes as kube
from ttg_ops.simcluster import RUN_DURATION
from ttg_ops.spec import RunSpec, worker_env

from tests.test_deploy_cli import inv

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BROKEN_SUMMARY = '{"worker_id": 2, "status": "completed", "processed_count": '


def _console() -> Console:
    return Console(file=io.StringIO(), width=160, record=True)


def _running_pods(sim: Any, namespace: str, run_id: str, count: int) -> dict[int, Any]:
    core: Any = client.CoreV1Api(sim.api_client())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=labels.k8s_selector(run_id)).items
        running = {kube.pod_index(p): p for p in pods if p.status.phase == "Running"}
        if len(running) == count:
            return {int(i): p for i, p in running.items() if i is not None}
        time.sleep(0.2)
    pytest.fail(f"the {count} pods of run {run_id} were not Running within 60 s")


def _run_workers(spec: RunSpec, pods: dict[int, Any], out: Path) -> dict[int, Path]:
    """Run each worker locally with its pod's environment; return the stdout files."""
    procs = {}
    files = {}
    for index, pod in pods.items():
        env = dict(os.environ)
        env.update(worker_env(spec, index))
        env.update(
            {
                "TTG_OUTPUT_DIR": str(out / "results"),
                "POD_NAME": pod.metadata.name,
                "NODE_NAME": pod.spec.node_name,
            }
        )
        files[index] = out / f"worker-{index}.log"
        with files[index].open("wb") as sink:
            procs[index] = subprocess.Popen(
                [sys.executable, "-m", "ttg_worker"], env=env, stdout=sink, stderr=subprocess.STDOUT
            )
    for index, proc in procs.items():
        assert proc.wait(timeout=120) == 0, files[index].read_text()[-2000:]
    return files


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_metrics_builds_the_report_from_real_worker_output_in_pod_logs(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path, log_format: str
) -> None:
    spec = RunSpec(workers=3, params=3000, batch_size=250, log_format=log_format)
    options = kube.DeployOptions(
        context=sim_cluster.context,
        kubeconfig=sim_cluster.kubeconfig,
        namespace=sim_namespace,
        runs_root=tmp_path / "runs",
        wait=False,
        pod_annotations={RUN_DURATION: "15s"},
    )
    deployed = kube.deploy(spec, options, _console())
    pods = _running_pods(sim_cluster, sim_namespace, spec.run_id, 3)
    files = _run_workers(spec, pods, tmp_path)
    with files[2].open("a") as log:
        log.write(BROKEN_SUMMARY + "\n")
    for index, pod in pods.items():
        sim_cluster.serve_logs(sim_namespace, pod.metadata.name, files[index])

    # The live wait streams the same logs and ends on the Job's Complete condition.
    api = sim_cluster.api_client()
    followed = kube.follow(api, spec, deployed.record, timeout=90, console=_console())
    assert followed.outcome == "Complete"
    streamed = followed.lines_by_index[0]
    assert streamed == files[0].read_text().splitlines()

    # inv metrics: raw bytes of every log, pod timings, the report of a local run's shape.
    found_spec, record, run_dir = kube.find_run(tmp_path / "runs", "latest")
    assert found_spec == spec
    assert record.results_dir == ""  # not kind: results stayed in the pods
    # As on kind, where the shards appear in a host directory: here, the local workers'.
    record.results_dir = str(tmp_path / "results")
    collected = kube.collect(found_spec, record, run_dir, api=api)
    report = collected.report
    assert report["results"]["unique"] == 3000
    assert report["results"]["missing_count"] == 0
    assert report["backend"] == "kubernetes"
    assert report["status"] == "succeeded"
    assert report["aggregate"]["processed"] == 3000
    assert report["aggregate"]["succeeded_indexes"] == [0, 1, 2]
    for worker in report["workers"]:
        pod = pods[worker["index"]]
        assert worker["name"] == pod.metadata.name
        assert worker["node"] == pod.spec.node_name
        assert worker["summary"]["pod_name"] == pod.metadata.name
        assert worker["summary"]["processed_count"] == 1000
        assert len(worker["batches"]) == 4
        assert worker["started_at"] is not None
        assert worker["finished_at"] >= worker["started_at"]
    assert (run_dir / "report.json").is_file()
    assert collected.unparsed == [
        (2, pods[2].metadata.name, len(files[2].read_text().splitlines()), BROKEN_SUMMARY.strip())
    ]

    console = _console()
    kube.show_metrics(collected, console)
    text = console.export_text()
    assert "Performance Metrics" in text
    assert "Total Parameters" in text
    assert "3,000" in text
    assert f"pod {pods[2].metadata.name} (worker 2) line" in text

    # inv logs: every line, prefixed by worker index.
    console = _console()
    printed = kube.print_logs(found_spec, record, console=console, api=api)
    total = sum(len(f.read_text().splitlines()) for f in files.values())
    assert printed == total
    out = console.export_text()
    assert out.count("[worker-1] ") == len(files[1].read_text().splitlines())

    # inv logs --follow on a finished run: every line once, then it ends by itself.
    console = _console()
    began = time.monotonic()
    assert kube.print_logs(found_spec, record, follow_logs=True, console=console, api=api) == total
    assert time.monotonic() - began < kube.LOG_DRAIN_SECONDS + 10


def test_logs_and_metrics_name_a_run_that_is_not_recorded(tmp_path: Path) -> None:
    from ttg_ops.errors import ConfigError

    with pytest.raises(ConfigError, match="no cluster run is recorded"):
        kube.find_run(tmp_path)
    with pytest.raises(ConfigError, match="run 'nope' is not a recorded cluster run"):
        kube.find_run(tmp_path, "nope")


def _play(sim: Any, namespace: str, pod: Any, shards: Path, run_id: str) -> None:
    """Run the real worker as ``pod`` (its own environment), writing shards under ``shards``."""
    done = sim.run_in_pod(
        namespace,
        pod.metadata.name,
        [sys.executable, "-m", "ttg_worker"],
        env={"TTG_OUTPUT_DIR": str(shards / run_id)},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]


def test_rerun_failed_deploys_a_follow_up_job_for_exactly_the_failed_index(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    from ttg_ops.report import load_report
    from ttg_ops.results import merge_results
    from ttg_ops.simcluster import FAIL_INDEXES

    runs, shards = tmp_path / "runs", tmp_path / "shards"
    spec = RunSpec(workers=3, params=900, batch_size=300)  # the follow-up: one full batch
    options = kube.DeployOptions(
        context=sim_cluster.context,
        kubeconfig=sim_cluster.kubeconfig,
        namespace=sim_namespace,
        runs_root=runs,
        wait=False,
        pod_annotations={FAIL_INDEXES: "1", RUN_DURATION: "8s"},
    )
    deployed = kube.deploy(spec, options, _console())
    pods = _running_pods(sim_cluster, sim_namespace, spec.run_id, 3)
    for index in (0, 2):
        _play(sim_cluster, sim_namespace, pods[index], shards, spec.run_id)
    api = sim_cluster.api_client()
    followed = kube.follow(api, spec, deployed.record, timeout=90, console=_console())
    assert followed.outcome == "Failed"
    # As on kind, where each run's shards reach the host under <mount>/<run-id>.
    deployed.record.results_dir = str(shards / spec.run_id)
    kube.write_record(runs, spec, deployed.record)

    # inv metrics names the failed worker and points at the cluster rerun.
    shown = inv("metrics", "--run-id", spec.run_id, "--runs-dir", str(runs))
    assert shown.returncode != 0
    assert "missing workers [1]" in shown.stderr  # it wrote no log: its shard is missing
    assert f"inv rerun --failed --run-id {spec.run_id}" in shown.stderr

    # The follow-up pod is played by the real worker as soon as it runs.
    played: list[Any] = []

    def play_follow_up() -> None:
        child = _running_pods(sim_cluster, sim_namespace, f"{spec.run_id}-r1", 1)[0]
        played.append(child)
        _play(sim_cluster, sim_namespace, child, shards, f"{spec.run_id}-r1")

    player = threading.Thread(target=play_follow_up, daemon=True)
    player.start()
    rerun_console = _console()
    follow_up, merged = kube.rerun_failed(
        runs / spec.run_id,
        timeout=120,
        console=rerun_console,
        pod_annotations={RUN_DURATION: "60s"},
    )
    player.join(timeout=120)
    assert follow_up is not None
    assert follow_up["run_id"] == f"{spec.run_id}-r1"
    assert follow_up["status"] == "succeeded", (follow_up["workers"], rerun_console.export_text())

    batch: Any = client.BatchV1Api(api)
    jobs = batch.list_namespaced_job(sim_namespace).items
    (job,) = [j for j in jobs if j.metadata.labels[labels.K8S_RUN_ID] == f"{spec.run_id}-r1"]
    assert job.spec.completions == 1
    env = {e.name: e.value for e in job.spec.template.spec.containers[0].env}
    assert env["TTG_ONLY"] == "300:600"  # exactly worker 1's shard of 0:900
    assert job.spec.template.spec.containers[0].image == deployed.record.image
    assert played and played[0].spec.node_name in sim_cluster.worker_names

    assert merged.run_id == spec.run_id
    assert merged.unique == 900
    assert merged.missing_count == 0
    assert merged.duplicates == 0
    root = load_report(runs / spec.run_id)
    assert root["results"]["unique"] == 900
    assert merge_results(runs / spec.run_id).missing_count == 0
