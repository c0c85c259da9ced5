"""The Kubernetes Job of a run: loaded from the shipped manifest, filled in, validated offline.

``k8s/manifests/parallel-jobs.yaml`` stays a working manifest on its own
(``kubectl apply -f``). :func:`render_job` loads it and replaces what belongs
to one run: the Job name (``ttg-computation-<run-id>``, so runs never collide
while an earlier Job is kept for its logs), labels and annotations, the one
worker environment from :func:`ttg_ops.spec.worker_env`, image and pull
policy, the spread of pods over nodes, the results volume and the retry
fields the server's version supports. :func:`validate` checks the result
against the Kubernetes OpenAPI schema in strict mode, so a misspelled field
is an error here instead of being silently dropped by the API server.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttg_ops import labels
from ttg_ops.errors import ConfigError
from ttg_ops.spec import ENV_NODE_NAME, ENV_OUTPUT_DIR, ENV_POD_NAME, RunSpec, worker_env

MANIFEST_ENV = "TTG_JOB_MANIFEST"
RESULTS_MOUNT = "/ttg-results"
CONTAINER_NAME = "worker"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
SPREADS = ("required", "preferred")
RESULTS_KINDS = ("hostPath", "pvc", "emptyDir")
# Finished Jobs and their pods are kept this long, so logs can be read later.
DEFAULT_TTL_SECONDS = 24 * 3600
# Retries per index when the server counts them per index, or for the whole Job.
DEFAULT_BACKOFF = 1
# Kubernetes versions whose schemas kubernetes-validate ships.
SCHEMA_MIN = (1, 25)
SCHEMA_MAX = (1, 37)
# backoffLimitPerIndex: beta and on by default from 1.29, GA in 1.33.
PER_INDEX_SINCE = (1, 29)

ANNOTATION_TASK = "ttg.io/task"
ANNOTATION_TASK_OPTIONS = "ttg.io/task-options"
ANNOTATION_PARAMS = "ttg.io/params"
ANNOTATION_WORKERS = "ttg.io/workers"
ANNOTATION_BATCH_SIZE = "ttg.io/batch-size"
ANNOTATION_SPACE = "ttg.io/space"
ANNOTATION_ONLY = "ttg.io/only"
ANNOTATION_CREATED_AT = "ttg.io/created-at"
ANNOTATION_RESULTS = "ttg.io/results"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 63


@dataclass(frozen=True)
class ResultsVolume:
    """Where the pods write their results shards.

    ``hostPath``: the kind workers' ``/ttg-results`` mount, which is a host
    directory, so results land on the laptop. ``pvc``: a PersistentVolumeClaim
    the user names (ReadWriteMany when pods run on several nodes).
    ``emptyDir``: nowhere durable; results stay in the pod and are lost with it.
    """

    kind: str = "hostPath"
    claim: str = ""

    def __post_init__(self) -> None:
        if self.kind not in RESULTS_KINDS:
            raise ConfigError(
                f"results volume {self.kind!r} is not one of {', '.join(RESULTS_KINDS)}"
            )
        if self.kind == "pvc":
            check_name(self.claim, "results PVC name")

    def volume(self) -> dict[str, Any]:
        """The pod ``volumes`` entry named ``results``."""
        if self.kind == "hostPath":
            return {"name": "results", "hostPath": {"path": RESULTS_MOUNT, "type": "Directory"}}
        if self.kind == "pvc":
            return {"name": "results", "persistentVolumeClaim": {"claimName": self.claim}}
        return {"name": "results", "emptyDir": {}}

    def describe(self) -> str:
        if self.kind == "hostPath":
            return f"hostPath {RESULTS_MOUNT} on each node"
        if self.kind == "pvc":
            return f"PersistentVolumeClaim {self.claim}"
        return "emptyDir (results stay in the pod)"


def check_name(name: str, what: str) -> str:
    """``name`` when it is a DNS-1123 label, else :class:`ConfigError` naming ``what``."""
    if not name or len(name) > _MAX_NAME or not _DNS_LABEL.match(name):
        raise ConfigError(
            f"{what} {name!r} is not valid: use lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {_MAX_NAME} characters"
        )
    return name


def check_pull_policy(policy: str) -> str:
    """The canonical spelling of ``policy`` (case-insensitive), or :class:`ConfigError`."""
    for allowed in PULL_POLICIES:
        if policy.lower() == allowed.lower():
            return allowed
    raise ConfigError(f"pull policy {policy!r} is not one of {', '.join(PULL_POLICIES)}")


def check_spread(spread: str) -> str:
    """``spread`` when it is ``required`` or ``preferred``, else :class:`ConfigError`."""
    if spread not in SPREADS:
        raise ConfigError(f"spread {spread!r} is not one of {', '.join(SPREADS)}")
    return spread


def job_name(run_id: str) -> str:
    """The Job's name for a run: the seed's ``ttg-computation`` plus the run id."""
    return f"{labels.JOB_NAME}-{run_id}"


def default_image(version: str) -> str:
    """The worker image the build tasks tag: ``ttg-worker:v<version>``."""
    return f"{labels.IMAGE_REPOSITORY}:v{version}"


def default_manifest_path() -> Path:
    """The shipped manifest: ``$TTG_JOB_MANIFEST``, else the repository's ``k8s/manifests``."""
    override = os.environ.get(MANIFEST_ENV)
    if override:
        return Path(override)
    in_repo = Path(__file__).resolve().parents[4] / "k8s" / "manifests" / "parallel-jobs.yaml"
    if in_repo.is_file():
        return in_repo
    return Path.cwd() / "k8s" / "manifests" / "parallel-jobs.yaml"


def load_manifest(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The manifest's documents by kind (``Namespace``, ``Job``)."""
    import yaml

    path = path or default_manifest_path()
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    except OSError as exc:
        raise ConfigError(
            f"the Job manifest {path} cannot be read: {exc.strerror}",
            hint=f"run from the project root or point {MANIFEST_ENV} at parallel-jobs.yaml",
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the Job manifest {path} is not valid YAML: {exc}") from exc
    by_kind = {str(doc.get("kind")): doc for doc in docs if isinstance(doc, dict)}
    if "Job" not in by_kind:
        raise ConfigError(f"the Job manifest {path} has no Job document")
    return by_kind


def supports_backoff_per_index(server_version: tuple[int, int]) -> bool:
    """Whether the server counts Job retries per index (``backoffLimitPerIndex``)."""
    return server_version >= PER_INDEX_SINCE


def render_namespace(name: str, manifest: Path | None = None) -> dict[str, Any]:
    """The Namespace TTG creates when ``name`` is missing, marked as created by TTG."""
    check_name(name, "namespace")
    docs = load_manifest(manifest)
    namespace = copy.deepcopy(
        docs.get("Namespace", {"apiVersion": "v1", "kind": "Namespace", "metadata": {}})
    )
    meta = namespace.setdefault("metadata", {})
    meta["name"] = name
    meta.setdefault("labels", {}).update(
        {labels.K8S_PROJECT: labels.PROJECT, labels.K8S_CREATED_NAMESPACE: "true"}
    )
    return namespace


def render_job(
    spec: RunSpec,
    *,
    namespace: str = labels.DEFAULT_NAMESPACE,
    image: str | None = None,
    pull_policy: str = "IfNotPresent",
    anti_affinity: str = "required",
    results: ResultsVolume | None = None,
    server_version: tuple[int, int] = SCHEMA_MAX,
    node_selector: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
    backoff: int = DEFAULT_BACKOFF,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    created_at: float | None = None,
    manifest: Path | None = None,
) -> dict[str, Any]:
    """The Indexed Job for ``spec``, as a dict ready for ``create_namespaced_job``.

    ``server_version`` picks the retry fields; ``node_selector`` and
    ``pod_annotations`` are copied to the pod template as given.
    """
    check_name(namespace, "namespace")
    pull_policy = check_pull_policy(pull_policy)
    check_spread(anti_affinity)
    if backoff < 0:
        raise ConfigError(f"backoff limit must be 0 or more, got {backoff}")
    if ttl_seconds < 0:
        raise ConfigError(f"TTL after finished must be 0 or more seconds, got {ttl_seconds}")
    results = results or ResultsVolume()
    image = image or default_image(spec.version)
    name = job_name(spec.run_id)
    check_name(name, "Job name")
    job = copy.deepcopy(load_manifest(manifest)["Job"])
    run_labels = labels.k8s_labels(spec.version, spec.run_id)
    stamp = created_at if created_at is not None else time.time()

    meta = job.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = namespace
    meta["labels"] = dict(run_labels)
    meta["annotations"] = _annotations(spec, results, stamp, meta.get("annotations", {}))

    job_spec = job.setdefault("spec", {})
    job_spec["completionMode"] = "Indexed"
    job_spec["completions"] = spec.workers
    job_spec["parallelism"] = spec.workers
    job_spec["ttlSecondsAfterFinished"] = ttl_seconds
    _set_retries(job_spec, spec.workers, backoff, server_version)

    template = job_spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    template_meta["labels"] = dict(run_labels)
    if pod_annotations:
        template_meta["annotations"] = dict(pod_annotations)
    pod = template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"
    pod["affinity"] = _anti_affinity(anti_affinity, spec.run_id)
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    else:
        pod.pop("nodeSelector", None)
    _set_volumes(pod, results)

    container = _worker_container(pod)
    container["image"] = image
    container["imagePullPolicy"] = pull_policy
    container["env"] = _env(spec)
    return job


def _set_retries(
    job_spec: dict[str, Any], workers: int, backoff: int, server_version: tuple[int, int]
) -> None:
    if supports_backoff_per_index(server_version):
        job_spec.pop("backoffLimit", None)
        job_spec["backoffLimitPerIndex"] = backoff
        # Never stop early: the good indexes finish and their logs are collected.
        job_spec["maxFailedIndexes"] = workers
        job_spec.setdefault("podFailurePolicy", _failure_policy())
        return
    # Without per-index retries the budget is shared: one retry per index on average.
    for key in ("backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy"):
        job_spec.pop(key, None)
    job_spec["backoffLimit"] = backoff * workers


def _set_volumes(pod: dict[str, Any], results: ResultsVolume) -> None:
    volumes = [v for v in pod.get("volumes", []) if v.get("name") != "results"]
    volumes.insert(0, results.volume())
    if not any(v.get("name") == "tmp" for v in volumes):
        volumes.append({"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}})
    pod["volumes"] = volumes
    container = _worker_container(pod)
    mounts = [m for m in container.get("volumeMounts", []) if m.get("name") != "results"]
    mounts.insert(0, {"name": "results", "mountPath": RESULTS_MOUNT})
    if not any(m.get("name") == "tmp" for m in mounts):
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
    container["volumeMounts"] = mounts


def output_dir(run_id: str) -> str:
    """Where the pods of ``run_id`` write their shards, inside the container."""
    return f"{RESULTS_MOUNT}/{run_id}"


def _annotations(
    spec: RunSpec, results: ResultsVolume, created_at: float, base: dict[str, str]
) -> dict[str, str]:
    annotations = {k: v for k, v in base.items() if not k.startswith("ttg.io/")}
    annotations.update(
        {
            ANNOTATION_TASK: spec.task,
            ANNOTATION_PARAMS: str(spec.params),
            ANNOTATION_WORKERS: str(spec.workers),
            ANNOTATION_BATCH_SIZE: str(spec.batch_size),
            ANNOTATION_SPACE: spec.space or "range",
            ANNOTATION_RESULTS: results.describe(),
            ANNOTATION_CREATED_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at)),
        }
    )
    if spec.task_options:
        annotations[ANNOTATION_TASK_OPTIONS] = json.dumps(spec.task_options, sort_keys=True)
    if spec.only:
        annotations[ANNOTATION_ONLY] = spec.only
    return annotations


def _failure_policy() -> dict[str, Any]:
    return {
        "rules": [
            {
                "action": "FailIndex",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "In",
                    "values": [2],
                },
            },
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
        ]
    }


def _anti_affinity(spread: str, run_id: str) -> dict[str, Any]:
    term = {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {labels.K8S_RUN_ID: run_id}},
    }
    if spread == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": term}
            ]
        }
    }


def _worker_container(pod: dict[str, Any]) -> dict[str, Any]:
    for container in pod.get("containers", []):
        if container.get("name") == CONTAINER_NAME:
            return container
    raise ConfigError(f"the Job manifest has no container named {CONTAINER_NAME!r}")


def _env(spec: RunSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": key, "value": value} for key, value in worker_env(spec).items()
    ]
    env.append({"name": ENV_OUTPUT_DIR, "value": output_dir(spec.run_id)})
    env.append({"name": ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    env.append({"name": ENV_NODE_NAME, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
    return env


def schema_version(server_version: tuple[int, int]) -> str:
    """The schema version to validate against: the server's, within what is shipped."""
    clamped = min(max(server_version, SCHEMA_MIN), SCHEMA_MAX)
    return f"{clamped[0]}.{clamped[1]}"


def validate(obj: dict[str, Any], server_version: tuple[int, int] = SCHEMA_MAX) -> str:
    """Check ``obj`` against the OpenAPI schema in strict mode; return the schema version used.

    Raises :class:`ConfigError` naming the object, the field path and the problem.
    """
    import kubernetes_validate

    version = schema_version(server_version)
    what = f"{obj.get('kind', '?')} {obj.get('metadata', {}).get('name', '?')}"
    try:
        return kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path) or "(top level)"
        raise ConfigError(
            f"the rendered {what} is not valid for Kubernetes {version}: {where}: {exc.message}"
        ) from exc
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ConfigError(f"the rendered {what} cannot be validated: {exc.message}") from exc
