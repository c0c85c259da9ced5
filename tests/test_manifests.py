"""The Job manifest: the shipped YAML, what render_job fills in, and strict offline validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ttg_ops import labels, manifests
from ttg_ops.errors import ConfigError
from ttg_ops.spec import RunSpec, worker_env

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "k8s" / "manifests" / "parallel-jobs.yaml"
PER_INDEX_VERSIONS = [(1, minor) for minor in range(29, 38)]
OLD_VERSIONS = [(1, minor) for minor in range(25, 29)]


def _ids(version: tuple[int, int]) -> str:
    return f"k8s-{version[0]}.{version[1]}"


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def _container(job: dict) -> dict:
    return _pod(job)["containers"][0]


@pytest.fixture
def spec() -> RunSpec:
    return RunSpec(workers=3, params=10_000, run_id="20260127-051607-ab12")


def test_shipped_manifest_has_the_seed_defaults() -> None:
    docs = list(yaml.safe_load_all(SHIPPED.read_text(encoding="utf-8")))
    kinds = [doc["kind"] for doc in docs]
    assert kinds == ["Namespace", "Job"]
    namespace, job = docs
    assert namespace["metadata"]["name"] == "ttg"
    assert job["metadata"]["name"] == "ttg-computation"
    assert job["metadata"]["namespace"] == "ttg"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["completionMode"] == "Indexed"
    container = _container(job)
    assert container["image"] == "ttg-worker:v1.1.0"
    assert container["imagePullPolicy"] == "Never"


@pytest.mark.parametrize("version", PER_INDEX_VERSIONS, ids=_ids)
def test_shipped_manifest_passes_strict_validation(version: tuple[int, int]) -> None:
    for doc in yaml.safe_load_all(SHIPPED.read_text(encoding="utf-8")):
        assert manifests.validate(doc, version) == f"{version[0]}.{version[1]}"


@pytest.mark.parametrize("version", PER_INDEX_VERSIONS + OLD_VERSIONS, ids=_ids)
def test_rendered_job_passes_strict_validation(spec: RunSpec, version: tuple[int, int]) -> None:
    for spread in manifests.SPREADS:
        for results in (
            manifests.ResultsVolume("hostPath"),
            manifests.ResultsVolume("pvc", "ttg-results"),
            manifests.ResultsVolume("emptyDir"),
        ):
            job = manifests.render_job(
                spec, anti_affinity=spread, results=results, server_version=version
            )
            assert manifests.validate(job, version) == f"{version[0]}.{version[1]}"
    namespace = manifests.render_namespace("sweeps")
    assert manifests.validate(namespace, version)


@pytest.mark.parametrize(
    ("where", "field"),
    [
        pytest.param(_container, "imagePullPolic", id="container"),
        pytest.param(lambda job: job["spec"], "completion", id="job-spec"),
        pytest.param(lambda job: _pod(job)["securityContext"], "runAsNonroot", id="pod-security"),
    ],
)
def test_misspelled_field_fails_validation(spec: RunSpec, where, field: str) -> None:
    job = manifests.render_job(spec)
    where(job)[field] = "x"
    with pytest.raises(ConfigError, match=field):
        manifests.validate(job, (1, 36))


def test_wrong_type_fails_validation_naming_the_path(spec: RunSpec) -> None:
    job = manifests.render_job(spec)
    job["spec"]["parallelism"] = "three"
    with pytest.raises(ConfigError, match=r"spec\.parallelism"):
        manifests.validate(job, (1, 33))


def test_rendered_job_carries_the_run(spec: RunSpec) -> None:
    job = manifests.render_job(spec, namespace="sweeps", image="reg.example/ttg:v2")
    assert job["metadata"]["name"] == f"ttg-computation-{spec.run_id}"
    assert job["metadata"]["namespace"] == "sweeps"
    expected = labels.k8s_labels(spec.version, spec.run_id)
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == spec.workers
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["ttlSecondsAfterFinished"] >= 24 * 3600
    assert _pod(job)["restartPolicy"] == "Never"
    assert _container(job)["image"] == "reg.example/ttg:v2"
    annotations = job["metadata"]["annotations"]
    assert annotations["ttg.io/task"] == "simulate"
    assert annotations["ttg.io/params"] == "10000"
    assert annotations["ttg.io/created-at"].endswith("Z")


def test_environment_is_the_one_contract(spec: RunSpec) -> None:
    env = _container(manifests.render_job(spec))["env"]
    values = {e["name"]: e["value"] for e in env if "value" in e}
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in env if "valueFrom" in e}
    assert {k: v for k, v in values.items() if k != "TTG_OUTPUT_DIR"} == worker_env(spec)
    assert values["TTG_OUTPUT_DIR"] == f"/ttg-results/{spec.run_id}"
    assert downward == {"POD_NAME": "metadata.name", "NODE_NAME": "spec.nodeName"}
    assert "JOB_COMPLETION_INDEX" not in values  # Kubernetes sets it per pod


def test_environment_carries_task_options_and_reruns() -> None:
    spec = RunSpec(
        workers=2,
        task="mypkg.tasks:score",
        task_options={"depth": 3},
        only="0:10,20:30",
        run_id="rerun-1",
    )
    job = manifests.render_job(spec)
    values = {e["name"]: e.get("value") for e in _container(job)["env"]}
    assert values["TTG_TASK_OPTIONS"] == '{"depth": 3}'
    assert values["TTG_ONLY"] == "0:10,20:30"
    assert job["metadata"]["annotations"]["ttg.io/only"] == "0:10,20:30"


@pytest.mark.parametrize(
    ("version", "per_index"), [((1, 28), False), ((1, 29), True), ((1, 33), True)], ids=str
)
def test_retries_are_per_index_where_the_server_supports_it(
    spec: RunSpec, version: tuple[int, int], per_index: bool
) -> None:
    job_spec = manifests.render_job(spec, server_version=version)["spec"]
    if per_index:
        assert job_spec["backoffLimitPerIndex"] == 1
        assert job_spec["maxFailedIndexes"] == spec.workers
        assert "backoffLimit" not in job_spec
        rules = job_spec["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "FailIndex"
        assert rules[0]["onExitCodes"]["values"] == [2]
    else:
        assert job_spec["backoffLimit"] == spec.workers
        assert "backoffLimitPerIndex" not in job_spec
        assert "podFailurePolicy" not in job_spec


def test_spread_required_and_preferred(spec: RunSpec) -> None:
    required = _pod(manifests.render_job(spec, anti_affinity="required"))["affinity"]
    terms = required["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == [
        {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"ttg.io/run-id": spec.run_id}},
        }
    ]
    preferred = _pod(manifests.render_job(spec, anti_affinity="preferred"))["affinity"]
    weighted = preferred["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert weighted[0]["podAffinityTerm"] == terms[0]
    with pytest.raises(ConfigError, match="spread 'sometimes' is not one of required, preferred"):
        manifests.render_job(spec, anti_affinity="sometimes")


def test_security_context_is_restricted(spec: RunSpec) -> None:
    job = manifests.render_job(spec)
    pod_sc = _pod(job)["securityContext"]
    sc = _container(job)["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert _pod(job)["automountServiceAccountToken"] is False
    mounts = {m["name"]: m["mountPath"] for m in _container(job)["volumeMounts"]}
    assert mounts == {"results": "/ttg-results", "tmp": "/tmp"}
    resources = _container(job)["resources"]
    assert set(resources) == {"requests", "limits"}


@pytest.mark.parametrize(
    ("given_policy", "expected"),
    [("never", "Never"), ("IfNotPresent", "IfNotPresent"), ("ALWAYS", "Always")],
)
def test_pull_policy_is_always_explicit(spec: RunSpec, given_policy: str, expected: str) -> None:
    job = manifests.render_job(spec, image="ttg-worker:latest", pull_policy=given_policy)
    assert _container(job)["imagePullPolicy"] == expected


def test_bad_pull_policy_names_the_allowed_values(spec: RunSpec) -> None:
    with pytest.raises(ConfigError, match="Always, IfNotPresent, Never"):
        manifests.render_job(spec, pull_policy="sometimes")


def test_results_volumes(spec: RunSpec) -> None:
    volumes = {
        kind: _pod(manifests.render_job(spec, results=manifests.ResultsVolume(kind, claim)))[
            "volumes"
        ][0]
        for kind, claim in (("hostPath", ""), ("pvc", "shared-results"), ("emptyDir", ""))
    }
    assert volumes["hostPath"]["hostPath"] == {"path": "/ttg-results", "type": "Directory"}
    assert volumes["pvc"]["persistentVolumeClaim"] == {"claimName": "shared-results"}
    assert volumes["emptyDir"]["emptyDir"] == {}
    with pytest.raises(ConfigError, match="results PVC name 'Bad_Name'"):
        manifests.ResultsVolume("pvc", "Bad_Name")


@pytest.mark.parametrize("name", ["", "UPPER", "-dash", "a" * 64, "under_score"])
def test_bad_namespace_is_refused(spec: RunSpec, name: str) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        manifests.render_job(spec, namespace=name)


def test_render_does_not_change_the_loaded_template(spec: RunSpec) -> None:
    before = copy.deepcopy(manifests.load_manifest())
    manifests.render_job(spec, pod_annotations={"a": "b"}, node_selector={"x": "y"})
    assert manifests.load_manifest() == before


def test_missing_manifest_says_where_to_look(tmp_path: Path, spec: RunSpec) -> None:
    with pytest.raises(ConfigError, match="cannot be read") as info:
        manifests.render_job(spec, manifest=tmp_path / "nope.yaml")
    assert "TTG_JOB_MANIFEST" in str(info.value)


_task_names = st.sampled_from(["simulate", "sleep", "mypkg.tasks:score", "a.b:c"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workers=st.integers(min_value=1, max_value=500),
    params=st.integers(min_value=1, max_value=10**9),
    batch=st.integers(min_value=1, max_value=10**6),
    task=_task_names,
    log_format=st.sampled_from(["text", "json"]),
    minor=st.integers(min_value=25, max_value=37),
    spread=st.sampled_from(manifests.SPREADS),
)
def test_any_valid_spec_renders_a_valid_job(  # noqa: PLR0917 - hypothesis passes each draw
    workers: int, params: int, batch: int, task: str, log_format: str, minor: int, spread: str
) -> None:
    spec = RunSpec(
        workers=workers,
        params=params,
        batch_size=batch,
        task=task,
        log_format=log_format,
        run_id="20260127-051607-ab12",
    )
    job = manifests.render_job(spec, anti_affinity=spread, server_version=(1, minor))
    manifests.validate(job, (1, minor))
    assert job["spec"]["completions"] == workers
