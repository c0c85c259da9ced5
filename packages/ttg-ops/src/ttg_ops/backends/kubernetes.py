"""The Kubernetes backend: deploy a run as an Indexed Job, follow it live, collect its logs.

:func:`deploy` checks the cluster before creating anything (the named
context exists, enough schedulable nodes for the spread, the image is on the
kind nodes), renders and validates the Job (:mod:`ttg_ops.manifests`),
creates it, records the run under ``runs/<run-id>/`` and, with ``wait``,
follows it: pods and the Job are watched (a watch that expires is listed
again and resumed from the fresh resourceVersion), each started pod's log is
streamed as raw bytes and parsed by the one grammar into the live display,
and the wait ends on the Job's ``Complete`` or ``Failed`` condition. A pod
the scheduler cannot place or whose image cannot be pulled ends the wait at
once with the scheduler's or kubelet's reason.

:func:`collect` (``inv metrics``) reads every pod's log as raw bytes and its
timings, and builds the same report as a local run; :func:`print_logs`
(``inv logs``) prints them prefixed by worker index.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from ttg_ops import k8s, kind, labels, manifests
from ttg_ops.backends.base import FAILED, MISSING, PENDING, RUNNING, SUCCEEDED, WorkerState
from ttg_ops.errors import ConfigError, PreflightError, RunFailed, TTGError
from ttg_ops.results import load_json, spec_from_dict
from ttg_ops.spec import RunSpec

BACKEND_NAME = "kubernetes"
SPEC_FILE = "spec.json"
DEPLOY_FILE = "deploy.json"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# A watch is restarted this often even when nothing happens (the server ends it).
WATCH_SECONDS = 60
# After the Job ended, log streams get this long to deliver their last lines.
LOG_DRAIN_SECONDS = 10.0
# How often `inv logs --follow` looks for pods that started since.
LOGS_POLL_SECONDS = 2.0
IMAGE_ERRORS = frozenset(
    {"ErrImagePull", "ErrImageNeverPull", "ImagePullBackOff", "InvalidImageName"}
)
CONFIG_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError"})


class DeployFailed(RunFailed):
    """The Job cannot make progress (unschedulable pod, image not pullable) or failed."""


# ---------------------------------------------------------------------------
# Options, records and small helpers
# ---------------------------------------------------------------------------


@dataclass
class DeployOptions:
    """How and where to deploy; the defaults target the local kind cluster."""

    context: str = k8s.DEFAULT_CONTEXT
    kubeconfig: str | None = None
    namespace: str = labels.DEFAULT_NAMESPACE
    image: str | None = None
    pull_policy: str | None = None  # None: Never on kind, IfNotPresent elsewhere
    spread: str = "required"
    wait: bool = True
    timeout: float = 600.0
    results_pvc: str = ""
    node_selector: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    runs_root: Path = Path("runs")
    show_logs: bool = False

    def validate(self) -> None:
        manifests.check_name(self.namespace, "namespace")
        manifests.check_spread(self.spread)
        if self.pull_policy is not None:
            self.pull_policy = manifests.check_pull_policy(self.pull_policy)
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be more than 0 seconds, got {self.timeout:g}")
        if self.results_pvc:
            manifests.check_name(self.results_pvc, "results PVC name")
        if not self.context:
            raise ConfigError("context must name a kubeconfig context, such as kind-ttg-cluster")


@dataclass
class RunRecord:
    """Where a deployed run lives, written to ``runs/<run-id>/deploy.json``."""

    run_id: str
    context: str
    namespace: str
    job: str
    image: str
    pull_policy: str
    spread: str
    kubeconfig: str | None = None
    server_version: str = ""
    kind_cluster: str = ""
    results: str = ""
    results_dir: str = ""  # where the shards land on this machine (kind), else ""
    created_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClusterFacts:
    """What deploy learns about the cluster before creating anything."""

    version: tuple[int, int]
    git_version: str
    nodes: list[Any]
    schedulable: list[str]
    kind_cluster: str = ""


@dataclass
class FollowResult:
    """How the wait ended and what it saw."""

    outcome: str  # "Complete" or "Failed"
    message: str
    pods: dict[str, Any]
    lines_by_index: dict[int, list[str]]
    started: float
    first_pod_at: float | None = None
    ended: float = 0.0
    watch_restarts: int = 0
    watch_relists: int = 0


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def _batch(api: Any) -> Any:
    from kubernetes import client

    return client.BatchV1Api(api)


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def pod_index(pod: Any) -> int | None:
    """The completion index of a Job's pod (annotation, or label on newer servers)."""
    meta = pod.metadata
    for source in (meta.annotations or {}, meta.labels or {}):
        value = source.get(INDEX_ANNOTATION)
        if value is not None and str(value).isdigit():
            return int(value)
    return None


def server_version(api: Any, context: str) -> tuple[tuple[int, int], str]:
    """The API server's ``(major, minor)`` and git version."""
    from kubernetes import client

    with k8s.api_errors("reading the server version", context):
        info = client.VersionApi(api).get_code(_request_timeout=15)
    digits = "".join(ch for ch in str(info.minor) if ch.isdigit())
    major = "".join(ch for ch in str(info.major) if ch.isdigit())
    return (int(major or 1), int(digits or 0)), str(info.git_version)


def schedulable_nodes(nodes: list[Any], node_selector: dict[str, str] | None = None) -> list[str]:
    """Nodes a worker pod can land on: Ready, not cordoned, no NoSchedule/NoExecute taint."""
    names = []
    for node in nodes:
        if node.spec.unschedulable or kind.ready_text(node) != "Ready":
            continue
        if any(t.effect in ("NoSchedule", "NoExecute") for t in (node.spec.taints or [])):
            continue
        node_labels = node.metadata.labels or {}
        if node_selector and any(node_labels.get(k) != v for k, v in node_selector.items()):
            continue
        names.append(node.metadata.name)
    return sorted(names)


def kind_cluster_name(nodes: list[Any]) -> str:
    """The local kind cluster the nodes are, or ``""``.

    A node's ``kind://docker/<cluster>/<node>`` provider id names the
    cluster; it counts as kind only when this machine's Docker daemon runs
    those node containers (the image check and ``imagePullPolicy: Never``
    rely on that). Anything else, such as a remote or simulated cluster that
    copies kind's naming, is treated as any other cluster.
    """
    names = {}
    for node in nodes:
        provider = node.spec.provider_id or ""
        parts = provider.removeprefix("kind://").split("/")
        if provider.startswith("kind://") and len(parts) >= 3:
            names[node.metadata.name] = parts[1]
    clusters = set(names.values())
    if len(clusters) != 1:
        return ""
    (cluster,) = clusters
    try:
        containers = {c.name for c in kind.node_containers(cluster)}
    except PreflightError as exc:
        logger.debug("Not treating {} as a local kind cluster: {}", cluster, exc)
        return ""
    return cluster if set(names) <= containers else ""


def inspect_cluster(
    api: Any, context: str, node_selector: dict[str, str] | None = None
) -> ClusterFacts:
    """Server version, nodes, schedulable nodes and whether the cluster is a kind cluster."""
    version, git_version = server_version(api, context)
    with k8s.api_errors("listing nodes", context):
        nodes = _core(api).list_node(_request_timeout=15).items
    return ClusterFacts(
        version=version,
        git_version=git_version,
        nodes=nodes,
        schedulable=schedulable_nodes(nodes, node_selector),
        kind_cluster=kind_cluster_name(nodes),
    )


def ensure_namespace(api: Any, name: str, context: str) -> bool:
    """Create namespace ``name`` (labelled as TTG's) unless it exists; return whether it did."""
    core = _core(api)
    try:
        with k8s.api_errors(f"reading namespace {name}", context):
            core.read_namespace(name, _request_timeout=15)
        return False
    except k8s.NotFound:
        pass
    body = manifests.render_namespace(name)
    try:
        with k8s.api_errors(f"creating namespace {name}", context):
            core.create_namespace(body, _request_timeout=15)
    except k8s.Conflict:
        return False
    logger.info("Created namespace {} for TTG's Jobs.", name)
    return True


# ---------------------------------------------------------------------------
# Run records on disk
# ---------------------------------------------------------------------------


def write_record(runs_root: Path, spec: RunSpec, record: RunRecord) -> Path:
    """Write ``spec.json`` and ``deploy.json`` under ``runs_root/<run-id>/``."""
    run_dir = Path(runs_root) / spec.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n", "utf-8")
    (run_dir / DEPLOY_FILE).write_text(json.dumps(record.to_dict(), indent=2) + "\n", "utf-8")
    return run_dir


def find_run(runs_root: Path, run_id: str = "latest") -> tuple[RunSpec, RunRecord, Path]:
    """The spec, record and directory of a deployed run (``latest``: the last one deployed)."""
    runs_root = Path(runs_root)
    records = sorted(
        (p for p in runs_root.glob(f"*/{DEPLOY_FILE}") if not p.parent.is_symlink()),
        key=lambda p: load_json(p).get("created_at", 0.0),
    )
    if run_id in ("", "latest"):
        if not records:
            raise ConfigError(
                f"no cluster run is recorded under {runs_root}",
                hint="deploy one with `inv deploy`, or pass --run-id and --runs-dir",
            )
        path = records[-1]
    else:
        path = runs_root / run_id / DEPLOY_FILE
        if not path.is_file():
            recent = ", ".join(p.parent.name for p in records[-5:]) or "none"
            raise ConfigError(
                f"run {run_id!r} is not a recorded cluster run under {runs_root}; "
                f"recent cluster runs: {recent}"
            )
    run_dir = path.parent
    known = {f.name for f in fields(RunRecord)}
    record = RunRecord(**{k: v for k, v in load_json(path).items() if k in known})
    return spec_from_dict(load_json(run_dir / SPEC_FILE)), record, run_dir


# ---------------------------------------------------------------------------
# deploy
# ---------------------------------------------------------------------------


def plan(spec: RunSpec, options: DeployOptions, facts: ClusterFacts) -> tuple[dict[str, Any], str]:
    """The validated Job for ``spec`` on this cluster, and a warning to show (or ``""``)."""
    kind = bool(facts.kind_cluster)
    pull_policy = options.pull_policy or ("Never" if kind else "IfNotPresent")
    warning = ""
    if options.results_pvc:
        results = manifests.ResultsVolume("pvc", options.results_pvc)
    elif kind:
        results = manifests.ResultsVolume("hostPath")
    else:
        results = manifests.ResultsVolume("emptyDir")
        warning = (
            "results stay inside the pods (emptyDir) and are lost with them: name a "
            "ReadWriteMany PersistentVolumeClaim with --results-pvc to keep them"
        )
    job = manifests.render_job(
        spec,
        namespace=options.namespace,
        image=options.image or manifests.default_image(spec.version),
        pull_policy=pull_policy,
        anti_affinity=options.spread,
        results=results,
        server_version=facts.version,
        node_selector=options.node_selector or None,
        pod_annotations=options.pod_annotations or None,
    )
    manifests.validate(job, facts.version)
    return job, warning


def preflight(spec: RunSpec, options: DeployOptions, api: Any) -> ClusterFacts:
    """Everything that must hold before the Job is created; raise naming what does not."""
    facts = inspect_cluster(api, options.context, options.node_selector or None)
    available = len(facts.schedulable)
    if options.spread == "required" and spec.workers > available:
        tainted = len(facts.nodes) - available
        raise ConfigError(
            f"{spec.workers} workers need {spec.workers} schedulable nodes with --spread "
            f"required (one worker per node), but context {options.context!r} has "
            f"{available} ({', '.join(facts.schedulable) or 'none'}; {tainted} more are "
            "tainted, cordoned, not Ready or not selected)",
            hint=f"use --workers {max(available, 1)} or --spread preferred",
        )
    if available == 0:
        raise PreflightError(
            f"context {options.context!r} has no node a worker pod can be scheduled on",
            hint="check `kubectl get nodes` for taints, cordons and readiness",
        )
    if facts.kind_cluster:
        _check_kind_image(
            facts.kind_cluster, options.image or manifests.default_image(spec.version)
        )
    return facts


def _check_kind_image(cluster: str, image: str) -> None:
    held = kind.images_on_nodes(cluster, image)
    lacking = sorted(node for node, ok in held.items() if not ok)
    if lacking:
        raise PreflightError(
            f"the kind nodes {', '.join(lacking)} do not hold this build of {image}",
            hint="load it with `inv kind.load` (pods use imagePullPolicy Never on kind)",
        )


def _host_results_dir(cluster: str, run_id: str) -> str:
    """On kind, the host directory where the run's shards appear; ``""`` elsewhere."""
    if not cluster:
        return ""
    mount = kind.results_host_dir(cluster)
    return str(mount / run_id) if mount is not None else ""


@dataclass
class DeployResult:
    record: RunRecord
    run_dir: Path
    created_namespace: bool
    follow: FollowResult | None = None
    warning: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def deploy(
    spec: RunSpec,
    options: DeployOptions,
    console: Any = None,
) -> DeployResult:
    """Deploy ``spec`` as an Indexed Job; with ``options.wait`` follow it to the end."""
    from rich.console import Console

    from ttg_ops.runner import check_spec

    console = console or Console()
    options.validate()
    check_spec(spec, BACKEND_NAME)  # what `inv run` refuses up front, such as unknown options
    started = time.monotonic()
    api = k8s.api_client(options.context, options.kubeconfig)
    facts = preflight(spec, options, api)
    job, warning = plan(spec, options, facts)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")

    created_namespace = ensure_namespace(api, options.namespace, options.context)
    container = job["spec"]["template"]["spec"]["containers"][0]
    record = RunRecord(
        run_id=spec.run_id,
        context=options.context,
        kubeconfig=options.kubeconfig,
        namespace=options.namespace,
        job=job["metadata"]["name"],
        image=container["image"],
        pull_policy=container["imagePullPolicy"],
        spread=options.spread,
        server_version=facts.git_version,
        kind_cluster=facts.kind_cluster,
        results=job["metadata"]["annotations"][manifests.ANNOTATION_RESULTS],
        results_dir=_host_results_dir(facts.kind_cluster, spec.run_id),
        created_at=time.time(),
    )
    run_dir = write_record(options.runs_root, spec, record)
    with k8s.api_errors(f"creating Job {record.job}", options.context):
        _batch(api).create_namespaced_job(options.namespace, job, _request_timeout=30)
    created = time.monotonic()
    console.print(
        f"Created Job {record.job} in namespace {options.namespace} (context "
        f"{options.context}, {spec.workers} workers, image {record.image}, pull policy "
        f"{record.pull_policy}, spread {options.spread}).",
        highlight=False,
    )
    result = DeployResult(record, run_dir, created_namespace, warning=warning)
    result.timings = {"preflight_s": created - started}
    if not options.wait:
        console.print(
            f"Not waiting. Follow it with `inv logs --follow --run-id {spec.run_id}`; "
            f"collect it with `inv metrics --run-id {spec.run_id}`.",
            highlight=False,
        )
        return result
    try:
        result.follow = follow(
            api, spec, record, timeout=options.timeout, console=console, show_logs=options.show_logs
        )
    except KeyboardInterrupt:
        console.print(
            f"Stopped following; Job {record.job} keeps running. Follow it again with "
            f"`inv logs --follow --run-id {spec.run_id}`.",
            highlight=False,
        )
        raise
    result.timings["to_first_pod_s"] = (
        result.follow.first_pod_at - started if result.follow.first_pod_at is not None else -1.0
    )
    result.timings["to_end_s"] = result.follow.ended - started
    console.print(distribution_table(result.follow.pods, record.job))
    if result.follow.outcome != "Complete":
        raise DeployFailed(
            f"Job {record.job} failed: {result.follow.message}",
            hint=f"see `inv logs --run-id {spec.run_id}` and `inv metrics --run-id "
            f"{spec.run_id}`; rerun the failed indexes with `inv rerun --failed`",
        )
    console.print(
        f"Job {record.job} completed. Collect the report with `inv metrics --run-id "
        f"{spec.run_id}`.",
        highlight=False,
    )
    return result


# ---------------------------------------------------------------------------
# Watching
# ---------------------------------------------------------------------------


@dataclass
class WatchStats:
    """How often a watch was restarted (server timeout) or listed again (410 Gone)."""

    restarts: int = 0
    relists: int = 0


def watch_objects(
    list_fn: Callable[..., Any],
    *,
    deadline: float,
    stop: threading.Event,
    context: str = "",
    stats: WatchStats | None = None,
    watch_seconds: int = WATCH_SECONDS,
    resource_version: str | None = None,
    **kwargs: Any,
) -> Iterator[tuple[str, Any]]:
    """Yield ``(event type, object)`` from a list, then a watch that survives its expiry.

    Every object of the first list is yielded as ``ADDED``. A watch the
    server ends (its timeout) resumes from the last resourceVersion seen; a
    ``410 Gone`` (an expired resourceVersion, as an HTTP status or an
    ``ERROR`` event) lists again and resumes from the fresh version. Stops
    at ``deadline`` (``time.monotonic``) or when ``stop`` is set. Passing
    ``resource_version`` skips the first list (resume from a known point).
    """
    from kubernetes import watch

    stats = stats or WatchStats()
    version = resource_version
    what = getattr(list_fn, "__name__", "watch")
    while not stop.is_set() and time.monotonic() < deadline:
        if version is None:
            with k8s.api_errors(what, context):
                listed = list_fn(_request_timeout=30, **kwargs)
            version = listed.metadata.resource_version
            for item in listed.items:
                yield "ADDED", item
        remaining = int(deadline - time.monotonic())
        if remaining < 1:
            return
        stream = watch.Watch()
        try:
            with k8s.api_errors(what, context):
                for event in stream.stream(
                    list_fn,
                    resource_version=version,
                    timeout_seconds=min(watch_seconds, remaining),
                    allow_watch_bookmarks=True,
                    _request_timeout=min(watch_seconds, remaining) + 10,
                    **kwargs,
                ):
                    if stop.is_set():
                        stream.stop()
                        return
                    if event["type"] == "BOOKMARK":
                        version = stream.resource_version or version
                        continue
                    version = event["object"].metadata.resource_version or version
                    yield event["type"], event["object"]
        except k8s.Gone:
            logger.debug("The watch of {} expired (410 Gone); listing again.", what)
            stats.relists += 1
            version = None
            continue
        finally:
            stream.stop()
        stats.restarts += 1


class _Pump(threading.Thread):
    """Runs one watch or log stream and puts what it sees on the shared queue."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target

    def run(self) -> None:
        self._target_fn()


class _LogStream:
    """Streams one pod's container log as raw bytes, split into lines on the queue."""

    def __init__(
        self,
        core: Any,
        namespace: str,
        pod: str,
        index: int,
        out: queue.Queue[Any],
        *,
        read_timeout: float = 3600.0,
    ) -> None:
        self.core, self.namespace, self.pod, self.index, self.out = core, namespace, pod, index, out
        self.read_timeout = max(read_timeout, 1.0)
        self.response: Any = None
        self.done = threading.Event()
        self.thread = _Pump(f"logs-{pod}", self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.response = self.core.read_namespaced_pod_log(
                self.pod,
                self.namespace,
                container=manifests.CONTAINER_NAME,
                follow=True,
                _preload_content=False,
                _request_timeout=(10.0, self.read_timeout),
            )
            pending = b""
            # read1 returns what has arrived; read(n) would wait for n bytes or the end.
            while chunk := self.response.read1(65536):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    self.out.put(("line", self.index, raw.decode("utf-8", "replace")))
            if pending:
                self.out.put(("line", self.index, pending.decode("utf-8", "replace")))
        except Exception as exc:  # a log stream must never take the wait down
            if not self.done.is_set():
                status = getattr(exc, "status", None)
                reason = f"HTTP {status} {exc.reason}" if status else repr(exc)  # type: ignore[attr-defined]
                logger.debug("The log stream of pod {} ended: {}.", self.pod, reason)
        finally:
            self.done.set()
            if self.response is not None:
                self.response.close()
                self.response.release_conn()

    def close(self) -> None:
        """Stop the stream: shut its socket down so a blocked read returns at once.

        Closing the response from this thread would wait for the reader's lock;
        a socket shutdown wakes the reader, which then closes the response.
        """
        self.done.set()
        connection = getattr(self.response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                logger.debug("Shutting down the log stream of pod {} failed: {}.", self.pod, exc)
        self.thread.join(timeout=5)


def _container_started(pod: Any) -> bool:
    for status in pod.status.container_statuses or []:
        state = status.state
        if state is not None and (state.running is not None or state.terminated is not None):
            return True
    return pod.status.phase in ("Running", "Succeeded", "Failed")


def blocking_problem(pod: Any) -> str:
    """Why ``pod`` cannot make progress (unschedulable, image pull), or ``""``."""
    for cond in pod.status.conditions or []:
        if (
            cond.type == "PodScheduled"
            and cond.status == "False"
            and cond.reason == "Unschedulable"
        ):
            return (
                f"pod {pod.metadata.name} cannot be scheduled (FailedScheduling): "
                f"{cond.message or 'no reason given'}"
            )
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state is not None else None
        if waiting is not None and waiting.reason in IMAGE_ERRORS | CONFIG_ERRORS:
            node = pod.spec.node_name or "an unassigned node"
            return (
                f"pod {pod.metadata.name} on node {node} cannot start image {status.image}: "
                f"{waiting.reason}: {waiting.message or 'no message'}"
            )
    return ""


def _job_outcome(job: Any) -> tuple[str, str]:
    for cond in (job.status.conditions if job.status else None) or []:
        if cond.status != "True":
            continue
        if cond.type == "Complete":
            return "Complete", cond.message or "all indexes succeeded"
        if cond.type == "Failed":
            failed = job.status.failed_indexes or ""
            detail = f" (failed indexes {failed})" if failed else ""
            return "Failed", f"{cond.reason or 'Failed'}: {cond.message or ''}{detail}".strip()
    return "", ""


class _Follower:
    """The state of one wait: watches and log streams feed a queue drained by :meth:`run`."""

    def __init__(
        self,
        api: Any,
        spec: RunSpec,
        record: RunRecord,
        *,
        timeout: float,
        watch_seconds: int,
        show_logs: bool,
    ) -> None:
        from ttg_ops.follow import Tracker
        from ttg_ops.runner import shard_totals

        self.spec, self.record, self.timeout, self.show_logs = spec, record, timeout, show_logs
        self.core, self.batch = _core(api), _batch(api)
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.watch_seconds = watch_seconds
        self.out: queue.Queue[Any] = queue.Queue()
        self.stop = threading.Event()
        self.stats = WatchStats()
        self.pods: dict[str, Any] = {}
        self.streams: dict[str, _LogStream] = {}
        self.lines_by_index: dict[int, list[str]] = {i: [] for i in range(spec.workers)}
        self.tracker = Tracker(spec.workers, shard_totals(spec))
        self.outcome, self.message = "", ""
        self.first_pod_at: float | None = None
        self.drain_until: float | None = None

    def _pump(self, kind: str, list_fn: Callable[..., Any], **kwargs: Any) -> _Pump:
        def run() -> None:
            try:
                for event_type, obj in watch_objects(
                    list_fn,
                    deadline=self.deadline,
                    stop=self.stop,
                    context=self.record.context,
                    stats=self.stats,
                    watch_seconds=self.watch_seconds,
                    **kwargs,
                ):
                    self.out.put((kind, event_type, obj))
            except TTGError as exc:
                self.out.put(("error", exc, None))

        return _Pump(f"watch-{kind}", run)

    def start(self) -> None:
        namespace = self.record.namespace
        self._pump(
            "job",
            self.batch.list_namespaced_job,
            namespace=namespace,
            field_selector=f"metadata.name={self.record.job}",
        ).start()
        self._pump(
            "pod",
            self.core.list_namespaced_pod,
            namespace=namespace,
            label_selector=labels.k8s_selector(self.spec.run_id),
        ).start()

    def finished(self) -> bool:
        """Whether the wait is over; raise when the deadline passed first."""
        now = time.monotonic()
        if self.drain_until is not None:
            return now >= self.drain_until or all(s.done.is_set() for s in self.streams.values())
        if now >= self.deadline:
            raise DeployFailed(
                f"Job {self.record.job} did not finish within {self.timeout:.0f}s; "
                f"pods: {_pod_summary(self.pods) or 'none created'}",
                hint=f"it keeps running: `inv logs --follow --run-id {self.spec.run_id}`, "
                "or raise --timeout",
            )
        return False

    def on_line(self, index: int, text: str, view: Any) -> None:
        from ttg_logging.grammar import parse_line

        self.lines_by_index.setdefault(index, []).append(text)
        event = parse_line(text)
        if event is not None:
            self.tracker.update(index, event)
        if self.show_logs:
            view.log(index, text)

    def on_pod(self, event_type: str, pod: Any) -> None:
        if self.first_pod_at is None:
            self.first_pod_at = time.monotonic()
        if event_type == "DELETED":
            return
        name = pod.metadata.name
        self.pods[name] = pod
        problem = blocking_problem(pod)
        if problem:
            raise DeployFailed(problem, hint=_problem_hint(problem, self.record))
        index = pod_index(pod)
        if index is None:
            return
        if _container_started(pod) and name not in self.streams:
            self.tracker.seen(index)
            self.streams[name] = _LogStream(self.core, self.record.namespace, name, index, self.out)
        if pod.status.phase in ("Succeeded", "Failed"):
            self.tracker.finish(index, ok=pod.status.phase == "Succeeded")

    def on_job(self, event_type: str, job: Any, drain_seconds: float) -> None:
        if event_type == "DELETED" or self.drain_until is not None:
            return
        self.outcome, self.message = _job_outcome(job)
        if self.outcome:
            self.drain_until = time.monotonic() + drain_seconds

    def run(self, console: Any, drain_seconds: float) -> FollowResult:
        from ttg_ops.follow import make_view

        self.start()
        try:
            with make_view(self.tracker, console) as view:
                while not self.finished():
                    try:
                        kind, first, second = self.out.get(timeout=0.25)
                    except queue.Empty:
                        view.refresh()
                        continue
                    if kind == "error":
                        raise first
                    if kind == "line":
                        self.on_line(first, second, view)
                    elif kind == "pod":
                        self.on_pod(first, second)
                    elif kind == "job":
                        self.on_job(first, second, drain_seconds)
                    view.refresh()
        finally:
            self.stop.set()
            for stream in self.streams.values():
                stream.close()
        return FollowResult(
            outcome=self.outcome,
            message=self.message,
            pods=self.pods,
            lines_by_index=self.lines_by_index,
            started=self.started,
            first_pod_at=self.first_pod_at,
            ended=time.monotonic(),
            watch_restarts=self.stats.restarts,
            watch_relists=self.stats.relists,
        )


def follow(
    api: Any,
    spec: RunSpec,
    record: RunRecord,
    *,
    timeout: float = 600.0,
    console: Any = None,
    show_logs: bool = False,
    watch_seconds: int = WATCH_SECONDS,
    drain_seconds: float = LOG_DRAIN_SECONDS,
) -> FollowResult:
    """Follow the run's Job until its Complete or Failed condition, with a live display.

    Raises :class:`DeployFailed` at once when a pod cannot be scheduled or
    its image cannot be pulled, and when ``timeout`` passes first.
    """
    from rich.console import Console

    follower = _Follower(
        api, spec, record, timeout=timeout, watch_seconds=watch_seconds, show_logs=show_logs
    )
    return follower.run(console or Console(), drain_seconds)


def _problem_hint(problem: str, record: RunRecord) -> str:
    if "cannot be scheduled" in problem:
        return (
            "free or add nodes, use fewer --workers or --spread preferred; the Job "
            f"{record.job} is left in namespace {record.namespace} for `kubectl describe`"
        )
    if record.kind_cluster:
        return "load the image with `inv kind.load` (kind pods never pull it)"
    return "check --image and --pull-policy, and that the nodes can reach the registry"


def _pod_summary(pods: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} {pod.status.phase}" + (f" on {pod.spec.node_name}" if pod.spec.node_name else "")
        for name, pod in sorted(pods.items())
    )


# ---------------------------------------------------------------------------
# The pod distribution table
# ---------------------------------------------------------------------------


def _terminated(pod: Any) -> Any:
    for status in pod.status.container_statuses or []:
        if status.state is not None and status.state.terminated is not None:
            return status.state.terminated
    return None


def _started_at(pod: Any) -> float | None:
    for status in pod.status.container_statuses or []:
        state = status.state
        if state is None:
            continue
        if state.running is not None and state.running.started_at is not None:
            return _ts(state.running.started_at)
        if state.terminated is not None and state.terminated.started_at is not None:
            return _ts(state.terminated.started_at)
    return _ts(pod.status.start_time)


def _duration(pod: Any) -> str:
    terminated = _terminated(pod)
    start = _started_at(pod)
    end = _ts(terminated.finished_at) if terminated is not None else None
    if end is not None and start is not None:
        return f"{max(end - start, 0.0):.0f}s"
    if start is not None and pod.status.phase == "Running":
        return f"{time.time() - start:.0f}s"
    return "-"


_STATUS = {
    "Succeeded": "✅ Completed",
    "Failed": "❌ Failed",
    "Running": "▶️ Running",
    "Pending": "⏳ Pending",
}


def short_pod_name(name: str, job: str) -> str:
    """A pod name without its Job's name (printed once above): ``…-0-h87xp``."""
    return "…" + name[len(job) :] if job and name.startswith(job + "-") else name


def distribution_table(pods: dict[str, Any], job: str = "") -> Any:
    """The seed's Pod Distribution table: pod, node, status, duration, by worker index.

    With ``job``, the title names the Job once and each pod shows only what
    tells it apart (``…-<index>-<suffix>``), so the table reads at 80 columns.
    """
    from rich import box
    from rich.table import Table

    title = f"Pod Distribution of Job {job}" if job else "Pod Distribution"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("Pod", "Node", "Status", "Duration"):
        table.add_column(
            column,
            justify="right" if column == "Duration" else "left",
            no_wrap=True,
            overflow="ellipsis",
        )
    ordered = sorted(pods.values(), key=lambda p: (pod_index(p) or 0, p.metadata.name))
    for pod in ordered:
        table.add_row(
            short_pod_name(pod.metadata.name, job),
            pod.spec.node_name or "-",
            _STATUS.get(pod.status.phase or "", pod.status.phase or "-"),
            _duration(pod),
        )
    return table


# ---------------------------------------------------------------------------
# Collecting logs and timings: inv logs, inv metrics
# ---------------------------------------------------------------------------


def run_pods(api: Any, record: RunRecord) -> list[Any]:
    """Every pod of the run (retries included), sorted by index then creation."""
    with k8s.api_errors(f"listing the pods of run {record.run_id}", record.context):
        pods = (
            _core(api)
            .list_namespaced_pod(
                record.namespace,
                label_selector=labels.k8s_selector(record.run_id),
                _request_timeout=30,
            )
            .items
        )
    return sorted(
        pods, key=lambda p: (pod_index(p) or 0, _ts(p.metadata.creation_timestamp) or 0.0)
    )


def chosen_pods(pods: list[Any]) -> dict[int, Any]:
    """One pod per index: the one that succeeded, else the most recent attempt."""
    chosen: dict[int, Any] = {}
    for pod in pods:
        index = pod_index(pod)
        if index is None:
            continue
        current = chosen.get(index)
        if current is None or current.status.phase != "Succeeded":
            chosen[index] = pod
    return chosen


def read_log_bytes(api: Any, record: RunRecord, pod: str) -> bytes:
    """A pod's whole container log as raw bytes (never the client's altered text)."""
    with k8s.api_errors(f"reading the log of pod {pod}", record.context):
        response = _core(api).read_namespaced_pod_log(
            pod,
            record.namespace,
            container=manifests.CONTAINER_NAME,
            _preload_content=False,
            _request_timeout=60,
        )
    try:
        return bytes(response.data)
    finally:
        response.release_conn()


def worker_state(index: int, pod: Any) -> WorkerState:
    """A pod as the report sees a worker: state, node, exit code, timings."""
    terminated = _terminated(pod)
    phase = pod.status.phase or ""
    started = _container_started(pod)
    if not started:
        state = MISSING  # no log, no results: its shard is not accounted for
    elif phase == "Succeeded":
        state = SUCCEEDED
    elif phase == "Failed":
        state = FAILED
    elif phase == "Running":
        state = RUNNING
    else:
        state = PENDING
    message = ""
    if not started:
        problem = blocking_problem(pod)
        message = problem or f"pod {pod.metadata.name} never started ({phase or 'unknown'})"
    elif terminated is not None and terminated.reason not in (None, "Completed"):
        message = f"{terminated.reason}: {terminated.message or ''}".strip(": ")
    return WorkerState(
        index=index,
        state=state,
        name=pod.metadata.name,
        node=pod.spec.node_name or "",
        exit_code=terminated.exit_code if terminated is not None else None,
        created_at=_ts(pod.metadata.creation_timestamp),
        started_at=_started_at(pod) if started else None,
        finished_at=_ts(terminated.finished_at) if terminated is not None else None,
        message=message,
    )


@dataclass
class Collected:
    """What :func:`collect` read: the report, the pods and the lines that did not parse."""

    report: dict[str, Any]
    pods: dict[int, Any]
    never_started: list[int]
    unparsed: list[tuple[int, str, int, str]]  # index, pod, line number, text
    report_path: Path | None = None


def collect(
    spec: RunSpec,
    record: RunRecord,
    run_dir: Path,
    *,
    api: Any = None,
    write: bool = True,
) -> Collected:
    """Read every pod's log and timings and build the run's report (``inv metrics``)."""
    from ttg_ops.report import build_report, mark_latest, write_report

    api = api or k8s.api_client(record.context, record.kubeconfig)
    pods = chosen_pods(run_pods(api, record))
    states: list[WorkerState] = []
    lines_by_index: dict[int, list[str]] = {}
    never_started: list[int] = []
    for index in range(spec.workers):
        pod = pods.get(index)
        if pod is None:
            states.append(
                WorkerState(index=index, state=MISSING, message="no pod was created for it")
            )
            never_started.append(index)
            continue
        state = worker_state(index, pod)
        states.append(state)
        if state.started_at is None:
            never_started.append(index)
            continue
        try:
            raw = read_log_bytes(api, record, pod.metadata.name)
        except k8s.ApiError as exc:
            state.message = (state.message + "; " if state.message else "") + str(exc)
            continue
        lines_by_index[index] = raw.decode("utf-8", "replace").splitlines()

    job_created = _job_times(api, record)
    report = build_report(
        spec,
        BACKEND_NAME,
        states,
        lines_by_index,
        created_at=job_created[0],
        finished_at=job_created[1],
    )
    unparsed = [
        (w["index"], w.get("name") or "-", e["line_no"], e["text"])
        for w in report["workers"]
        for e in w.get("parse_errors", [])
    ]
    path = None
    if write:
        path = write_report(report, run_dir)
        mark_latest(run_dir)
        if _link_results(record, run_dir):
            from ttg_ops.report import attach_results
            from ttg_ops.results import merge_results

            try:
                attach_results(report, merge_results(run_dir))
            except TTGError as exc:
                logger.warning("The results of run {} were not merged: {}", record.run_id, exc)
            path = write_report(report, run_dir)
    return Collected(report, pods, never_started, unparsed, path)


def _link_results(record: RunRecord, run_dir: Path) -> bool:
    """Point ``run_dir/results`` at the shards on this machine (kind's host mount)."""
    from ttg_ops.results import RESULTS_DIR

    if not record.results_dir or not Path(record.results_dir).is_dir():
        return False
    link = run_dir / RESULTS_DIR
    if not link.exists() and not link.is_symlink():
        link.symlink_to(Path(record.results_dir).resolve(), target_is_directory=True)
    return True


def _job_times(api: Any, record: RunRecord) -> tuple[float | None, float | None]:
    try:
        with k8s.api_errors(f"reading Job {record.job}", record.context):
            job = _batch(api).read_namespaced_job(record.job, record.namespace, _request_timeout=15)
    except k8s.NotFound:
        return None, None
    return _ts(job.metadata.creation_timestamp), _ts(job.status.completion_time)


def print_logs(
    spec: RunSpec,
    record: RunRecord,
    *,
    follow_logs: bool = False,
    console: Any = None,
    api: Any = None,
    timeout: float = 3600.0,
) -> int:
    """Print every pod's log prefixed ``[worker-i]``; return how many lines were printed."""
    from rich.console import Console

    console = console or Console()
    api = api or k8s.api_client(record.context, record.kubeconfig)
    pods = run_pods(api, record)
    if not pods:
        raise ConfigError(
            f"run {record.run_id} has no pods in namespace {record.namespace} of context "
            f"{record.context} (deleted, or its TTL expired)"
        )
    printed = 0
    if not follow_logs:
        for pod in pods:
            index = pod_index(pod)
            if not _container_started(pod):
                console.print(
                    f"[worker-{index}] pod {pod.metadata.name} never started: "
                    f"{blocking_problem(pod) or pod.status.phase}",
                    highlight=False,
                    markup=False,
                )
                continue
            raw = read_log_bytes(api, record, pod.metadata.name)
            for line in raw.decode("utf-8", "replace").splitlines():
                console.print(f"[worker-{index}] {line}", highlight=False, markup=False)
                printed += 1
        return printed

    return _follow_logs(api, record, console, timeout)


def _follow_logs(api: Any, record: RunRecord, console: Any, timeout: float) -> int:
    """Stream every pod's log as its container starts, until all pods ended and drained.

    The pod list is read again every :data:`LOGS_POLL_SECONDS`, so pods that
    start later (or retries) are followed too; once every pod has ended, the
    streams get :data:`LOG_DRAIN_SECONDS` to deliver their last lines.
    """
    out: queue.Queue[Any] = queue.Queue()
    streams: dict[str, _LogStream] = {}
    deadline = time.monotonic() + timeout
    next_poll = 0.0
    drain_until: float | None = None
    printed = 0
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            if drain_until is None and now >= next_poll:
                next_poll = now + LOGS_POLL_SECONDS
                pods = run_pods(api, record)
                for pod in pods:
                    name = pod.metadata.name
                    if name not in streams and _container_started(pod):
                        streams[name] = _LogStream(
                            _core(api),
                            record.namespace,
                            name,
                            pod_index(pod) or 0,
                            out,
                            read_timeout=deadline - now,
                        )
                if pods and all(p.status.phase in ("Succeeded", "Failed") for p in pods):
                    drain_until = now + LOG_DRAIN_SECONDS
            if drain_until is not None and (
                now >= drain_until or all(s.done.is_set() for s in streams.values())
            ):
                break
            try:
                _, index, text = out.get(timeout=0.25)
            except queue.Empty:
                continue
            console.print(f"[worker-{index}] {text}", highlight=False, markup=False)
            printed += 1
    finally:
        for stream in streams.values():
            stream.close()
    while not out.empty():  # lines that arrived while the streams were closing
        _, index, text = out.get_nowait()
        console.print(f"[worker-{index}] {text}", highlight=False, markup=False)
        printed += 1
    return printed


def show_metrics(collected: Collected, console: Any = None) -> None:
    """Print the Performance Metrics and per-worker tables, then what could not be read."""
    from rich.console import Console
    from rich.markup import escape

    from ttg_ops.report import metrics_table, workers_table

    console = console or Console()
    report = collected.report
    console.print(metrics_table(report))
    # The Job's name is printed once; each pod shows what tells it apart (…-0-h87xp).
    job = manifests.job_name(str(report.get("run_id") or ""))
    console.print(f"Job {job}", highlight=False)
    shown = {
        **report,
        "workers": [
            {**w, "name": short_pod_name(str(w.get("name") or ""), job) or None}
            for w in report["workers"]
        ],
    }
    console.print(workers_table(shown, console))
    for worker in report["workers"]:
        if worker["index"] in collected.never_started:
            console.print(
                f"worker {worker['index']} ({escape(worker.get('name') or 'no pod')}) is "
                f"missing: {escape(worker.get('message') or 'it never started')}",
                highlight=False,
            )
    for index, pod, line_no, text in collected.unparsed:
        console.print(
            f"pod {escape(pod)} (worker {index}) line {line_no} could not be parsed: "
            f"{escape(text[:160])}",
            highlight=False,
        )
    if collected.report_path is not None:
        console.print(f"Wrote {collected.report_path}", highlight=False)
    console.print(f"Run {report['run_id']} {report['status']}.", highlight=False)


# ---------------------------------------------------------------------------
# Completing a cluster run: inv rerun --failed
# ---------------------------------------------------------------------------

_PVC_PREFIX = "PersistentVolumeClaim "


def is_cluster_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a deployed run (its ``deploy.json``)."""
    return (Path(run_dir) / DEPLOY_FILE).is_file()


def rerun_failed(
    run_dir: Path,
    *,
    whole_shards: bool = False,
    workers: int | None = None,
    show_logs: bool = False,
    timeout: float = 600.0,
    console: Any = None,
    pod_annotations: dict[str, str] | None = None,
) -> tuple[dict[str, Any] | None, Any]:
    """Complete the cluster run at ``run_dir`` with a follow-up Indexed Job.

    The follow-up covers exactly the parameters still missing or errored in
    the lineage (:func:`ttg_ops.results.rerun_spec`) and is deployed like its
    parent (context, kubeconfig, namespace, image, pull policy, spread and
    results volume from the parent's ``deploy.json``), followed to the end,
    collected, and merged with the lineage. Returns the follow-up's report
    (``None`` when nothing was left to do) and the lineage accounting.
    """
    from rich.console import Console

    from ttg_ops.report import load_report
    from ttg_ops.results import count_ranges, merge_results, parse_ranges, rerun_spec
    from ttg_ops.runner import merge_run

    console = console or Console()
    run_dir = Path(run_dir)
    _, parent, _ = find_run(run_dir.parent, run_dir.name)
    report = load_report(run_dir)
    merge = merge_results(run_dir)
    spec = rerun_spec(report, merge, whole_shards=whole_shards, workers=workers)
    if spec is None:
        console.print(f"Run {merge.run_id} is complete: nothing to rerun.", highlight=False)
        return None, merge
    logger.info(
        f"Rerunning {count_ranges(parse_ranges(spec.only))} parameters of cluster run "
        f"{report['run_id']} as run {spec.run_id}."
    )
    results = parent.results
    options = DeployOptions(
        context=parent.context,
        kubeconfig=parent.kubeconfig,
        namespace=parent.namespace,
        image=parent.image,
        pull_policy=parent.pull_policy,
        spread=parent.spread,
        wait=True,
        timeout=timeout,
        results_pvc=results[len(_PVC_PREFIX) :] if results.startswith(_PVC_PREFIX) else "",
        pod_annotations=dict(pod_annotations or {}),
        runs_root=run_dir.parent,
        show_logs=show_logs,
    )
    try:
        deploy(spec, options, console)
    except DeployFailed as exc:
        # The follow-up failed too: still collect it so the lineage accounts for it.
        console.print(f"Run {spec.run_id}: {exc}", highlight=False, markup=False)
    spec_, record, child_dir = find_run(run_dir.parent, spec.run_id)
    if not record.results_dir and parent.results_dir:
        # The lineage's shards sit side by side, one folder per run (kind's host mount).
        record.results_dir = str(Path(parent.results_dir).parent / spec.run_id)
        write_record(run_dir.parent, spec_, record)
    collected = collect(spec_, record, child_dir)
    _, merged = merge_run(child_dir)
    return collected.report, merged
