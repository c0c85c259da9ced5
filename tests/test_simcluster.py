"""The simulated cluster behaves like TTG's kind cluster where TTG depends on it.

A real API server, Job controller and scheduler decide; kwok only plays the
kubelets. The tests check placement under required anti-affinity, the
completion index the Job controller injects, an unschedulable fourth pod, a
pod that fails on request, pod logs served through the API, and that stopping
leaves no process behind.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from ttg_ops.k8s import api_client
from ttg_ops.simcluster import (
    EXIT_CODE,
    FAIL_INDEXES,
    IMAGE_MISSING,
    OUTCOME,
    RUN_DURATION,
    SimCluster,
    cri_log,
    node_names,
)
from ttg_ops.simcluster._kwok import kwok_config, node_manifest

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
WAIT_S = 60.0


def _wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def _job(
    name: str,
    completions: int,
    *,
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    anti_affinity: bool = True,
    backoff_limit_per_index: int | None = None,
) -> dict[str, Any]:
    """An Indexed Job whose pods (label ``sim-test=<name>``) avoid sharing a node."""
    pod_labels = {"sim-test": name, **(labels or {})}
    affinity = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"sim-test": name}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": completions,
        "completionMode": "Indexed",
        "template": {
            "metadata": {"labels": pod_labels, "annotations": annotations or {}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "worker", "image": "ttg-worker:sim", "imagePullPolicy": "Never"}
                ],
                **({"affinity": affinity} if anti_affinity else {}),
            },
        },
    }
    if backoff_limit_per_index is None:
        spec["backoffLimit"] = 0
    else:
        spec["backoffLimitPerIndex"] = backoff_limit_per_index
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def _apis(cluster: Any) -> tuple[Any, Any]:
    from kubernetes import client

    api = api_client(cluster.context, cluster.kubeconfig)
    return client.BatchV1Api(api), client.CoreV1Api(api)


def _condition(batch: Any, namespace: str, name: str, kind: str) -> bool:
    job = batch.read_namespaced_job(name, namespace)
    conditions = job.status.conditions or []
    return any(c.type == kind and c.status == "True" for c in conditions)


def _pods(core: Any, namespace: str, name: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"sim-test={name}").items)


# -- without a cluster -----------------------------------------------------------------------


def test_node_names_follow_kind() -> None:
    assert node_names("ttg-cluster", 3) == [
        "ttg-cluster-control-plane",
        "ttg-cluster-worker",
        "ttg-cluster-worker2",
        "ttg-cluster-worker3",
    ]


def test_control_plane_node_is_tainted_and_workers_carry_ttg_labels() -> None:
    control = node_manifest("c-control-plane", "c", True, "v1.36.3")
    worker = node_manifest("c-worker", "c", False, "v1.36.3")
    assert control["spec"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    ]
    assert "node-role.kubernetes.io/control-plane" in control["metadata"]["labels"]
    assert worker["spec"]["taints"] == []
    assert worker["metadata"]["labels"]["ttg.io/project"] == "distributed-compute"
    assert worker["metadata"]["labels"]["ttg.io/role"] == "worker"
    assert worker["metadata"]["labels"]["kubernetes.io/hostname"] == "c-worker"


def test_kwok_config_holds_every_stage() -> None:
    stages = [doc for doc in yaml.safe_load_all(kwok_config()) if doc]
    assert {s["metadata"]["name"] for s in stages} == {
        "ttg-node-initialize",
        "ttg-node-heartbeat",
        "ttg-pod-running",
        "ttg-pod-image-pull-fails",
        "ttg-pod-succeed",
        "ttg-pod-fail",
        "ttg-pod-delete",
    }
    assert all(s["kind"] == "Stage" for s in stages)


def test_cri_log_keeps_each_line_verbatim() -> None:
    text = '{"event": "start", "index": 0}\nplain line\n'
    records = cri_log(text).splitlines()
    assert [r.split(" ", 3)[1:3] for r in records] == [["stdout", "F"], ["stdout", "F"]]
    assert [r.split(" ", 3)[3] for r in records] == text.splitlines()
    with pytest.raises(ValueError, match="stream"):
        cri_log(text, "stdin")


# -- against the simulated cluster -----------------------------------------------------------


@pytest.mark.cluster
def test_cluster_has_kind_shaped_ready_nodes(sim_cluster: Any) -> None:
    _batch, core = _apis(sim_cluster)
    nodes = {n.metadata.name: n for n in core.list_node().items}
    assert sorted(nodes) == sorted(sim_cluster.node_names)
    control = nodes[sim_cluster.control_plane_name]
    assert [(t.key, t.effect) for t in control.spec.taints] == [
        ("node-role.kubernetes.io/control-plane", "NoSchedule")
    ]
    for name in sim_cluster.worker_names:
        labels = nodes[name].metadata.labels
        assert labels["ttg.io/role"] == "worker"
        assert labels["kubernetes.io/hostname"] == name
    for node in nodes.values():
        ready = [c.status for c in node.status.conditions if c.type == "Ready"]
        assert ready == ["True"]
        assert int(node.status.allocatable["pods"]) > 0


@pytest.mark.cluster
def test_indexed_job_runs_one_pod_per_worker_with_its_completion_index(
    sim_cluster: Any, sim_namespace: str
) -> None:
    batch, core = _apis(sim_cluster)
    batch.create_namespaced_job(sim_namespace, _job("spread", 3))

    _wait_for(
        "Job spread to be Complete", lambda: _condition(batch, sim_namespace, "spread", "Complete")
    )

    pods = _pods(core, sim_namespace, "spread")
    assert len(pods) == 3
    assert all(p.status.phase == "Succeeded" for p in pods)
    placed = {p.spec.node_name for p in pods}
    assert placed == set(sim_cluster.worker_names)
    assert sim_cluster.control_plane_name not in placed
    assert sorted(p.metadata.annotations[INDEX_ANNOTATION] for p in pods) == ["0", "1", "2"]
    for pod in pods:
        # The Job controller injects the index through the downward API from the pod's
        # index label, which it sets next to the annotation.
        assert pod.metadata.labels[INDEX_ANNOTATION] == pod.metadata.annotations[INDEX_ANNOTATION]
        env = {e.name: e for e in pod.spec.containers[0].env}
        source = env["JOB_COMPLETION_INDEX"].value_from.field_ref.field_path
        assert source == f"metadata.labels['{INDEX_ANNOTATION}']"


@pytest.mark.cluster
def test_fourth_pod_under_required_anti_affinity_stays_pending(
    sim_cluster: Any, sim_namespace: str
) -> None:
    batch, core = _apis(sim_cluster)
    # The pods run for ten minutes, so the first three keep their workers.
    batch.create_namespaced_job(
        sim_namespace, _job("crowded", 4, annotations={RUN_DURATION: "10m"})
    )

    def three_running_and_failed_scheduling() -> list[Any]:
        running = [p for p in _pods(core, sim_namespace, "crowded") if p.status.phase == "Running"]
        events = core.list_namespaced_event(sim_namespace).items
        failed = [e for e in events if e.reason == "FailedScheduling"]
        return failed if len(running) == 3 else []

    events = _wait_for(
        "three Running pods and a FailedScheduling event", three_running_and_failed_scheduling
    )
    pods = _pods(core, sim_namespace, "crowded")
    phases = sorted(p.status.phase for p in pods)
    assert phases == ["Pending", "Running", "Running", "Running"]
    pending = next(p for p in pods if p.status.phase == "Pending")
    assert pending.spec.node_name is None
    assert events[0].involved_object.name == pending.metadata.name
    assert "anti-affinity" in events[0].message
    assert "0/4 nodes are available" in events[0].message


@pytest.mark.cluster
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(("ttg-worker:latest", None, {}, "ErrImagePull"), id="latest-means-always"),
        pytest.param(("ttg-worker:v1.1.0", "Always", {}, "ErrImagePull"), id="always"),
        pytest.param(
            ("ttg-worker:v1.1.0", "Never", {IMAGE_MISSING: "true"}, "ErrImageNeverPull"),
            id="missing-with-never",
        ),
    ],
)
def test_image_that_cannot_be_had_keeps_the_pod_waiting(
    sim_cluster: Any, sim_namespace: str, case: tuple[str, str | None, dict[str, str], str]
) -> None:
    image, policy, annotations, reason = case
    batch, core = _apis(sim_cluster)
    job = _job("unpulled", 1, annotations=annotations)
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image
    container.pop("imagePullPolicy")
    if policy:
        container["imagePullPolicy"] = policy
    batch.create_namespaced_job(sim_namespace, job)

    def waiting() -> Any:
        pods = _pods(core, sim_namespace, "unpulled")
        statuses = pods[0].status.container_statuses if pods else None
        return statuses[0].state.waiting if statuses else None

    state = _wait_for(f"the container to wait with {reason}", waiting)
    assert state.reason == reason
    assert image in state.message
    (pod,) = _pods(core, sim_namespace, "unpulled")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name in sim_cluster.worker_names


@pytest.mark.cluster
def test_pod_marked_to_fail_ends_failed_with_its_exit_code(
    sim_cluster: Any, sim_namespace: str
) -> None:
    batch, core = _apis(sim_cluster)
    batch.create_namespaced_job(
        sim_namespace,
        _job("doomed", 1, labels={OUTCOME: "fail"}, annotations={EXIT_CODE: "3"}),
    )

    _wait_for(
        "Job doomed to be Failed", lambda: _condition(batch, sim_namespace, "doomed", "Failed")
    )

    (pod,) = _pods(core, sim_namespace, "doomed")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (3, "Error")


@pytest.mark.cluster
def test_failing_index_fails_alone_under_backoff_limit_per_index(
    sim_cluster: Any, sim_namespace: str
) -> None:
    batch, core = _apis(sim_cluster)
    job = _job(
        "partial",
        3,
        annotations={FAIL_INDEXES: "1"},
        backoff_limit_per_index=0,
    )
    batch.create_namespaced_job(sim_namespace, job)

    _wait_for(
        "Job partial to be Failed", lambda: _condition(batch, sim_namespace, "partial", "Failed")
    )

    status = batch.read_namespaced_job("partial", sim_namespace).status
    assert status.failed_indexes == "1"
    assert status.completed_indexes == "0,2"
    phases = {
        p.metadata.annotations[INDEX_ANNOTATION]: p.status.phase
        for p in _pods(core, sim_namespace, "partial")
    }
    assert phases == {"0": "Succeeded", "1": "Failed", "2": "Succeeded"}


@pytest.mark.cluster
def test_pod_log_reads_back_the_served_file(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    batch, core = _apis(sim_cluster)
    batch.create_namespaced_job(sim_namespace, _job("talker", 2, anti_affinity=False))
    _wait_for(
        "Job talker to be Complete", lambda: _condition(batch, sim_namespace, "talker", "Complete")
    )
    pods = sorted(p.metadata.name for p in _pods(core, sim_namespace, "talker"))
    output = tmp_path / "worker.log"
    text = '{"event": "start", "index": 0}\n{"event": "metric", "value": 1.5}\nplain text\n'
    output.write_text(text)

    served = sim_cluster.serve_logs(sim_namespace, pods[0], output)
    assert served == [pods[0]]
    raw = core.read_namespaced_pod_log(pods[0], sim_namespace, _preload_content=False).data
    assert raw.decode() == text

    served = sim_cluster.serve_logs(sim_namespace, "sim-test=talker", output, stream="stderr")
    assert sorted(served) == pods
    tail = core.read_namespaced_pod_log(
        pods[1], sim_namespace, tail_lines=1, _preload_content=False
    )
    assert tail.data.decode() == "plain text\n"


@pytest.mark.cluster
def test_following_a_pod_streams_appended_lines_until_it_finishes(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    batch, core = _apis(sim_cluster)
    batch.create_namespaced_job(
        sim_namespace, _job("chatty", 1, annotations={RUN_DURATION: "10m"}, anti_affinity=False)
    )
    (pod,) = _wait_for(
        "pod of Job chatty to be Running",
        lambda: [
            p.metadata.name
            for p in _pods(core, sim_namespace, "chatty")
            if p.status.phase == "Running"
        ],
    )
    first = tmp_path / "first.log"
    first.write_text("first line\n")
    sim_cluster.serve_logs(sim_namespace, pod, first)

    response = core.read_namespaced_pod_log(
        pod, sim_namespace, follow=True, _preload_content=False, _request_timeout=20
    )
    try:
        lines = iter(response)
        assert next(lines) == b"first line\n"
        sim_cluster.append_log(sim_namespace, pod, "second line\n")
        assert next(lines) == b"second line\n"

        # As a kubelet does, the stream ends once the container has exited.
        sim_cluster.finish_pod(sim_namespace, pod, 0)
        started = time.monotonic()
        assert list(lines) == []
        assert time.monotonic() - started < 10
    finally:
        response.release_conn()
    assert core.read_namespaced_pod(pod, sim_namespace).status.phase == "Succeeded"


_PLAYER = (
    "import os, sys; "
    "print('index', os.environ['JOB_COMPLETION_INDEX'], 'pod', os.environ['POD_NAME']); "
    "print('node', os.environ['NODE_NAME'], 'greeting', os.environ['GREETING']); "
    "print('local', os.environ['LOCAL_ONLY'], file=sys.stderr); "
    "sys.exit(int(os.environ['JOB_COMPLETION_INDEX']) * 3)"
)


@pytest.mark.cluster
def test_local_process_plays_a_pod_with_its_environment_output_and_exit_code(
    sim_cluster: Any, sim_namespace: str
) -> None:
    batch, core = _apis(sim_cluster)
    job = _job("played", 2, annotations={RUN_DURATION: "10m"}, backoff_limit_per_index=0)
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "GREETING", "value": "hello"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    batch.create_namespaced_job(sim_namespace, job)
    pods = _wait_for(
        "both pods of Job played to be Running",
        lambda: [
            p
            for p in _pods(core, sim_namespace, "played")
            if p.status.phase == "Running" and len(_pods(core, sim_namespace, "played")) == 2
        ],
    )
    by_index = {p.metadata.annotations[INDEX_ANNOTATION]: p for p in pods}

    for index, pod in sorted(by_index.items()):
        done = sim_cluster.run_in_pod(
            sim_namespace,
            pod.metadata.name,
            [sys.executable, "-c", _PLAYER],
            env={"LOCAL_ONLY": "yes"},
        )
        assert done.returncode == int(index) * 3
        expected = (
            f"index {index} pod {pod.metadata.name}\n"
            f"node {pod.spec.node_name} greeting hello\nlocal yes\n"
        )
        log = core.read_namespaced_pod_log(pod.metadata.name, sim_namespace, _preload_content=False)
        assert log.data.decode() == expected

    _wait_for(
        "Job played to be Failed", lambda: _condition(batch, sim_namespace, "played", "Failed")
    )
    final = {
        p.metadata.annotations[INDEX_ANNOTATION]: p for p in _pods(core, sim_namespace, "played")
    }
    assert final["0"].status.phase == "Succeeded"
    assert final["1"].status.phase == "Failed"
    assert final["1"].status.container_statuses[0].state.terminated.exit_code == 3


@pytest.mark.cluster
def test_status_reports_every_component_running_and_its_memory(sim_cluster: Any) -> None:
    status = sim_cluster.status()
    names = [c.name for c in status.components]
    assert names == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "kubelet-proxy",
    ]
    assert status.running
    assert status.api_ready
    assert all(c.rss_bytes > 0 for c in status.components)
    assert status.rss_bytes == sum(c.rss_bytes for c in status.components)


@pytest.mark.cluster
@pytest.mark.slow
def test_stopping_leaves_no_process_behind(sim_cluster: Any, tmp_path: Path) -> None:
    other = SimCluster("ttg-stopcheck", run_dir=tmp_path / "run", workers=1)
    other.start()
    pids = [c.pid for c in other.status().components]
    assert len(pids) == 6 and all(Path(f"/proc/{pid}").exists() for pid in pids)

    other.stop()

    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not other.status().components
    # The shared cluster is untouched.
    assert sim_cluster.status().running


_ORPHAN_SCRIPT = """
import sys
from ttg_ops.simcluster import SimCluster
cluster = SimCluster("ttg-orphancheck", run_dir=sys.argv[1], workers=1)
cluster.start()
print(" ".join(str(c.pid) for c in cluster.status().components), flush=True)
sys.stdin.read()
"""


@pytest.mark.cluster
@pytest.mark.slow
def test_killed_owner_takes_the_cluster_with_it(sim_cluster: Any, tmp_path: Path) -> None:
    # A test process killed with SIGKILL runs no finaliser and no atexit hook; the
    # components still die with it (parent-death signal).
    with subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path / "run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            pids = [int(p) for p in owner.stdout.readline().split()]
            assert len(pids) == 6 and all(Path(f"/proc/{pid}").exists() for pid in pids)
        finally:
            owner.kill()
            owner.wait(timeout=10)

    _wait_for(
        "the components of a killed owner to exit",
        lambda: not [pid for pid in pids if Path(f"/proc/{pid}").exists()],
        timeout=10,
    )


@pytest.mark.cluster
@pytest.mark.slow
def test_start_picks_new_ports_when_one_was_taken(
    sim_cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ttg_ops.simcluster import _cluster

    real = _cluster._free_ports
    calls: list[list[int]] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()

        def first_port_taken(count: int) -> list[int]:
            ports = real(count)
            if not calls:
                ports[0] = squatter.getsockname()[1]  # etcd's client port
            calls.append(ports)
            return ports

        monkeypatch.setattr(_cluster, "_free_ports", first_port_taken)
        other = SimCluster("ttg-portcheck", run_dir=tmp_path / "run", workers=1)
        with other:
            assert other.status().api_ready
    assert len(calls) == 2


@pytest.mark.cluster
def test_second_start_of_a_running_cluster_is_refused(sim_cluster: Any) -> None:
    from ttg_ops.simcluster import SimClusterError

    again = SimCluster(sim_cluster.name, run_dir=sim_cluster.run_dir)
    with pytest.raises(SimClusterError, match="already runs"):
        again.start()
    assert sim_cluster.status().running


def test_status_and_down_find_a_running_cluster_under_an_older_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull that changes a pin changes the cache key; the cluster started before stays visible."""
    import json
    import os

    from ttg_ops.simcluster import SimCluster, sim_home

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("TTG_SIM_HOME", raising=False)
    current = sim_home()
    older = current.parent / "v0.0.0-olderkey00" / "run" / "old-one"
    older.mkdir(parents=True)
    # A live process stands in for the cluster's etcd: this test's own.
    binary = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    state = {"components": [{"name": "etcd", "pid": os.getpid(), "binary": binary}]}
    (older / "state.json").write_text(json.dumps(state))

    cluster = SimCluster("old-one")
    assert cluster.run_dir == older
    assert [c.alive for c in cluster.status().components] == [True]
    # A cluster that is not running anywhere keeps the current cache folder.
    assert SimCluster("other").run_dir == current / "run" / "other"


@pytest.mark.cluster
def test_the_fixture_yields_once_the_worker_nodes_accept_pods(sim_cluster: Any) -> None:
    from kubernetes import client
    from ttg_ops.backends.kubernetes import schedulable_nodes

    nodes = client.CoreV1Api(sim_cluster.api_client()).list_node().items
    assert sorted(schedulable_nodes(nodes)) == sorted(sim_cluster.worker_names)
