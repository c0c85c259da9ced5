"""Run a real Kubernetes control plane as plain processes, with kwok playing the nodes.

``etcd``, ``kube-apiserver``, ``kube-controller-manager`` (every default
controller: Job, ServiceAccount, token, garbage collector…), ``kube-scheduler``
and ``kwok`` listen on loopback ports picked at start, with certificates from a
throw-away CA. The cluster mirrors TTG's kind cluster (one tainted control
plane node, three workers) and writes its own kubeconfig with a kind-style
context; it never touches ~/.kube/config.

Every component runs in its own process group. :meth:`SimCluster.stop` sends
SIGTERM to each group, then SIGKILL after a timeout; a cluster started in the
foreground also stops at interpreter exit and when its parent dies.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import functools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from loguru import logger

from ttg_ops.errors import ConfigError, PreflightError, TTGError
from ttg_ops.labels import DEFAULT_CLUSTER
from ttg_ops.simcluster import _build, _kwok
from ttg_ops.simcluster._pki import Pair, Pki, make_pki

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS = 2
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
STATE_FILE = "state.json"
# Taints the node controller puts on a node until it has seen it Ready.
STARTUP_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
_PR_SET_PDEATHSIG = 1


class SimClusterError(PreflightError):
    """The simulated cluster could not start or answer."""


@dataclass
class ComponentStatus:
    """One process of the control plane, as seen in /proc."""

    name: str
    pid: int
    alive: bool
    rss_bytes: int


@dataclass
class SimStatus:
    """What runs for one simulated cluster."""

    name: str
    context: str
    kubeconfig: str
    run_dir: str
    components: list[ComponentStatus] = field(default_factory=list)
    api_ready: bool = False
    api_url: str = ""

    @property
    def running(self) -> bool:
        return bool(self.components) and all(c.alive for c in self.components)

    @property
    def rss_bytes(self) -> int:
        return sum(c.rss_bytes for c in self.components if c.alive)


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_ours(pid: int, binary: str) -> bool:
    """Whether ``pid`` still runs ``binary`` (and is not a reused pid or a zombie)."""
    args = _cmdline(pid)
    return bool(args) and args[0] == binary


_CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Node names are <name>-control-plane, <name>-worker<n>: DNS labels of at most 63 characters.
_MAX_CLUSTER_NAME = 63 - len("-control-plane")


def check_cluster_name(name: str) -> str:
    """``name`` when its node names are valid, else :class:`ConfigError` naming what is allowed."""
    if not name or len(name) > _MAX_CLUSTER_NAME or not _CLUSTER_NAME.match(name):
        raise ConfigError(
            f"cluster name {name!r} is not valid: use lowercase letters, digits and '-', "
            f"start and end with a letter or digit, at most {_MAX_CLUSTER_NAME} characters "
            "(the nodes are <name>-control-plane and <name>-worker…)"
        )
    return name


def _running_dir(name: str) -> Path | None:
    """The run folder of cluster ``name`` whose processes live, in any binaries' cache folder.

    The cache folder is keyed by the pinned versions, so a checkout that changed a pin
    would not see a cluster started before; every sibling folder is looked at.
    """
    if os.environ.get("TTG_SIM_HOME"):
        return None
    for state_path in sorted(_build.sim_home().parent.glob(f"*/run/{name}/{STATE_FILE}")):
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            continue
        components = state.get("components", []) if isinstance(state, dict) else []
        if any(_is_ours(int(c["pid"]), str(c["binary"])) for c in components):
            return state_path.parent
    return None


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the process that started it dies.

    SIGKILL, not SIGTERM: kube-apiserver's graceful shutdown can wait for an etcd that
    received the same signal, and a throw-away cluster has nothing to save.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, user: Pair, context: str) -> None:
    """A kubeconfig with one cluster, user and context, all named ``context`` (as kind does)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": context,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca)},
            }
        ],
        "users": [
            {
                "name": context,
                "user": {
                    "client-certificate-data": _b64(user.cert),
                    "client-key-data": _b64(user.key),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


class SimCluster:
    """A control plane of real Kubernetes binaries whose nodes and pods kwok simulates.

    ``with SimCluster() as cluster:`` starts it and stops it; ``cluster.kubeconfig``
    and ``cluster.context`` are what :func:`ttg_ops.k8s.api_client` needs.
    """

    def __init__(
        self,
        name: str = DEFAULT_CLUSTER,
        *,
        context: str | None = None,
        run_dir: Path | str | None = None,
        workers: int = 3,
        home: Path | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        check_cluster_name(name)
        if workers < 1:
            raise ConfigError(f"workers must be a whole number of at least 1 node, not {workers}")
        if ready_timeout <= 0:
            raise ConfigError(f"the timeout must be more than 0 seconds, not {ready_timeout:g}")
        self.name = name
        self.context = context or f"kind-{name}"
        self.home = home or _build.sim_home()
        if run_dir:
            self.run_dir = Path(run_dir)
        else:
            self.run_dir = self.home / "run" / name
            if home is None:
                self.run_dir = _running_dir(name) or self.run_dir
        self.workers = workers
        self.ready_timeout = ready_timeout
        self.kubeconfig = str(self.run_dir / "kubeconfig")
        self.timings: dict[str, float] = {}
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._state: dict[str, Any] = {}
        self._atexit: Callable[[], None] | None = None
        self._pki: Pki | None = None

    # -- build ------------------------------------------------------------------------------

    @staticmethod
    def build(force: bool = False) -> _build.Binaries:
        """Build (or reuse) the binaries of the pinned versions; see :func:`_build.build`."""
        return _build.build(force=force)

    # -- paths ------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def node_names(self) -> list[str]:
        return _kwok.node_names(self.name, self.workers)

    @property
    def worker_names(self) -> list[str]:
        return self.node_names[1:]

    @property
    def control_plane_name(self) -> str:
        return self.node_names[0]

    def _load_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_path.read_text()))
        except (OSError, ValueError):
            return {}

    # -- start ------------------------------------------------------------------------------

    def start(self, detach: bool = False) -> SimCluster:
        """Start every component and wait until the cluster answers and its nodes are Ready.

        ``detach`` keeps the processes running after this Python process exits (for
        ``inv cluster.sim-up``); otherwise they stop at exit or when it dies.
        """
        status = self.status()
        if any(c.alive for c in status.components):
            raise SimClusterError(
                f"the simulated cluster {self.name!r} already runs from {self.run_dir}",
                hint="stop it first with `inv cluster.sim-down`",
            )
        binaries = _build.binaries(self.home)
        started = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            if self.run_dir.exists():
                shutil.rmtree(self.run_dir)
            self.log_dir.mkdir(parents=True)
            if not detach:
                self._atexit = self.stop
                atexit.register(self._atexit)
            try:
                self._start(binaries, detach, started)
                break
            except SimClusterError as exc:
                # The free ports are picked before the components bind them; another
                # program may take one in between. Pick new ones once.
                self.stop()
                if "address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                    raise
                logger.warning(
                    "A port of the simulated cluster {} was taken meanwhile; starting again "
                    "with new ports.",
                    self.name,
                )
            except BaseException:
                logger.error(
                    "The simulated cluster {} did not start; stopping what did. Logs are in {}.",
                    self.name,
                    self.log_dir,
                )
                self.stop()
                raise
        self.timings["ready_s"] = time.monotonic() - started
        logger.info(
            "The simulated cluster {} is ready in {:.1f} s; kubeconfig {} context {}.",
            self.name,
            self.timings["ready_s"],
            self.kubeconfig,
            self.context,
        )
        return self

    def _start(self, binaries: _build.Binaries, detach: bool, started: float) -> None:
        pki = self._pki = make_pki(self.run_dir / "pki")
        etcd_client, etcd_peer, apiserver, manager, scheduler, kwok, kubelet = _free_ports(7)
        server = f"https://127.0.0.1:{apiserver}"
        self._state = {
            "name": self.name,
            "context": self.context,
            "kubeconfig": self.kubeconfig,
            "api_url": server,
            "versions": _build.versions(),
            "components": [],
        }
        write_kubeconfig(Path(self.kubeconfig), server, pki.ca.cert, pki.admin, self.context)
        configs = self.run_dir / "config"
        configs.mkdir()
        for user, pair in (
            ("controller-manager", pki.controller_manager),
            ("scheduler", pki.scheduler),
            ("kwok", pki.kwok_client),
        ):
            write_kubeconfig(configs / f"{user}.kubeconfig", server, pki.ca.cert, pair, user)
        (configs / "kwok.yaml").write_text(_kwok.kwok_config())

        etcd_url = f"http://127.0.0.1:{etcd_client}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        etcd_args = [
            "--name=simcluster",
            f"--data-dir={self.run_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=simcluster={peer_url}",
            f"--quota-backend-bytes={2 * 1024**3}",
            "--log-level=warn",
        ]
        self._spawn("etcd", binaries.etcd, etcd_args, detach)
        self._wait(
            "etcd to answer on its health endpoint",
            lambda: self._http_ok(f"{etcd_url}/health", None),
            30.0,
            "etcd",
        )

        apiserver_args = [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={apiserver}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The endpoints of the `kubernetes` Service may not be a loopback address.
            "--endpoint-reconciler-type=none",
            # Pod logs: the API server calls kwok's kubelet endpoint with a client cert
            # and checks kwok's serving certificate against the cluster CA.
            f"--kubelet-client-certificate={pki.kubelet_client.cert}",
            f"--kubelet-client-key={pki.kubelet_client.key}",
            f"--kubelet-certificate-authority={pki.ca.cert}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        self._spawn("kube-apiserver", binaries.path("kube-apiserver"), apiserver_args, detach)
        context = self._tls_context(pki)
        self._wait(
            "kube-apiserver to answer /readyz",
            lambda: self._http_ok(f"{server}/readyz", context),
            self.ready_timeout,
            "kube-apiserver",
        )
        self.timings["apiserver_ready_s"] = time.monotonic() - started

        # kwok serves pod logs from Logs objects, so their CRDs come before kwok.
        self._install_crds(binaries)

        manager_args = [
            f"--kubeconfig={configs / 'controller-manager.kubeconfig'}",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={manager}",
            "--profiling=false",
            "--v=1",
        ]
        self._spawn(
            "kube-controller-manager",
            binaries.path("kube-controller-manager"),
            manager_args,
            detach,
        )
        scheduler_args = [
            f"--kubeconfig={configs / 'scheduler.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={scheduler}",
            "--profiling=false",
            "--v=1",
        ]
        self._spawn("kube-scheduler", binaries.path("kube-scheduler"), scheduler_args, detach)
        kwok_args = [
            f"--kubeconfig={configs / 'kwok.kubeconfig'}",
            f"--config={configs / 'kwok.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={_kwok.FAKE_NODE_SELECTOR}",
            # Every node advertises the kubelet proxy in front of kwok's endpoint.
            "--node-ip=127.0.0.1",
            f"--node-port={kubelet}",
            f"--server-address=127.0.0.1:{kwok}",
            f"--tls-cert-file={pki.kwok_serving.cert}",
            f"--tls-private-key-file={pki.kwok_serving.key}",
            f"--cidr={POD_CIDR}",
            # Renew a Lease per node, as a kubelet does, so the node lifecycle controller
            # sees the nodes alive between status heartbeats.
            "--node-lease-duration-seconds=40",
            "--enable-crds=Logs,ClusterLogs",
        ]
        self._spawn("kwok", binaries.path("kwok"), kwok_args, detach)
        proxy_args = [
            f"--listen=127.0.0.1:{kubelet}",
            f"--upstream=https://127.0.0.1:{kwok}",
            f"--tls-cert-file={pki.kwok_serving.cert}",
            f"--tls-private-key-file={pki.kwok_serving.key}",
            f"--ca-file={pki.ca.cert}",
            f"--api-server={server}",
            f"--client-cert-file={pki.kwok_client.cert}",
            f"--client-key-file={pki.kwok_client.key}",
        ]
        self._spawn("kubelet-proxy", binaries.path("kubelet-proxy"), proxy_args, detach)
        self._state["ports"] = {
            "etcd": etcd_client,
            "kube-apiserver": apiserver,
            "kube-controller-manager": manager,
            "kube-scheduler": scheduler,
            "kwok": kwok,
            "kubelet-proxy": kubelet,
        }
        self._save_state()

        self._register_nodes()
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for name, port in (("kube-controller-manager", manager), ("kube-scheduler", scheduler)):
            self._wait(
                f"{name} to answer /healthz",
                functools.partial(self._http_ok, f"https://127.0.0.1:{port}/healthz", insecure),
                self.ready_timeout,
                name,
            )
        self._wait(
            "kwok's kubelet endpoint to answer /healthz through the kubelet proxy",
            functools.partial(self._http_ok, f"https://127.0.0.1:{kubelet}/healthz", context),
            self.ready_timeout,
            "kubelet-proxy",
        )
        self._wait(
            f"the nodes {', '.join(self.node_names)} to be Ready",
            self._nodes_ready,
            self.ready_timeout,
            "kwok",
        )
        # The node controller lifts the start-up taints a moment after Ready; until then
        # the scheduler places no pod on the workers.
        self._wait(
            f"the start-up taints {', '.join(STARTUP_TAINTS)} to leave the worker nodes",
            self._workers_untainted,
            self.ready_timeout,
            "kube-controller-manager",
        )
        self._wait(
            "the ServiceAccount controller to create default/default",
            self._default_service_account,
            self.ready_timeout,
            "kube-controller-manager",
        )

    def _spawn(self, name: str, binary: Path, args: list[str], detach: bool) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        args = [str(binary), *args]
        self._logs[name] = log
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Threads do not matter here: the hook only calls prctl before exec.
            preexec_fn=None if detach else _die_with_parent,  # noqa: PLW1509
        )
        self._processes[name] = process
        self._state["components"].append(
            {"name": name, "pid": process.pid, "binary": args[0], "log": str(log.name)}
        )
        self._save_state()
        logger.debug("Started {} of the simulated cluster as pid {}.", name, process.pid)

    def _save_state(self) -> None:
        self.state_path.write_text(json.dumps(self._state, indent=2) + "\n")

    @staticmethod
    def _tls_context(pki: Pki) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        return context

    @staticmethod
    def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, component: str) -> None:
        """Poll ``check`` until true; fail early when a component exits, with its log tail."""
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self._processes.items():
                code = process.poll()
                if code is not None:
                    log = self.log_dir / f"{name}.log"
                    raise SimClusterError(
                        f"{name} of the simulated cluster exited with code {code} while "
                        f"waiting for {what}; last lines of {log}:\n{_tail(log)}"
                    )
            if check():
                return
            if time.monotonic() > deadline:
                log = self.log_dir / f"{component}.log"
                raise SimClusterError(
                    f"timed out after {timeout:.0f} s waiting for {what}; last lines of "
                    f"{log}:\n{_tail(log)}"
                )
            time.sleep(0.2)

    def api_client(self) -> Any:
        """A kubernetes API client for this cluster's context."""
        from ttg_ops.k8s import api_client

        return api_client(self.context, self.kubeconfig)

    def _install_crds(self, binaries: _build.Binaries) -> None:
        from kubernetes import client

        from ttg_ops.k8s import api_errors

        api: Any = client.ApiextensionsV1Api(self.api_client())
        names = []
        for crd in _build.KWOK_CRDS:
            body = yaml.safe_load((binaries.crd_dir / f"{crd}.yaml").read_text())
            with api_errors(f"creating the CustomResourceDefinition {body['metadata']['name']}"):
                api.create_custom_resource_definition(body=body)
            names.append(body["metadata"]["name"])

        def established() -> bool:
            for name in names:
                crd = api.read_custom_resource_definition(name)
                conditions = crd.status.conditions or []
                if not any(c.type == "Established" and c.status == "True" for c in conditions):
                    return False
            return True

        self._wait("kwok's CRDs to be established", established, 30.0, "kube-apiserver")

    def _register_nodes(self) -> None:
        from kubernetes import client

        from ttg_ops.k8s import api_errors

        api: Any = client.CoreV1Api(self.api_client())
        for index, name in enumerate(self.node_names):
            body = _kwok.node_manifest(name, self.name, index == 0, _build.K8S_VERSION)
            with api_errors(f"registering the simulated node {name}"):
                api.create_node(body=body)
        logger.info(
            "Registered the simulated nodes {} for kwok to manage.", ", ".join(self.node_names)
        )

    def _nodes_ready(self) -> bool:
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api_client())
        nodes = core.list_node().items
        ready = {
            n.metadata.name
            for n in nodes
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        }
        return set(self.node_names) <= ready

    def _workers_untainted(self) -> bool:
        from kubernetes import client

        core: Any = client.CoreV1Api(self.api_client())
        tainted = {
            n.metadata.name
            for n in core.list_node().items
            if any(t.key in STARTUP_TAINTS for t in n.spec.taints or [])
        }
        return not tainted & set(self.worker_names)

    def _default_service_account(self) -> bool:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core: Any = client.CoreV1Api(self.api_client())
        try:
            core.read_namespaced_service_account("default", "default")
        except ApiException:
            return False
        return True

    # -- stop -------------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every component (SIGTERM, then SIGKILL after ``timeout``); idempotent."""
        state = self._state or self._load_state()
        components = list(reversed(state.get("components", [])))
        for component in components:
            self._stop_one(component, timeout)
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        self._processes.clear()
        self._state = {}
        with contextlib.suppress(OSError):
            self.state_path.unlink()
        # The etcd data is throw-away; the logs stay for a look after a failure.
        shutil.rmtree(self.run_dir / "etcd", ignore_errors=True)
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None
        if components:
            logger.info("Stopped the simulated cluster {}.", self.name)

    def _stop_one(self, component: dict[str, Any], timeout: float) -> None:
        name, pid, binary = component["name"], int(component["pid"]), component["binary"]
        process = self._processes.get(name)

        def gone() -> bool:
            if process is not None:
                return process.poll() is not None
            return not _is_ours(pid, binary)

        if gone():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while not gone() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not gone():
            logger.warning(
                "{} (pid {}) did not stop within {:.0f} s of SIGTERM; killing it.",
                name,
                pid,
                timeout,
            )
        # The group may hold helpers even when the leader has gone; kill whatever is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)

    def __enter__(self) -> SimCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> SimStatus:
        """The processes recorded for this cluster, whether they live, and their memory."""
        state = self._state or self._load_state()
        status = SimStatus(
            name=self.name,
            context=self.context,
            kubeconfig=self.kubeconfig,
            run_dir=str(self.run_dir),
            api_url=state.get("api_url", ""),
        )
        for component in state.get("components", []):
            pid = int(component["pid"])
            alive = _is_ours(pid, component["binary"])
            status.components.append(
                ComponentStatus(component["name"], pid, alive, _rss_bytes(pid) if alive else 0)
            )
        if status.running and status.api_url:
            pki_dir = self.run_dir / "pki"
            try:
                context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
                context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
                status.api_ready = self._http_ok(f"{status.api_url}/readyz", context)
            except (OSError, ssl.SSLError):
                status.api_ready = False
        return status

    # -- pod logs ---------------------------------------------------------------------------

    def serve_logs(
        self,
        namespace: str,
        pod: str,
        log_file: Path | str,
        stream: str = "stdout",
        timeout: float = 15.0,
    ) -> list[str]:
        """Make ``log_file``'s text the container log of a pod (or pods) through the API.

        ``pod`` is a pod name or, when it contains ``=``, a label selector. kwok serves
        the file from its kubelet endpoint, so ``read_namespaced_pod_log`` returns it.
        Returns the pod names served; waits until each running or finished pod's log
        reads back, for at most ``timeout`` seconds.
        """
        from kubernetes import client

        from ttg_ops.k8s import api_errors

        source = Path(log_file)
        if not source.is_file():
            raise TTGError(f"the log file {source} to serve does not exist")
        api_client = self.api_client()
        core: Any = client.CoreV1Api(api_client)
        custom: Any = client.CustomObjectsApi(api_client)
        if "=" in pod:
            with api_errors(f"listing pods matching {pod!r} in {namespace}", self.context):
                pods = [
                    p.metadata.name
                    for p in core.list_namespaced_pod(namespace, label_selector=pod).items
                ]
            if not pods:
                raise TTGError(f"no pod in namespace {namespace!r} matches {pod!r}")
        else:
            pods = [pod]

        text = source.read_text(errors="replace")
        for name in pods:
            target = self._served_log(namespace, name)
            target.parent.mkdir(exist_ok=True)
            target.write_text(_kwok.cri_log(text, stream))
            body = _kwok.logs_manifest(namespace, name, target)
            with contextlib.suppress(TTGError), api_errors(f"replacing the Logs of pod {name}"):
                custom.delete_namespaced_custom_object(
                    "kwok.x-k8s.io", "v1alpha1", namespace, "logs", name
                )
            with api_errors(f"serving {source} as the log of pod {namespace}/{name}"):
                custom.create_namespaced_custom_object(
                    "kwok.x-k8s.io", "v1alpha1", namespace, "logs", body
                )
        for name in pods:
            self._wait_log_served(core, namespace, name, timeout)
        return pods

    def pod_environment(
        self, namespace: str, pod: str, container: str | None = None
    ) -> dict[str, str]:
        """The environment a kubelet would give a container of ``pod``.

        Plain values, downward API fields, ConfigMap and Secret keys: for a Job's pod,
        ``JOB_COMPLETION_INDEX`` as the Job controller set it.
        """
        from kubernetes import client

        from ttg_ops.k8s import api_errors
        from ttg_ops.simcluster._pods import container_environment

        core: Any = client.CoreV1Api(self.api_client())
        with api_errors(f"reading pod {namespace}/{pod}", self.context):
            live = core.read_namespaced_pod(pod, namespace)
            return container_environment(core, live, container)

    def finish_pod(self, namespace: str, pod: str, exit_code: int = 0) -> None:
        """End a Running pod now: ``Succeeded`` for exit code 0, else ``Failed`` with it.

        A pod that no Job owns only ends by failing: kwok completes Job pods alone.
        """
        from kubernetes import client

        from ttg_ops.k8s import api_errors

        annotations = {_kwok.RUN_DURATION: "0s", _kwok.EXIT_CODE: str(exit_code)}
        labels = {_kwok.OUTCOME: "fail" if exit_code else "succeed"}
        core: Any = client.CoreV1Api(self.api_client())
        with api_errors(f"ending pod {namespace}/{pod}", self.context):
            core.patch_namespaced_pod(
                pod, namespace, {"metadata": {"labels": labels, "annotations": annotations}}
            )

    def run_in_pod(
        self,
        namespace: str,
        pod: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 300.0,
        finish: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Play ``pod``'s container with a local process and make its output the pod's log.

        ``command`` runs with this process's environment, the pod's container environment
        (:meth:`pod_environment`) and ``env`` on top (e.g. a local ``TTG_OUTPUT_DIR``).
        Its stdout and stderr, merged in order, become the log ``read_namespaced_pod_log``
        returns; with ``finish`` the pod then ends with the command's exit code.
        """
        merged = {**os.environ, **self.pod_environment(namespace, pod), **(env or {})}
        try:
            done = subprocess.run(
                command,
                env=merged,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TTGError(
                f"{command[0]} playing pod {namespace}/{pod} did not exit within {timeout:.0f} s"
            ) from exc
        output = self.run_dir / "pod-output" / f"{namespace}_{pod}.txt"
        output.parent.mkdir(exist_ok=True)
        output.write_text(done.stdout)
        self.serve_logs(namespace, pod, output)
        if finish:
            self.finish_pod(namespace, pod, done.returncode)
        return done

    def _served_log(self, namespace: str, pod: str) -> Path:
        return self.run_dir / "pod-logs" / f"{namespace}_{pod}.log"

    def append_log(self, namespace: str, pod: str, text: str, stream: str = "stdout") -> None:
        """Add lines to a log that :meth:`serve_logs` serves; a ``follow`` reader sees them.

        kwok never ends a ``follow=True`` stream by itself (it cannot tell that a
        container stopped): the reader closes it, as TTG does once the pod has finished.
        """
        target = self._served_log(namespace, pod)
        if not target.is_file():
            raise TTGError(f"no log is served for pod {namespace}/{pod}; call serve_logs first")
        with target.open("a") as handle:
            handle.write(_kwok.cri_log(text, stream))

    def _wait_log_served(self, core: Any, namespace: str, pod: str, timeout: float) -> None:
        from kubernetes.client.exceptions import ApiException

        def readable() -> bool:
            try:
                core.read_namespaced_pod_log(pod, namespace, _preload_content=False).read()
            except ApiException:
                return False
            return True

        live = core.read_namespaced_pod(pod, namespace)
        if not live.spec.node_name or not live.status.container_statuses:
            return  # not started yet: the API refuses its log until kwok has started it
        self._wait(f"the log of pod {namespace}/{pod} to be served", readable, timeout, "kwok")


def status_table(status: SimStatus) -> Any:
    """A rich table of the components in ``status``: pid, state and memory."""
    from rich.table import Table

    state = "ready" if status.api_ready else ("running" if status.running else "stopped")
    table = Table(title=f"Simulated cluster {status.name} ({state})")
    table.add_column("component")
    table.add_column("pid", justify="right")
    table.add_column("state")
    table.add_column("RSS", justify="right")
    for component in status.components:
        table.add_row(
            component.name,
            str(component.pid),
            "running" if component.alive else "gone",
            f"{component.rss_bytes / 2**20:.0f} MiB" if component.alive else "-",
        )
    if status.components:
        table.add_row("total", "", "", f"{status.rss_bytes / 2**20:.0f} MiB", style="bold")
    return table
