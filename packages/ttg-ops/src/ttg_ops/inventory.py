"""What TTG created, found by label, across Docker, kind and Kubernetes.

Every object is selected through :mod:`ttg_ops.labels`, never by name: an
image called ``ttg-worker`` without TTG's labels is not TTG's. A kind cluster
is TTG's when it has the configured name *and* at least one of its nodes
carries TTG's node label (``ttg.io/project=distributed-compute``, set by
``k8s/kind-cluster.yaml``), as seen in the node's kubeadm configuration or
on the Kubernetes node object.

A layer that cannot be reached (no Docker daemon, no kube context, an API
server that does not answer within a short timeout) is skipped with a note;
the inventory never hangs and never raises for a missing layer.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from ttg_ops import labels
from ttg_ops.errors import ConfigError, PreflightError, TTGError
from ttg_ops.kind import KIND_CLUSTER_LABEL, KIND_ROLE_LABEL

SCOPE_ENV = "TTG_INVENTORY_SCOPE"
KIND_NODE_CONFIG = "/kind/kubeadm.conf"
TTG_NODE_LABEL = f"{labels.K8S_PROJECT}={labels.PROJECT}"
PROBE_TIMEOUT = 3.0
LIST_TIMEOUT = 15.0
DOCKER_TIMEOUT = 60
EVENT_LIMIT = 20
SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------
# Scope: extra labels that narrow every selection
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Extra ``key=value`` labels every selected object must also carry.

    Empty for users. Tests set it (through :data:`SCOPE_ENV` or directly) so
    that an inventory or a cleanup only ever sees the objects the test made,
    never a developer's real TTG images or Jobs. The same keys are used on
    Docker objects and Kubernetes objects, so they must be valid for both.
    """

    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse ``key=value[,key=value]``; an empty string is the empty scope."""
        pairs: list[tuple[str, str]] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep or not key or not labels.is_valid_label_value(value):
                raise ConfigError(
                    f"scope label {item!r} must be key=value with a valid label value "
                    f"(in {SCOPE_ENV}, comma-separated)"
                )
            pairs.append((key, value))
        return cls(tuple(pairs))

    @classmethod
    def from_env(cls) -> Scope:
        """The scope named by :data:`SCOPE_ENV`, empty when it is unset."""
        return cls.parse(os.environ.get(SCOPE_ENV, ""))

    def docker_filters(self, *extra: str) -> dict[str, list[str]]:
        """TTG's Docker selector plus the scope (and ``extra`` label filters)."""
        selector = labels.docker_selector()
        return {"label": [*selector["label"], *self._pairs(), *extra]}

    def docker_labels(self) -> list[str]:
        """The scope alone, as Docker label filters."""
        return self._pairs()

    def k8s_selector(self, base: str | None = None) -> str:
        """TTG's Kubernetes selector (or ``base``) plus the scope."""
        return ",".join([base or labels.k8s_selector(), *self._pairs()])

    def matches(self, object_labels: dict[str, str] | None) -> bool:
        """Whether an object's labels include every scope label."""
        found = object_labels or {}
        return all(found.get(key) == value for key, value in self.labels)

    def _pairs(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.labels]

    def __str__(self) -> str:
        return ",".join(self._pairs())


def is_ttg_docker(object_labels: dict[str, str] | None) -> bool:
    """Whether Docker labels mark an image or container as TTG's."""
    return (object_labels or {}).get(labels.DOCKER_PROJECT) == labels.PROJECT


def is_ttg_k8s(object_labels: dict[str, str] | None) -> bool:
    """Whether Kubernetes labels mark an object as TTG's."""
    return (object_labels or {}).get(labels.K8S_PROJECT) == labels.PROJECT


# ---------------------------------------------------------------------------
# What is found
# ---------------------------------------------------------------------------


@dataclass
class ImageInfo:
    id: str
    repository: str
    tags: list[str]
    version: str
    size: int
    created: str
    built_on: list[str] = field(default_factory=list)


@dataclass
class ContainerInfo:
    id: str
    name: str
    image: str
    image_id: str
    status: str
    run_id: str


@dataclass
class KindNode:
    name: str
    role: str
    status: str


@dataclass
class KindCluster:
    name: str
    context: str
    evidence: str
    nodes: list[KindNode] = field(default_factory=list)


@dataclass
class IgnoredCluster:
    name: str
    reason: str


@dataclass
class JobInfo:
    namespace: str
    name: str
    uid: str
    completions: str
    succeeded: int
    failed: int
    active: int
    status: str
    duration_seconds: float | None
    run_id: str


@dataclass
class PodInfo:
    namespace: str
    name: str
    uid: str
    node: str
    phase: str
    status: str
    job: str
    run_id: str


@dataclass
class EventInfo:
    namespace: str
    type: str
    reason: str
    object: str
    message: str
    count: int
    last_seen: str


@dataclass
class NamespaceInfo:
    name: str
    uid: str
    status: str


@dataclass
class DockerSection:
    available: bool
    note: str = ""
    images: list[ImageInfo] = field(default_factory=list)
    containers: list[ContainerInfo] = field(default_factory=list)
    # Untagged images of the Dockerfile's stages that builds leave behind:
    # cache for the next build, not TTG images (``ttg_ops.images.is_build_stage``).
    build_cache: list[ImageInfo] = field(default_factory=list)

    @property
    def build_cache_size(self) -> int:
        """Bytes of the build-stage images (each counted whole; they share base layers)."""
        return sum(image.size for image in self.build_cache)


@dataclass
class KindSection:
    available: bool
    cluster: str
    note: str = ""
    clusters: list[KindCluster] = field(default_factory=list)
    ignored: list[IgnoredCluster] = field(default_factory=list)


@dataclass
class KubeSection:
    context: str
    kubeconfig: str
    namespace: str | None
    reachable: bool
    note: str = ""
    jobs: list[JobInfo] = field(default_factory=list)
    pods: list[PodInfo] = field(default_factory=list)
    events: list[EventInfo] = field(default_factory=list)
    namespaces: list[NamespaceInfo] = field(default_factory=list)
    ttg_nodes: list[str] = field(default_factory=list)

    @property
    def distribution(self) -> dict[str, int]:
        """How many of TTG's pods each node holds (unscheduled pods under ``""``)."""
        return dict(sorted(Counter(pod.node for pod in self.pods).items()))


@dataclass
class Inventory:
    docker: DockerSection
    kind: KindSection
    kubernetes: KubeSection
    scope: Scope = field(default_factory=Scope)
    generated_at: str = ""

    def summary(self) -> dict[str, dict[str, int | None]]:
        """Counts per layer; ``None`` where the layer could not be inspected."""
        docker_ok = self.docker.available
        kube_ok = self.kubernetes.reachable
        return {
            "docker": {
                "images": len(self.docker.images) if docker_ok else None,
                "build_cache": len(self.docker.build_cache) if docker_ok else None,
                "containers": len(self.docker.containers) if docker_ok else None,
                "kind_clusters": len(self.kind.clusters) if self.kind.available else None,
            },
            "kubernetes": {
                "jobs": len(self.kubernetes.jobs) if kube_ok else None,
                "pods": len(self.kubernetes.pods) if kube_ok else None,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document described by ``docs/schemas/resources.schema.json``."""
        kube = asdict(self.kubernetes)
        kube["distribution"] = self.kubernetes.distribution
        return {
            "schema_version": SCHEMA_VERSION,
            "generated_at": self.generated_at,
            "scope": str(self.scope),
            "summary": self.summary(),
            "docker": asdict(self.docker),
            "kind": asdict(self.kind),
            "kubernetes": kube,
        }


# ---------------------------------------------------------------------------
# Docker and kind
# ---------------------------------------------------------------------------


def _docker_time(text: str) -> str:
    """Docker's nanosecond RFC 3339 time cut to whole seconds, in UTC."""
    if not text:
        return ""
    try:
        stamp = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
    except ValueError:
        return text
    return stamp.isoformat().replace("+00:00", "Z")


def _image_info(image: Any) -> ImageInfo:
    attrs = image.attrs
    tags = sorted(image.tags)
    repository = tags[0].rsplit(":", 1)[0] if tags else "<none>"
    return ImageInfo(
        id=image.id,
        repository=repository,
        tags=tags,
        version=(image.labels or {}).get(labels.DOCKER_VERSION, ""),
        size=int(attrs.get("Size") or 0),
        created=_docker_time(attrs.get("Created", "")),
    )


def _container_info(container: Any) -> ContainerInfo:
    attrs = container.attrs
    return ContainerInfo(
        id=container.id,
        name=container.name,
        image=attrs.get("Config", {}).get("Image", ""),
        image_id=attrs.get("Image", ""),
        status=container.status,
        run_id=(container.labels or {}).get(labels.DOCKER_RUN_ID, ""),
    )


def _images(client: Any, filters: dict[str, list[str]]) -> list[Any]:
    """Images matching ``filters``, skipping any that another process removes meanwhile."""
    from docker.errors import NotFound

    found = []
    for entry in client.api.images(filters=filters):
        try:
            found.append(client.images.get(entry["Id"]))
        except NotFound:
            logger.debug("The image {} was removed while it was being listed.", entry["Id"])
    return found


def docker_objects(client: Any, scope: Scope) -> DockerSection:
    """TTG's images and containers, selected by TTG's project label (and the scope).

    Untagged images of the worker Dockerfile's stages go to ``build_cache``,
    not ``images``: they are what the classic builder keeps between builds.
    """
    from ttg_ops.images import is_build_stage

    filters = scope.docker_filters()
    found = _images(client, filters)
    stages = {image.id for image in found if is_build_stage(image.labels, image.tags)}
    images = [_image_info(image) for image in found]
    # An image built on another TTG image (the worker on TTG's base, with the
    # classic builder) must be removed first; record which listed images are
    # among its ancestors, through the parent chain of every local image.
    parents = {entry["Id"]: entry.get("ParentId", "") for entry in client.api.images(all=True)}
    listed = {image.id for image in images}
    for image in images:
        parent, seen = parents.get(image.id, ""), 0
        while parent and seen < len(parents):
            if parent in listed:
                image.built_on.append(parent)
            parent, seen = parents.get(parent, ""), seen + 1
    # A kind node made from a TTG image inherits TTG's labels; nodes belong to
    # the kind layer, which deletes a cluster only when it is TTG's.
    containers = [
        _container_info(container)
        for container in client.containers.list(all=True, filters=filters, ignore_removed=True)
        if KIND_CLUSTER_LABEL not in (container.labels or {})
    ]
    images.sort(key=lambda image: (image.repository, image.created))
    containers.sort(key=lambda container: container.name)
    return DockerSection(
        available=True,
        images=[image for image in images if image.id not in stages],
        containers=containers,
        build_cache=[image for image in images if image.id in stages],
    )


def _node_config_has_ttg_label(container: Any) -> bool:
    """Whether a kind node's kubeadm configuration registers TTG's node label.

    kind passes the ``labels`` of a node in the cluster config to the kubelet
    through ``node-labels`` in ``/kind/kubeadm.conf``. The file is read with
    ``get_archive``, which works on stopped node containers too.
    """
    from docker.errors import APIError, NotFound

    try:
        stream, _stat = container.get_archive(KIND_NODE_CONFIG)
        data = b"".join(stream)
    except (NotFound, APIError):
        return False
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.next()
        handle = archive.extractfile(member) if member else None
        text = handle.read().decode("utf-8", "replace") if handle else ""
    return TTG_NODE_LABEL in text


def kind_clusters(
    client: Any, scope: Scope, cluster: str, ttg_nodes: list[str] | None = None
) -> KindSection:
    """kind clusters from their node containers; TTG's are listed, the others ignored.

    ``ttg_nodes`` are the names of Kubernetes nodes that carry TTG's node
    label, when the cluster's API server answered; they count as evidence
    like the kubeadm configuration does.
    """
    section = KindSection(available=True, cluster=cluster)
    filters = {"label": [KIND_CLUSTER_LABEL, *scope.docker_labels()]}
    by_cluster: dict[str, list[Any]] = {}
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        name = (container.labels or {}).get(KIND_CLUSTER_LABEL, "")
        by_cluster.setdefault(name, []).append(container)

    api_nodes = set(ttg_nodes or [])
    for name, containers in sorted(by_cluster.items()):
        if name != cluster:
            section.ignored.append(
                IgnoredCluster(name, f"its name is not the configured cluster name {cluster!r}")
            )
            continue
        evidence = ""
        if any(container.name in api_nodes for container in containers):
            evidence = f"a Kubernetes node carries {TTG_NODE_LABEL}"
        elif any(_node_config_has_ttg_label(container) for container in containers):
            evidence = f"a node's {KIND_NODE_CONFIG} registers {TTG_NODE_LABEL}"
        if not evidence:
            section.ignored.append(
                IgnoredCluster(name, f"none of its nodes carries TTG's node label {TTG_NODE_LABEL}")
            )
            continue
        nodes = [
            KindNode(
                name=container.name,
                role=(container.labels or {}).get(KIND_ROLE_LABEL, ""),
                status=container.status,
            )
            for container in sorted(containers, key=lambda c: c.name)
        ]
        section.clusters.append(KindCluster(name, f"kind-{name}", evidence, nodes))
    return section


# ---------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------


def _iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _job_status(job: Any) -> str:
    status = job.status
    for condition in status.conditions or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed"):
            return str(condition.type)
    if job.spec.suspend:
        return "Suspended"
    if status.active:
        return "Running"
    return "Pending"


def _job_info(job: Any, now: datetime) -> JobInfo:
    status = job.status
    completions = job.spec.completions
    succeeded = status.succeeded or 0
    duration: float | None = None
    if status.start_time is not None:
        end = status.completion_time or now
        duration = round((end - status.start_time).total_seconds(), 1)
    return JobInfo(
        namespace=job.metadata.namespace,
        name=job.metadata.name,
        uid=job.metadata.uid,
        completions=f"{succeeded}/{completions if completions is not None else '-'}",
        succeeded=succeeded,
        failed=status.failed or 0,
        active=status.active or 0,
        status=_job_status(job),
        duration_seconds=duration,
        run_id=(job.metadata.labels or {}).get(labels.K8S_RUN_ID, ""),
    )


def pod_status(pod: Any) -> str:
    """A short status like ``kubectl get pods`` shows: Completed, ErrImagePull, Running..."""
    if pod.metadata.deletion_timestamp is not None:
        return "Terminating"
    for state in (status.state for status in pod.status.container_statuses or []):
        if state is None:
            continue
        if state.waiting is not None and state.waiting.reason:
            return str(state.waiting.reason)
        if state.terminated is not None and state.terminated.reason:
            return str(state.terminated.reason)
    return str(pod.status.phase or "Unknown")


def _pod_info(pod: Any) -> PodInfo:
    owner = next((ref for ref in pod.metadata.owner_references or [] if ref.kind == "Job"), None)
    return PodInfo(
        namespace=pod.metadata.namespace,
        name=pod.metadata.name,
        uid=pod.metadata.uid,
        node=pod.spec.node_name or "",
        phase=str(pod.status.phase or "Unknown"),
        status=pod_status(pod),
        job=owner.name if owner is not None else "",
        run_id=(pod.metadata.labels or {}).get(labels.K8S_RUN_ID, ""),
    )


def _event_time(event: Any) -> datetime | None:
    series = getattr(event, "series", None)
    last_observed = getattr(series, "last_observed_time", None) if series else None
    return (
        event.last_timestamp
        or last_observed
        or event.event_time
        or event.first_timestamp
        or event.metadata.creation_timestamp
    )


def _events(
    core: Any, namespaces: set[str], uids: set[str], names: set[tuple[str, str, str]], limit: int
) -> list[EventInfo]:
    """The latest events whose involved object is one of TTG's, by uid or kind/name."""
    found: list[tuple[datetime, EventInfo]] = []
    floor = datetime.min.replace(tzinfo=UTC)
    for namespace in sorted(namespaces):
        listed = core.list_namespaced_event(namespace, _request_timeout=LIST_TIMEOUT)
        for event in listed.items:
            involved = event.involved_object
            key = (involved.kind or "", involved.namespace or namespace, involved.name or "")
            if (involved.uid or "") not in uids and key not in names:
                continue
            when = _event_time(event)
            found.append(
                (
                    when or floor,
                    EventInfo(
                        namespace=namespace,
                        type=event.type or "",
                        reason=event.reason or "",
                        object=f"{(involved.kind or '').lower()}/{involved.name}",
                        message=(event.message or "").strip(),
                        count=event.count or 1,
                        last_seen=_iso(when),
                    ),
                )
            )
    found.sort(key=lambda pair: pair[0])
    return [event for _when, event in found[-limit:]]


def probe(api: Any, context: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Ask the API server for its version; raise ``ClusterUnreachable`` within ``timeout``."""
    from kubernetes import client as k8s_client

    from ttg_ops import k8s

    # One connection attempt, not urllib3's default retries, so an address
    # that drops packets costs ``timeout`` seconds, not four times as much.
    api.rest_client.pool_manager.connection_pool_kw["retries"] = False
    try:
        with k8s.api_errors("asking the API server for its version", context):
            k8s_client.VersionApi(api).get_code(_request_timeout=(timeout, timeout))
    finally:
        api.rest_client.pool_manager.connection_pool_kw.pop("retries", None)


def kube_objects(
    context: str,
    *,
    kubeconfig: str | None = None,
    namespace: str | None = None,
    scope: Scope | None = None,
    timeout: float = PROBE_TIMEOUT,
    event_limit: int = EVENT_LIMIT,
) -> KubeSection:
    """TTG's Jobs, pods, events and namespaces in ``context``; skipped with a note if absent."""
    from kubernetes import client as k8s_client

    from ttg_ops import k8s

    section = KubeSection(
        context=context,
        kubeconfig=k8s.kubeconfig_path(kubeconfig),
        namespace=namespace,
        reachable=False,
    )
    try:
        api = k8s.api_client(context, kubeconfig)
        probe(api, context, timeout)
    except PreflightError as exc:
        section.note = f"skipped: {str(exc).splitlines()[0]}"
        logger.debug("The Kubernetes inventory of context {} is {}.", context, section.note)
        return section
    except TTGError as exc:
        section.note = f"skipped: the API server of {context!r} refused: {exc}"
        return section

    scope = scope or Scope()
    core: Any = k8s_client.CoreV1Api(api)
    batch: Any = k8s_client.BatchV1Api(api)
    selector = scope.k8s_selector()
    now = datetime.now(UTC)
    where = f"namespace {namespace}" if namespace else "all namespaces"
    try:
        with k8s.api_errors(f"listing TTG's Jobs and pods in {where}", context):
            if namespace:
                jobs = batch.list_namespaced_job(
                    namespace, label_selector=selector, _request_timeout=LIST_TIMEOUT
                ).items
                pods = core.list_namespaced_pod(
                    namespace, label_selector=selector, _request_timeout=LIST_TIMEOUT
                ).items
            else:
                jobs = batch.list_job_for_all_namespaces(
                    label_selector=selector, _request_timeout=LIST_TIMEOUT
                ).items
                pods = core.list_pod_for_all_namespaces(
                    label_selector=selector, _request_timeout=LIST_TIMEOUT
                ).items
    except k8s.Forbidden as exc:
        section.note = f"skipped: {exc}"
        return section
    section.reachable = True
    section.jobs = sorted(
        (_job_info(job, now) for job in jobs), key=lambda j: (j.namespace, j.name)
    )
    section.pods = sorted((_pod_info(pod) for pod in pods), key=lambda p: (p.namespace, p.name))

    # The rest is cluster-wide or secondary: a user allowed to list Jobs and
    # pods but not namespaces, nodes or events still gets the main listing.
    missing: list[str] = []

    def optional(what: str, call: Callable[[], list[Any]]) -> list[Any]:
        try:
            with k8s.api_errors(what, context):
                return call()
        except k8s.Forbidden:
            missing.append(what)
            return []

    created = scope.k8s_selector(f"{labels.K8S_CREATED_NAMESPACE}=true")
    namespaces = optional(
        "listing namespaces",
        lambda: core.list_namespace(label_selector=created, _request_timeout=LIST_TIMEOUT).items,
    )
    section.namespaces = [
        NamespaceInfo(
            name=item.metadata.name,
            uid=item.metadata.uid,
            status=str(item.status.phase if item.status else ""),
        )
        for item in sorted(namespaces, key=lambda n: n.metadata.name)
        if namespace is None or item.metadata.name == namespace
    ]
    nodes = optional(
        "listing nodes",
        lambda: core.list_node(label_selector=TTG_NODE_LABEL, _request_timeout=LIST_TIMEOUT).items,
    )
    section.ttg_nodes = sorted(node.metadata.name for node in nodes)
    uids = {job.uid for job in section.jobs} | {pod.uid for pod in section.pods}
    names = {("Job", job.namespace, job.name) for job in section.jobs} | {
        ("Pod", pod.namespace, pod.name) for pod in section.pods
    }
    spaces = {job.namespace for job in section.jobs} | {pod.namespace for pod in section.pods}
    section.events = optional(
        "listing events", lambda: _events(core, spaces, uids, names, event_limit)
    )
    if missing:
        section.note = f"not allowed: {', '.join(missing)} (403 Forbidden)"
    return section


# ---------------------------------------------------------------------------
# Everything
# ---------------------------------------------------------------------------


def collect(
    *,
    context: str | None = None,
    kubeconfig: str | None = None,
    namespace: str | None = None,
    cluster: str = labels.DEFAULT_CLUSTER,
    scope: Scope | None = None,
    timeout: float = PROBE_TIMEOUT,
    event_limit: int = EVENT_LIMIT,
) -> Inventory:
    """Inspect every layer; a layer that cannot be reached is skipped with a note."""
    from ttg_ops import dockerapi

    if timeout <= 0:
        raise ConfigError(f"timeout must be more than 0 seconds, got {timeout}")
    scope = scope if scope is not None else Scope.from_env()
    context = context or f"kind-{cluster}"
    started = time.monotonic()

    kube = kube_objects(
        context,
        kubeconfig=kubeconfig,
        namespace=namespace,
        scope=scope,
        timeout=timeout,
        event_limit=event_limit,
    )
    try:
        client = dockerapi.client(timeout=DOCKER_TIMEOUT)
    except PreflightError as exc:
        note = f"skipped: {str(exc).splitlines()[0]}"
        docker = DockerSection(available=False, note=note)
        kind = KindSection(available=False, cluster=cluster, note=note)
    else:
        try:
            docker = docker_objects(client, scope)
            ttg_nodes = kube.ttg_nodes if context == f"kind-{cluster}" else []
            kind = kind_clusters(client, scope, cluster, ttg_nodes)
        finally:
            client.close()

    logger.debug("Collected TTG's inventory in {:.2f} s.", time.monotonic() - started)
    return Inventory(
        docker=docker,
        kind=kind,
        kubernetes=kube,
        scope=scope,
        generated_at=_iso(datetime.now(UTC).replace(microsecond=0)),
    )


def summary_text(inventory: Inventory) -> str:
    """The seed's one-line summary, ``-`` for a layer that was skipped."""
    counts = inventory.summary()

    def show(value: int | None) -> str:
        return "-" if value is None else str(value)

    docker, kube = counts["docker"], counts["kubernetes"]
    return (
        f"Docker: TTG Images: {show(docker['images'])}, "
        f"TTG Containers: {show(docker['containers'])}, "
        f"Kind Clusters: {show(docker['kind_clusters'])}; "
        f"Kubernetes: TTG Jobs: {show(kube['jobs'])}, TTG Pods: {show(kube['pods'])}"
    )


# ---------------------------------------------------------------------------
# Display
# ---------------------------------------------------------------------------

_GOOD = ("Complete", "Completed", "Succeeded", "Running", "running", "Ready")
_BAD = ("Failed", "Error", "ErrImagePull", "ErrImageNeverPull", "ImagePullBackOff", "Warning")


# Off a terminal (a pipe, a log file) the output is this wide unless COLUMNS says otherwise.
PLAIN_WIDTH = 80
# Below this width the tables drop or shorten their low-value columns.
NARROW_WIDTH = 100


def make_console(stderr: bool = False) -> Any:
    """A rich console: coloured on a terminal unless ``NO_COLOR`` is set, plain otherwise.

    rich itself drops colour when ``NO_COLOR`` is set or the stream is not a
    terminal; off a terminal the width is :data:`PLAIN_WIDTH` (or ``COLUMNS``),
    and the tables shorten their columns to fit it.
    """
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else PLAIN_WIDTH
    return Console(file=stream, width=width, highlight=False)


def _styled(text: str) -> str:
    from rich.markup import escape

    if text.startswith(_BAD) or text in _BAD:
        return f"[red]{escape(text)}[/red]"
    if text in _GOOD:
        return f"[green]{escape(text)}[/green]"
    if text in ("Pending", "created", "ContainerCreating", "Terminating", "Suspended"):
        return f"[yellow]{escape(text)}[/yellow]"
    return escape(text)


def human_size(size: int) -> str:
    """Bytes as Docker shows them: 186MB, 4.1kB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if value >= 10 or unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{size}B"  # pragma: no cover - the loop always returns


def human_duration(seconds: float | None) -> str:
    """``9s``, ``3m12s``, ``1h04m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def short_time(stamp: str) -> str:
    """``2026-12-03T16:28:19Z`` as ``2026-12-03 16:28``, for narrow tables; else unchanged."""
    match = re.match(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})", stamp)
    return f"{match.group(1)} {match.group(2)}" if match else stamp


class _Printer:
    """Tables and notes on one console: rounded frames on a terminal, plain ones off it.

    ``narrow`` (a console under :data:`NARROW_WIDTH` columns, such as the
    80 of a pipe) makes the renderers drop or shorten low-value columns.
    """

    def __init__(self, console: Any) -> None:
        from rich import box

        self.console = console
        self.narrow = console.width < NARROW_WIDTH
        # Off a terminal: spaces between columns and a dashed rule under the
        # header, plain ASCII that greps and diffs well.
        plain = box.Box("    \n    \n -- \n    \n    \n -- \n    \n    \n", ascii=True)
        self.frame = box.ROUNDED if console.is_terminal else plain

    def table(self, title: str, *columns: str) -> Any:
        from rich.table import Table

        grid = Table(
            title=title,
            box=self.frame,
            title_justify="left",
            header_style="bold",
            pad_edge=self.console.is_terminal,
            collapse_padding=not self.console.is_terminal,
        )
        for index, column in enumerate(columns):
            # Narrow: the first column (a name, usually) stays whole; the others fold.
            grid.add_column(column, overflow="fold", no_wrap=self.narrow and index == 0)
        return grid

    def show(self, grid: Any, empty: str) -> None:
        self.console.print(grid if grid.row_count else f"  {empty}")

    def heading(self, text: str) -> None:
        self.console.print(f"[bold cyan]{text}[/bold cyan]")

    def note(self, text: str) -> None:
        from rich.padding import Padding
        from rich.text import Text

        # Indented as a block, so a note wrapped at the console width stays indented.
        self.console.print(Padding(Text(text, style="dim"), (0, 0, 0, 2), expand=False))


def _render_docker(out: _Printer, docker: DockerSection) -> None:
    from rich.markup import escape

    out.heading("Docker")
    if not docker.available:
        out.note(docker.note)
        return
    # Narrow: no ID column (an untagged image shows its id in the Tags column)
    # and the creation time to the minute.
    columns = ["Repository", "Tags", "Version", "Size", "Created"]
    images = out.table("TTG images", *columns, *([] if out.narrow else ["ID"]))
    for image in docker.images:
        short = image.id.removeprefix("sha256:")[:12]
        tags = ", ".join(tag.rsplit(":", 1)[1] for tag in image.tags)
        row = [
            escape(image.repository),
            escape(tags or (f"<none> {short}" if out.narrow else "<none>")),
            escape(image.version or "-"),
            human_size(image.size),
            short_time(image.created) if out.narrow else image.created,
        ]
        images.add_row(*row, *([] if out.narrow else [short]))
    out.show(images, "No TTG images.")
    if docker.build_cache:
        out.note(
            f"Build cache: {len(docker.build_cache)} untagged image(s) of the Dockerfile's "
            f"stages, {human_size(docker.build_cache_size)} (shared base layers counted in "
            "each). `inv build` removes those of earlier builds, `inv cleanup` all of them."
        )
    containers = out.table("TTG containers", "Name", "Image", "Status", "Run id")
    for container in docker.containers:
        containers.add_row(
            escape(container.name),
            escape(container.image),
            _styled(container.status),
            escape(container.run_id or "-"),
        )
    out.show(containers, "No TTG containers.")


def _render_kind(out: _Printer, kind: KindSection) -> None:
    from rich.markup import escape

    out.heading("kind")
    if not kind.available:
        out.note(kind.note)
        return
    nodes = out.table("TTG kind clusters", "Cluster", "Node", "Role", "Status")
    for cluster in kind.clusters:
        for node in cluster.nodes:
            nodes.add_row(escape(cluster.name), escape(node.name), node.role, _styled(node.status))
    out.show(nodes, f"No TTG kind cluster named {escape(kind.cluster)}.")
    for ignored in kind.ignored:
        out.note(f"kind cluster {ignored.name} is not TTG's: {ignored.reason}.")


def _render_kube(out: _Printer, kube: KubeSection) -> None:
    from rich.markup import escape

    where = f"namespace {kube.namespace}" if kube.namespace else "all namespaces"
    out.heading(
        f"Kubernetes[/bold cyan] [dim](context {escape(kube.context)}, {where})[/dim][bold cyan]"
    )
    if kube.note:
        out.note(kube.note)
    if not kube.reachable:
        return
    # Narrow: when every job and pod is in one namespace, name it in the title
    # instead of repeating it on each row.
    spaces = {job.namespace for job in kube.jobs} | {pod.namespace for pod in kube.pods}
    one_space = out.narrow and len(spaces) == 1
    suffix = f" in namespace {escape(next(iter(spaces)))}" if one_space else ""
    ns_column = [] if one_space else ["Namespace"]
    jobs = out.table(f"TTG jobs{suffix}", *ns_column, "Name", "Completions", "Status", "Duration")
    for job in kube.jobs:
        jobs.add_row(
            *([] if one_space else [escape(job.namespace)]),
            escape(job.name),
            job.completions,
            _styled(job.status),
            human_duration(job.duration_seconds),
        )
    out.show(jobs, "No TTG jobs.")
    pods = out.table(f"TTG pods{suffix}", *ns_column, "Name", "Node", "Status")
    for pod in kube.pods:
        pods.add_row(
            *([] if one_space else [escape(pod.namespace)]),
            escape(pod.name),
            escape(pod.node or "<unscheduled>"),
            _styled(pod.status),
        )
    out.show(pods, "No TTG pods.")
    if kube.pods:
        spread = out.table("Pod distribution by node", "Node", "Pods")
        for node, count in kube.distribution.items():
            spread.add_row(escape(node or "<unscheduled>"), str(count))
        out.show(spread, "")
    if out.narrow:
        _render_events_narrow(out, kube.events)
    else:
        events = out.table(
            "Recent events of TTG's objects", "Last seen", "Type", "Reason", "Object", "Message"
        )
        for event in kube.events:
            events.add_row(
                event.last_seen,
                _styled(event.type),
                escape(event.reason),
                escape(event.object),
                escape(event.message),
            )
        out.show(events, "No recent events of TTG's objects.")
    for space in kube.namespaces:
        out.note(f"Namespace {space.name} was created by TTG ({space.status}).")


def _render_events_narrow(out: _Printer, events: list[EventInfo]) -> None:
    """Events as a list: time, type, reason and object on one line, the message under it.

    Five columns do not fit 80; folded into them a message reads one word a line.
    """
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    if not events:
        out.note("No recent events of TTG's objects.")
        return
    out.console.print("Recent events of TTG's objects")
    for event in events:
        out.console.print(
            f" {short_time(event.last_seen)}  {_styled(event.type)}  "
            f"{escape(event.reason)}  {escape(event.object)}",
            overflow="fold",
        )
        out.console.print(Padding(Text(event.message), (0, 0, 0, 4), expand=False))


def render(inventory: Inventory, console: Any) -> None:
    """Print the inventory as tables, one section per layer, then the one-line summary."""
    from rich.markup import escape

    out = _Printer(console)
    _render_docker(out, inventory.docker)
    _render_kind(out, inventory.kind)
    _render_kube(out, inventory.kubernetes)
    console.print()
    text = summary_text(inventory)
    if out.narrow:
        # The Docker and Kubernetes halves on lines of their own, each whole.
        docker_part, _, kube_part = text.partition("; ")
        console.print(f"[bold]Summary[/bold]  {escape(docker_part)}", soft_wrap=True)
        console.print(f"         {escape(kube_part)}", soft_wrap=True)
    else:
        console.print(f"[bold]Summary[/bold]  {escape(text)}")
