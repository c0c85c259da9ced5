"""The local kind cluster: create, load the worker image, show status, delete.

kind runs each Kubernetes node as a Docker container. TTG drives the kind CLI
with argument lists (never shell strings) and uses the Docker SDK to look at
the node containers themselves: which role they have, and which image id
their containerd holds, so ``load`` only copies the image to the worker nodes
that lack exactly this build. Readiness is read from the Kubernetes API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from ttg_ops import dockerapi, k8s
from ttg_ops.errors import ConfigError, PreflightError, TTGError
from ttg_ops.labels import DEFAULT_CLUSTER

KIND_VERSION = "v0.33.0"
INSTALL_HINT = (
    f"install kind with `go install sigs.k8s.io/kind@{KIND_VERSION}` (it lands in "
    "$(go env GOPATH)/bin, usually ~/go/bin: put that directory on PATH)"
)
# Labels kind puts on its node containers.
KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"
KIND_ROLE_LABEL = "io.x-k8s.kind.role"
RESULTS_CONTAINER_PATH = "/ttg-results"
DEFAULT_RESULTS_DIR = Path("runs") / "kind-results"
DEFAULT_CONFIG = Path("k8s") / "kind-cluster.yaml"
_TAIL = 1500


class KindError(TTGError):
    """A kind command failed; the message names the command and ends with its output tail."""


@dataclass
class NodeLoad:
    """What ``load`` did on one node: ``loaded``, ``present``, ``skipped`` or ``failed``."""

    node: str
    role: str
    outcome: str
    detail: str = ""


@dataclass
class NodeStatus:
    """One row of ``kind.status``."""

    node: str
    role: str
    running: bool
    kubernetes_version: str = ""
    ready: str = "unknown"
    image: str = "unknown"


@dataclass
class ClusterStatus:
    name: str
    exists: bool
    image: str
    image_id: str = ""
    api_error: str = ""
    nodes: list[NodeStatus] = field(default_factory=list)


@dataclass
class CreateResult:
    name: str
    created: bool
    nodes: list[str]
    results_dir: Path
    context: str


# ---------------------------------------------------------------------------
# The kind CLI
# ---------------------------------------------------------------------------


def kind_binary() -> str:
    """The kind executable: on PATH, else in Go's bin directory, else :class:`PreflightError`."""
    found = shutil.which("kind")
    if found:
        return found
    candidates = []
    if os.environ.get("GOBIN"):
        candidates.append(Path(os.environ["GOBIN"]) / "kind")
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    candidates.extend(Path(p) / "bin" / "kind" for p in gopath.split(os.pathsep) if p)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise PreflightError("the kind CLI is not installed (not on PATH or in ~/go/bin)", INSTALL_HINT)


def run_kind(
    args: list[str], timeout: float = 60.0, binary: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``kind <args>``; raise :class:`KindError` with the output tail when it fails."""
    command = [binary or kind_binary(), *args]
    shown = " ".join(["kind", *args])
    logger.debug("Running {}.", shown)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise KindError(
            f"`{shown}` did not finish within {timeout:.0f}s",
            hint="check `docker ps` for the node containers and retry",
        ) from exc
    except OSError as exc:
        raise PreflightError(f"the kind CLI cannot be run: {exc}", INSTALL_HINT) from exc
    if done.returncode != 0:
        output = (done.stderr or done.stdout or "").strip()
        raise KindError(f"`{shown}` failed with exit code {done.returncode}:\n{output[-_TAIL:]}")
    return done


def preflight() -> str:
    """Check for the kind and docker CLIs and an answering daemon; return the kind binary."""
    binary = kind_binary()
    if shutil.which("docker") is None:
        raise PreflightError(
            "the docker CLI is not installed; kind runs its nodes through it",
            hint=dockerapi.INSTALL_HINT,
        )
    dockerapi.client(timeout=10).close()
    return binary


def version(binary: str | None = None) -> str:
    """kind's version string, e.g. ``v0.33.0``."""
    out = run_kind(["version"], timeout=30, binary=binary).stdout.split()
    return out[1] if len(out) > 1 else " ".join(out)


def clusters(binary: str | None = None) -> list[str]:
    """Names of the existing kind clusters (``kind get clusters``)."""
    done = run_kind(["get", "clusters"], timeout=30, binary=binary)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


@contextmanager
def _docker(given: Any | None = None) -> Iterator[Any]:
    """``given``, or a new Docker client that is closed afterwards."""
    if given is not None:
        yield given
        return
    client = dockerapi.client()
    try:
        yield client
    finally:
        client.close()


def node_containers(cluster: str, docker: Any | None = None) -> list[Any]:
    """The Docker containers that are the nodes of ``cluster``, sorted by name."""
    with _docker(docker) as api:
        found = api.containers.list(all=True, filters={"label": f"{KIND_CLUSTER_LABEL}={cluster}"})
    return sorted(found, key=lambda c: c.name)


def _role(container: Any) -> str:
    return str(container.labels.get(KIND_ROLE_LABEL, "unknown"))


# ---------------------------------------------------------------------------
# create
# ---------------------------------------------------------------------------


def render_config(
    config: Path, results_dir: Path, name: str = DEFAULT_CLUSTER, out_dir: Path | None = None
) -> Path:
    """Write ``config`` with ``name`` and an absolute results hostPath to a temporary file.

    kind resolves no relative paths: every extraMount at ``/ttg-results``
    gets ``results_dir`` made absolute.
    """
    import yaml

    try:
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"the kind config {config} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"the kind config {config} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "Cluster":
        raise ConfigError(f"the kind config {config} is not a kind `Cluster` document")
    doc["name"] = name
    absolute = str(results_dir.resolve())
    for node in doc.get("nodes") or []:
        for mount in node.get("extraMounts") or []:
            if mount.get("containerPath") == RESULTS_CONTAINER_PATH:
                mount["hostPath"] = absolute
    handle, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".yaml", dir=out_dir)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        yaml.safe_dump(doc, out, sort_keys=False)
    return Path(path)


def config_node_count(config: Path) -> int:
    """How many nodes ``config`` declares (kind's default is one)."""
    import yaml

    doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    return len(doc.get("nodes") or []) or 1


def create(
    name: str = DEFAULT_CLUSTER,
    *,
    config: Path = DEFAULT_CONFIG,
    results_dir: Path = DEFAULT_RESULTS_DIR,
    kubeconfig: str | None = None,
    node_image: str | None = None,
    timeout: float = 600.0,
    binary: str | None = None,
    progress: Callable[[str], None] = logger.info,
) -> CreateResult:
    """Create the cluster unless it exists, then wait until every node is Ready."""
    binary = binary or preflight()
    context = f"kind-{name}"
    if name in clusters(binary):
        nodes = [c.name for c in node_containers(name)]
        progress(f"The kind cluster {name} already exists ({len(nodes)} nodes); not recreating it.")
        return CreateResult(name, False, nodes, results_dir.resolve(), context)

    # Pods run as uid 10001 and must create their run directory in the shared
    # results mount; the sticky bit keeps them from removing each other's files.
    results_dir.mkdir(parents=True, exist_ok=True)
    results_dir.chmod(0o1777)
    rendered = render_config(config, results_dir, name)
    args = ["create", "cluster", "--name", name, "--config", str(rendered), "--wait", "0s"]
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    if node_image:
        args += ["--image", node_image]
    progress(f"Creating the kind cluster {name} from {config} (results in {results_dir}).")
    try:
        run_kind(args, timeout=timeout, binary=binary)
    except KindError as exc:
        if "failed to pull image" in str(exc) or "Ensuring node image" in str(exc):
            exc.hint = (
                "kind could not get its node image (kindest/node): without registry access, "
                "`docker load` a saved kindest/node image and name it with --node-image"
            )
        else:
            exc.hint = f"see the kind output above; `kind delete cluster --name {name}` cleans up"
        raise
    finally:
        rendered.unlink(missing_ok=True)
    nodes = [c.name for c in node_containers(name)]
    progress(f"Waiting for the {len(nodes)} nodes of {name} to be Ready.")
    wait_nodes_ready(context, kubeconfig, expected=config_node_count(config), timeout=timeout)
    return CreateResult(name, True, nodes, results_dir.resolve(), context)


def wait_nodes_ready(
    context: str,
    kubeconfig: str | None = None,
    expected: int = 1,
    timeout: float = 300.0,
    interval: float = 2.0,
) -> list[str]:
    """Poll the API until ``expected`` nodes exist and all are Ready; return their names."""
    from kubernetes import client

    api: Any = client.CoreV1Api(k8s.api_client(context, kubeconfig))
    deadline = time.monotonic() + timeout
    state = "no answer yet"
    while True:
        try:
            with k8s.api_errors("listing nodes", context):
                nodes = api.list_node(_request_timeout=10).items
        except k8s.ClusterUnreachable as exc:
            state = str(exc).splitlines()[0]
        else:
            not_ready = [
                f"{n.metadata.name} ({ready_text(n)})" for n in nodes if ready_text(n) != "Ready"
            ]
            if len(nodes) >= expected and not not_ready:
                return sorted(n.metadata.name for n in nodes)
            state = f"{len(nodes)}/{expected} nodes registered"
            if not_ready:
                state += ", not Ready: " + ", ".join(not_ready)
        if time.monotonic() >= deadline:
            raise PreflightError(
                f"the nodes of context {context!r} were not all Ready after "
                f"{timeout:.0f}s: {state}",
                hint="look at `kubectl --context "
                f"{context} describe nodes` and `docker logs <node>`",
            )
        time.sleep(interval)


def ready_text(node: Any) -> str:
    """``Ready``, or ``NotReady: <reason> <message>`` from the node's Ready condition."""
    for cond in node.status.conditions or []:
        if cond.type == "Ready":
            if cond.status == "True":
                return "Ready"
            return f"NotReady: {cond.reason or ''} {cond.message or ''}".strip()
    return "NotReady: no Ready condition yet"


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------


def node_image_id(container: Any, image: str) -> str:
    """The id of ``image`` in the node's containerd, or ``""`` when the node lacks it."""
    result = container.exec_run(["crictl", "inspecti", "--output", "json", image])
    if result.exit_code != 0:
        return ""
    try:
        data = json.loads(result.output.decode("utf-8", "replace"))
    except ValueError:
        return ""
    return str((data.get("status") or {}).get("id") or "")


def local_image_id(image: str, docker: Any | None = None) -> str:
    """The id of ``image`` in the local Docker daemon, or :class:`PreflightError`."""
    from docker.errors import ImageNotFound

    try:
        with _docker(docker) as api:
            return str(api.images.get(image).id)
    except ImageNotFound as exc:
        raise PreflightError(
            f"the image {image} is not in the local Docker daemon",
            hint="build it first with `inv build`",
        ) from exc


def load(
    image: str,
    cluster: str = DEFAULT_CLUSTER,
    timeout: float = 600.0,
    binary: str | None = None,
) -> list[NodeLoad]:
    """Load ``image`` into the worker nodes of ``cluster`` that do not hold this exact build."""
    binary = binary or preflight()
    with _docker() as docker:
        return _load(image, cluster, timeout, binary, docker)


def _load(image: str, cluster: str, timeout: float, binary: str, docker: Any) -> list[NodeLoad]:
    wanted = local_image_id(image, docker)
    containers = node_containers(cluster, docker)
    if not containers:
        raise PreflightError(
            f"the kind cluster {cluster} does not exist", hint="create it with `inv kind.create`"
        )

    outcomes: list[NodeLoad] = []
    missing: list[Any] = []
    for container in containers:
        role = _role(container)
        if role != "worker":
            outcomes.append(
                NodeLoad(container.name, role, "skipped", "control plane is tainted, runs no pods")
            )
        elif container.status != "running":
            outcomes.append(
                NodeLoad(container.name, role, "failed", f"node container is {container.status}")
            )
        elif node_image_id(container, image) == wanted:
            outcomes.append(NodeLoad(container.name, role, "present", "already present"))
        else:
            missing.append(container)
    if missing:
        names = [c.name for c in missing]
        args = ["load", "docker-image", image, "--name", cluster, "--nodes", ",".join(names)]
        logger.info("Loading {} into {}.", image, ", ".join(names))
        run_kind(args, timeout=timeout, binary=binary)
        for container in missing:
            got = node_image_id(container, image)
            if got == wanted:
                outcomes.append(NodeLoad(container.name, "worker", "loaded", "Image loaded"))
            else:
                detail = f"node holds {got or 'no image'} instead of {wanted}"
                outcomes.append(NodeLoad(container.name, "worker", "failed", detail))
    outcomes.sort(key=lambda o: o.node)
    failed = [o for o in outcomes if o.outcome == "failed"]
    if failed:
        raise KindError(
            f"{image} could not be loaded into "
            + ", ".join(f"{o.node} ({o.detail})" for o in failed)
        )
    return outcomes


def load_lines(outcomes: list[NodeLoad]) -> list[str]:
    """The seed's per-node lines: ``✓ ttg-cluster-worker:      Image loaded``."""
    width = max((len(o.node) for o in outcomes), default=0) + 2
    marks = {"loaded": "✓", "present": "=", "skipped": "-", "failed": "✗"}
    text = {"loaded": "Image loaded", "present": "Image already present"}
    return [
        f"{marks[o.outcome]} {o.node + ':':<{width}}{text.get(o.outcome, o.detail)}"
        for o in outcomes
    ]


def results_host_dir(cluster: str, docker: Any | None = None) -> Path | None:
    """The host directory the worker nodes of ``cluster`` mount at ``/ttg-results``, if any."""
    for container in node_containers(cluster, docker):
        if _role(container) != "worker":
            continue
        for mount in container.attrs.get("Mounts") or []:
            if mount.get("Destination") == RESULTS_CONTAINER_PATH and mount.get("Source"):
                return Path(mount["Source"])
    return None


def images_on_nodes(cluster: str, image: str, docker: Any | None = None) -> dict[str, bool]:
    """For each running worker node of ``cluster``: whether it holds this build of ``image``."""
    with _docker(docker) as api:
        wanted = local_image_id(image, api)
        return {
            c.name: node_image_id(c, image) == wanted
            for c in node_containers(cluster, api)
            if _role(c) == "worker" and c.status == "running"
        }


# ---------------------------------------------------------------------------
# status and delete
# ---------------------------------------------------------------------------


def status(
    image: str,
    cluster: str = DEFAULT_CLUSTER,
    kubeconfig: str | None = None,
) -> ClusterStatus:
    """Nodes, roles, Kubernetes versions, readiness and whether each holds ``image``."""
    with _docker() as docker:
        return _status(image, cluster, kubeconfig, docker)


def _status(image: str, cluster: str, kubeconfig: str | None, docker: Any) -> ClusterStatus:
    containers = node_containers(cluster, docker)
    result = ClusterStatus(cluster, bool(containers), image)
    if not containers:
        return result
    from docker.errors import ImageNotFound

    try:
        result.image_id = str(docker.images.get(image).id)
    except ImageNotFound:
        result.image_id = ""
    api_nodes = _api_nodes(f"kind-{cluster}", kubeconfig, result)
    for container in containers:
        row = NodeStatus(container.name, _role(container), container.status == "running")
        node = api_nodes.get(container.name)
        if node is not None:
            row.kubernetes_version = node.status.node_info.kubelet_version
            row.ready = ready_text(node)
        if not row.running:
            row.image = "node stopped"
        elif not result.image_id:
            row.image = "not built"
        else:
            held = node_image_id(container, image)
            if held == result.image_id:
                row.image = "current"
            elif held:
                row.image = "older build"
            else:
                row.image = "missing"
        result.nodes.append(row)
    return result


def _api_nodes(context: str, kubeconfig: str | None, result: ClusterStatus) -> dict[str, Any]:
    from kubernetes import client

    try:
        api: Any = client.CoreV1Api(k8s.api_client(context, kubeconfig))
        with k8s.api_errors("listing nodes", context):
            return {n.metadata.name: n for n in api.list_node(_request_timeout=10).items}
    except TTGError as exc:
        result.api_error = str(exc).splitlines()[0]
        return {}


def status_table(result: ClusterStatus) -> Any:
    """A rich table of ``result``."""
    from rich.table import Table

    table = Table(title=f"kind cluster {result.name}")
    for column in ("Node", "Role", "Kubernetes", "Ready", f"Image {result.image}"):
        table.add_column(column)
    for row in result.nodes:
        ready = row.ready if row.running else "stopped"
        style = "green" if row.image == "current" else "yellow"
        image = row.image if row.role == "worker" else f"{row.image} (not needed)"
        table.add_row(
            row.node,
            row.role,
            row.kubernetes_version or "?",
            ready,
            f"[{style}]{image}[/{style}]",
        )
    return table


def delete(
    name: str = DEFAULT_CLUSTER, kubeconfig: str | None = None, binary: str | None = None
) -> bool:
    """Delete the cluster; return ``False`` when there was none."""
    binary = binary or preflight()
    if name not in clusters(binary):
        return False
    args = ["delete", "cluster", "--name", name]
    if kubeconfig:
        args += ["--kubeconfig", kubeconfig]
    run_kind(args, timeout=300, binary=binary)
    return True


def load_image(
    image: str,
    cluster: str = DEFAULT_CLUSTER,
    echo: Callable[[str], None] | None = None,
) -> list[NodeLoad]:
    """:func:`load`, then one line per node through ``echo`` (INFO log lines by default)."""
    outcomes = load(image, cluster)
    say = echo or (lambda line: logger.info("{}", line))
    for line in load_lines(outcomes):
        say(line)
    return outcomes
