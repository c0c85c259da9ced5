"""`inv deploy` against the simulated cluster: a real API server, scheduler and Job controller.

kwok plays the kubelets: pods bound to a node go Running, then Succeeded (or
Failed when marked, see docs/TESTING.md). Nothing runs inside the pods, so
these tests check placement, the Job's lifecycle and TTG's wait; the tests in
test_metrics.py put real worker output into pod logs.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from rich.console import Console
from ttg_ops import k8s, labels, manifests
from ttg_ops.backends import kubernetes as kube
from ttg_ops.errors import ConfigError, PreflightError
from ttg_ops.simcluster import EXIT_CODE, FAIL_INDEXES, RUN_DURATION
from ttg_ops.spec import RunSpec

pytestmark = pytest.mark.cluster


def _console() -> Console:
    return Console(file=io.StringIO(), width=140, record=True)


def _options(sim: Any, namespace: str, runs: Path, **overrides: Any) -> kube.DeployOptions:
    settings: dict[str, Any] = {
        "context": sim.context,
        "kubeconfig": sim.kubeconfig,
        "namespace": namespace,
        "runs_root": runs,
        "timeout": 120.0,
    }
    settings.update(overrides)
    return kube.DeployOptions(**settings)


def _jobs(sim: Any, namespace: str) -> list[Any]:
    return client.BatchV1Api(sim.api_client()).list_namespaced_job(namespace).items


def test_deploy_spreads_three_workers_over_the_three_worker_nodes(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spec = RunSpec(workers=3, params=10_000)
    console = _console()
    result = kube.deploy(spec, _options(sim_cluster, sim_namespace, tmp_path), console)

    assert result.follow is not None
    assert result.follow.outcome == "Complete"
    pods = result.follow.pods.values()
    nodes = [pod.spec.node_name for pod in pods]
    assert sorted(nodes) == sorted(sim_cluster.worker_names)
    assert sim_cluster.control_plane_name not in nodes
    assert {kube.pod_index(pod) for pod in pods} == {0, 1, 2}

    output = console.export_text()
    job_name = manifests.job_name(spec.run_id)
    assert f"Pod Distribution of Job {job_name}" in output
    for pod in pods:  # each row keeps what tells the pods apart: …-<index>-<suffix>
        assert f"…{pod.metadata.name.removeprefix(job_name)}" in output
    assert "✅ Completed" in output
    # Results stay in the pods on a non-kind cluster: warned once, not also as a log line.
    assert output.count("emptyDir") == 1, output
    assert "emptyDir" not in capfd.readouterr().err

    (job,) = _jobs(sim_cluster, sim_namespace)
    assert job.metadata.name == f"ttg-computation-{spec.run_id}"
    assert job.metadata.labels[labels.K8S_RUN_ID] == spec.run_id
    container = job.spec.template.spec.containers[0]
    assert container.image_pull_policy == "IfNotPresent"
    assert job.spec.backoff_limit_per_index == 1
    assert (tmp_path / spec.run_id / "deploy.json").is_file()
    found_spec, record, _ = kube.find_run(tmp_path)
    assert found_spec == spec
    assert record.job == job.metadata.name
    assert record.context == sim_cluster.context


def test_more_workers_than_schedulable_nodes_is_refused_before_anything_is_created(
    sim_cluster: Any, tmp_path: Path
) -> None:
    namespace = "ttg-never-created"
    spec = RunSpec(workers=4)
    with pytest.raises(ConfigError) as info:
        kube.deploy(spec, _options(sim_cluster, namespace, tmp_path), _console())
    message = str(info.value)
    assert "4 workers need 4 schedulable nodes" in message
    assert "has 3 (ttg-cluster-worker, ttg-cluster-worker2, ttg-cluster-worker3" in message
    assert "--spread preferred" in message
    assert "--workers 3" in message
    core: Any = client.CoreV1Api(sim_cluster.api_client())
    with pytest.raises(client.ApiException) as missing:
        core.read_namespace(namespace)
    assert missing.value.status == 404
    assert not (tmp_path / spec.run_id).exists()


def test_preferred_spread_runs_more_workers_than_nodes(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    spec = RunSpec(workers=5, params=500)
    options = _options(sim_cluster, sim_namespace, tmp_path, spread="preferred")
    result = kube.deploy(spec, options, _console())
    assert result.follow is not None
    assert result.follow.outcome == "Complete"
    nodes = {pod.spec.node_name for pod in result.follow.pods.values()}
    assert nodes <= set(sim_cluster.worker_names)


def test_a_failing_index_ends_the_wait_on_the_failed_condition(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    spec = RunSpec(workers=3, params=900)
    options = _options(
        sim_cluster, sim_namespace, tmp_path, pod_annotations={FAIL_INDEXES: "1"}, timeout=90.0
    )
    began = time.monotonic()
    with pytest.raises(kube.DeployFailed, match=r"failed indexes 1\)") as info:
        kube.deploy(spec, options, _console())
    assert time.monotonic() - began < 60  # the condition ended the wait, not the timeout
    assert "inv rerun --failed" in (info.value.hint or "")
    (job,) = _jobs(sim_cluster, sim_namespace)
    assert job.status.failed_indexes == "1"
    assert job.status.completed_indexes == "0,2"


def test_exit_code_two_is_not_retried(sim_cluster: Any, sim_namespace: str, tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=100)
    annotations = {FAIL_INDEXES: "0", EXIT_CODE: "2"}
    options = _options(sim_cluster, sim_namespace, tmp_path, pod_annotations=annotations)
    with pytest.raises(kube.DeployFailed, match="failed indexes 0"):
        kube.deploy(spec, options, _console())
    pods = client.CoreV1Api(sim_cluster.api_client()).list_namespaced_pod(sim_namespace).items
    index_zero = [p for p in pods if kube.pod_index(p) == 0]
    assert len(index_zero) == 1  # podFailurePolicy FailIndex: a config error is not retried


def test_an_unschedulable_pod_fails_the_wait_fast_with_the_scheduler_message(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    spec = RunSpec(workers=2, params=100)
    api = sim_cluster.api_client()
    job = manifests.render_job(spec, namespace=sim_namespace, node_selector={"ttg.io/role": "gpu"})
    batch: Any = client.BatchV1Api(api)
    batch.create_namespaced_job(sim_namespace, job)
    record = kube.RunRecord(
        spec.run_id, sim_cluster.context, sim_namespace, job["metadata"]["name"],
        "ttg-worker:v1.1.0", "IfNotPresent", "required", kubeconfig=sim_cluster.kubeconfig,
    )  # fmt: skip
    began = time.monotonic()
    with pytest.raises(kube.DeployFailed) as info:
        kube.follow(api, spec, record, timeout=120, console=_console())
    assert time.monotonic() - began < 30
    message = str(info.value)
    assert "cannot be scheduled (FailedScheduling)" in message
    assert "node affinity/selector" in message  # the scheduler's own words

    # The report marks pods that never started as missing, with the reason.
    collected = kube.collect(spec, record, tmp_path / spec.run_id, api=api)
    assert collected.never_started == [0, 1]
    workers = collected.report["workers"]
    assert [w["state"] for w in workers] == ["missing", "missing"]
    assert "FailedScheduling" in workers[0]["message"]
    assert collected.report["status"] == "failed"


def test_an_image_that_cannot_be_pulled_fails_the_wait_naming_node_and_image(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    spec = RunSpec(workers=1, params=100)
    options = _options(
        sim_cluster,
        sim_namespace,
        tmp_path,
        wait=False,
        image="ttg-worker:v9.9.9",
        pull_policy="Never",
        pod_annotations={RUN_DURATION: "60s"},
    )
    result = kube.deploy(spec, options, _console())
    api = sim_cluster.api_client()
    core: Any = client.CoreV1Api(api)
    selector = labels.k8s_selector(spec.run_id)
    deadline = time.monotonic() + 30
    pods: list[Any] = []
    while time.monotonic() < deadline:
        pods = [p for p in core.list_namespaced_pod(sim_namespace, label_selector=selector).items]
        if pods and pods[0].status.phase == "Running":
            break
        time.sleep(0.2)
    (pod,) = pods
    # Play the kubelet that cannot find the image on the node (imagePullPolicy Never).
    core.patch_namespaced_pod_status(
        pod.metadata.name,
        sim_namespace,
        {
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "worker",
                        "image": "ttg-worker:v9.9.9",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {
                            "waiting": {
                                "reason": "ErrImageNeverPull",
                                "message": 'Container image "ttg-worker:v9.9.9" is not present '
                                "with pull policy of Never",
                            }
                        },
                    }
                ],
            }
        },
    )
    with pytest.raises(kube.DeployFailed) as info:
        kube.follow(api, spec, result.record, timeout=60, console=_console())
    message = str(info.value)
    assert f"on node {pod.spec.node_name}" in message
    assert "image ttg-worker:v9.9.9" in message
    assert "ErrImageNeverPull" in message


def _compact_etcd(sim: Any) -> None:
    """Compact the cluster's etcd to its current revision (through etcd's JSON gateway)."""
    state = json.loads((Path(sim.run_dir) / "state.json").read_text())
    base = f"http://127.0.0.1:{state['ports']['etcd']}/v3/kv"

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{base}/{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    revision = post("range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"]
    post("compaction", {"revision": revision, "physical": True})


def test_a_watch_resumes_after_410_gone_and_after_the_server_ends_it(
    sim_cluster: Any, sim_namespace: str
) -> None:
    # Events are watched straight from etcd (the API server keeps no watch cache for
    # them), so after a compaction a watch from an old resourceVersion is 410 Gone,
    # exactly as a long wait sees it. watch_objects is the same code for pods and Jobs.
    core: Any = client.CoreV1Api(sim_cluster.api_client())
    stop = threading.Event()
    stats = kube.WatchStats()
    seen: list[str] = []

    def event(name: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "x", "namespace": sim_namespace},
            "reason": "Test",
            "message": "a test event",
            "type": "Normal",
        }

    core.create_namespaced_event(sim_namespace, event("early"))
    _compact_etcd(sim_cluster)

    def create_later() -> None:
        time.sleep(2.5)  # after the first one-second watch has ended
        core.create_namespaced_event(sim_namespace, event("late"))

    creator = threading.Thread(target=create_later)
    creator.start()
    for event_type, obj in kube.watch_objects(
        core.list_namespaced_event,
        namespace=sim_namespace,
        deadline=time.monotonic() + 30,
        stop=stop,
        stats=stats,
        watch_seconds=1,
        resource_version="1",
        context=sim_cluster.context,
    ):
        seen.append(f"{event_type} {obj.metadata.name}")
        if obj.metadata.name == "late":
            stop.set()
    creator.join()
    assert stats.relists >= 1
    assert stats.restarts >= 1
    assert "ADDED early" in seen  # from the list made after the 410
    assert "ADDED late" in seen  # from a watch resumed after the server ended one


def test_deploy_works_on_a_cluster_whose_context_is_not_kind_like(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    config = yaml.safe_load(Path(sim_cluster.kubeconfig).read_text())
    for context in config["contexts"]:
        if context["name"] == sim_cluster.context:
            context["name"] = "lab-cluster"
    config["current-context"] = "lab-cluster"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))

    spec = RunSpec(workers=2, params=200)
    options = _options(
        sim_cluster, sim_namespace, tmp_path, context="lab-cluster", kubeconfig=str(kubeconfig)
    )
    result = kube.deploy(spec, options, _console())
    assert result.follow is not None
    assert result.follow.outcome == "Complete"
    assert result.record.context == "lab-cluster"


def test_a_context_that_is_not_in_the_kubeconfig_is_never_replaced_by_another(
    sim_cluster: Any, tmp_path: Path
) -> None:
    options = _options(sim_cluster, "ttg", tmp_path, context="kind-other")
    with pytest.raises(PreflightError) as info:
        kube.deploy(RunSpec(workers=1), options, _console())
    assert "kube context 'kind-other' is not in" in str(info.value)
    assert sim_cluster.context in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spread": "always"}, "spread 'always' is not one of required, preferred"),
        ({"pull_policy": "sometimes"}, "pull policy 'sometimes' is not one of"),
        ({"namespace": "Bad_NS"}, "namespace 'Bad_NS' is not valid"),
        ({"timeout": 0.0}, "timeout must be more than 0 seconds"),
        ({"results_pvc": "No_Such"}, "results PVC name 'No_Such' is not valid"),
    ],
    ids=["spread", "pull-policy", "namespace", "timeout", "pvc"],
)
def test_bad_options_are_named_before_the_cluster_is_contacted(
    overrides: dict[str, Any], message: str, tmp_path: Path
) -> None:
    options = kube.DeployOptions(
        context="kind-nowhere", kubeconfig=str(tmp_path / "none"), runs_root=tmp_path, **overrides
    )
    with pytest.raises(ConfigError, match=message):
        kube.deploy(RunSpec(workers=1), options, _console())


def test_results_pvc_is_mounted_and_no_warning_is_given(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    spec = RunSpec(workers=1, params=100)
    options = _options(sim_cluster, sim_namespace, tmp_path, results_pvc="shared", wait=False)
    result = kube.deploy(spec, options, _console())
    assert result.warning == ""
    (job,) = _jobs(sim_cluster, sim_namespace)
    volume = job.spec.template.spec.volumes[0]
    assert volume.persistent_volume_claim.claim_name == "shared"
    assert k8s.DEFAULT_CONTEXT == "kind-ttg-cluster"


@pytest.mark.docker
def test_on_kind_nodes_without_the_image_deploy_stops_before_creating_the_job(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    """The simulated nodes carry kind's provider ids; with node containers of those names
    running in Docker, deploy treats the cluster as kind and checks each node's image."""
    from ttg_ops import dockerapi, kind

    from tests.test_kind import STANDIN_BASES

    docker = dockerapi.client()
    local = {tag for image in docker.images.list() for tag in image.tags}
    base = next((b for b in STANDIN_BASES if b in local), "")
    if not base:
        pytest.skip("no image with a shell for the stand-in kind nodes (`inv images.base`)")
    if kind.node_containers("ttg-cluster", docker):
        pytest.skip("a real kind cluster named ttg-cluster exists on this machine")
    started = []
    try:
        for name in sim_cluster.node_names:
            role = "control-plane" if name == sim_cluster.control_plane_name else "worker"
            started.append(
                docker.containers.run(
                    base,
                    ["sleep", "infinity"],
                    name=name,
                    labels={kind.KIND_CLUSTER_LABEL: "ttg-cluster", kind.KIND_ROLE_LABEL: role},
                    detach=True,
                    network_mode="none",
                )
            )
        spec = RunSpec(workers=3)
        with pytest.raises(PreflightError) as info:
            options = _options(sim_cluster, sim_namespace, tmp_path, image=base)
            kube.deploy(spec, options, _console())
        message = str(info.value)
        assert (
            "the kind nodes ttg-cluster-worker, ttg-cluster-worker2, ttg-cluster-worker3" in message
        )
        assert f"do not hold this build of {base}" in message
        assert "inv kind.load" in message
        assert _jobs(sim_cluster, sim_namespace) == []
    finally:
        for container in started:
            container.remove(force=True)
        docker.close()
