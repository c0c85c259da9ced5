"""Build (once) and find the binaries of the simulated control plane.

``kube-apiserver``, ``kube-controller-manager`` and ``kube-scheduler`` are
built from the Go module ``k8s.io/kubernetes`` through the small wrapper
module in ``tools/simcluster`` (its ``go.mod`` points every staging module at
its published twin), and so is ``etcd``, from the etcd server module of the
same module graph; ``kwok`` and ``kind`` are installed with ``go install`` at
pinned versions. Everything lands in one cache directory whose name is the
pinned Kubernetes version, next to a stamp of all pinned versions, so a
second build with the same pins is a no-op.

Debian's etcd 3.4 is not used: it lacks watch progress requests, so the API
server turns off the streaming lists that client-go (kwok, the controller
manager, the scheduler) asks for; their watches then restart with back-off,
which delays pod and node updates by tens of seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from ttg_ops.errors import PreflightError

# The pinned versions. k8s.io/kubernetes v1.36.3 needs Go 1.26.0, which the machine's
# Go 1.26.8 satisfies without a toolchain download; kwok v0.8.0 is built against the
# v0.36 client libraries, the same minor as the control plane.
K8S_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # go.etcd.io/etcd/server/v3, as required by k8s.io/kubernetes
KWOK_VERSION = "v0.8.0"
KIND_VERSION = "v0.33.0"

CONTROL_PLANE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# Main packages of tools/simcluster itself: etcd's server, and the proxy that ends followed
# log streams when a pod finishes (kwok keeps them open).
LOCAL_COMMANDS = ("etcd", "kubelet-proxy")
KWOK_CRDS = ("logs", "clusterlogs")
BUILD_TIMEOUT_S = 3600.0
GO_HINT = "install Go 1.26 or newer (https://go.dev/dl/) and put `go` on PATH"


def sim_home() -> Path:
    """The cache directory of this version set (``$TTG_SIM_HOME`` overrides it).

    It is ~/.cache/ttg/simcluster/<kubernetes version>-<cache key>. The key covers every
    pin and the wrapper module, so checkouts at different versions (a CI clone next to a
    working tree) never rebuild each other's binaries.
    """
    env = os.environ.get("TTG_SIM_HOME", "")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ttg" / "simcluster" / f"{K8S_VERSION}-{cache_key()}"


def cache_key() -> str:
    """A short digest of :func:`versions`."""
    return hashlib.sha256(json.dumps(versions(), sort_keys=True).encode()).hexdigest()[:10]


def go_cache_env() -> dict[str, str]:
    """Environment for ``go``: persistent caches under ~/.cache/ttg/go and module mode."""
    root = Path.home() / ".cache" / "ttg" / "go"
    env = dict(os.environ)
    env.setdefault("GOMODCACHE", str(root / "mod"))
    env.setdefault("GOCACHE", str(root / "build"))
    env["GOFLAGS"] = "-mod=mod"
    return env


def _tools_digest() -> str:
    """A digest of tools/simcluster (go.mod, go.sum, cmd/): a change there rebuilds."""
    try:
        root = module_dir()
    except PreflightError:
        return "unknown"
    digest = hashlib.sha256()
    files = [root / "go.mod", root / "go.sum", *sorted((root / "cmd").rglob("*.go"))]
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def versions() -> dict[str, str]:
    """The pinned versions (and the wrapper module's digest) that make up the cache key."""
    return {
        "kubernetes": K8S_VERSION,
        "etcd": ETCD_VERSION,
        "kwok": KWOK_VERSION,
        "kind": KIND_VERSION,
        "tools": _tools_digest(),
    }


@dataclass(frozen=True)
class Binaries:
    """Paths of every program the simulated cluster runs."""

    bin_dir: Path
    crd_dir: Path
    etcd: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def kind(self) -> Path:
        return self.bin_dir / "kind"


def _stamp_path(home: Path) -> Path:
    return home / "bin" / "VERSIONS.json"


def _stamp_matches(home: Path) -> bool:
    try:
        return bool(json.loads(_stamp_path(home).read_text()) == versions())
    except (OSError, ValueError):
        return False


def missing(home: Path | None = None) -> list[str]:
    """Names of the built programs (and CRDs) not yet in the cache; empty when ready."""
    home = home or sim_home()
    if not _stamp_matches(home):
        return [*CONTROL_PLANE_BINARIES, *LOCAL_COMMANDS, "kwok", "kind", "crds"]
    names = [*CONTROL_PLANE_BINARIES, *LOCAL_COMMANDS, "kwok", "kind"]
    absent = [n for n in names if not os.access(home / "bin" / n, os.X_OK)]
    absent += [f"crd {c}" for c in KWOK_CRDS if not (home / "crds" / f"{c}.yaml").is_file()]
    return absent


def find_etcd(home: Path) -> Path:
    """The built etcd, or ``$TTG_SIM_ETCD`` (an etcd 3.5 or newer) when set."""
    explicit = os.environ.get("TTG_SIM_ETCD", "")
    found = Path(explicit) if explicit else home / "bin" / "etcd"
    if not os.access(found, os.X_OK):
        raise PreflightError(
            f"the etcd binary {found} of the simulated cluster is missing",
            hint="unset TTG_SIM_ETCD, or name an executable etcd 3.5 or newer",
        )
    return found


def wait_for_build(home: Path | None = None, timeout: float = BUILD_TIMEOUT_S) -> None:
    """Wait while another process builds into ``home`` (it holds the build lock)."""
    home = home or sim_home()
    lock = home / ".build.lock"
    if not lock.exists():
        return
    deadline = time.monotonic() + timeout
    with lock.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PreflightError(
                        f"another process has been building into {home} for over "
                        f"{timeout:.0f} s; see {home / 'build.log'}"
                    ) from None
                time.sleep(1.0)
                continue
            fcntl.flock(handle, fcntl.LOCK_UN)
            return


def binaries(home: Path | None = None) -> Binaries:
    """The cached binaries (after any build in progress), or a :class:`PreflightError`."""
    home = home or sim_home()
    wait_for_build(home)
    return _built(home)


def _built(home: Path) -> Binaries:
    """The cached binaries as they are now; the builder calls this under its lock."""
    absent = missing(home)
    if absent:
        raise PreflightError(
            f"the simulated cluster's binaries are not built in {home}: missing "
            + ", ".join(absent),
            hint="build them once with `uv run inv cluster.sim-build` (about 10 minutes)",
        )
    return Binaries(bin_dir=home / "bin", crd_dir=home / "crds", etcd=find_etcd(home))


def module_dir() -> Path:
    """The wrapper Go module ``tools/simcluster`` of this checkout."""
    explicit = os.environ.get("TTG_SIM_MODULE", "")
    candidates = [Path(explicit)] if explicit else []
    here = Path(__file__).resolve()
    candidates += [parent / "tools" / "simcluster" for parent in here.parents]
    candidates += [parent / "tools" / "simcluster" for parent in Path.cwd().resolve().parents]
    candidates.append(Path.cwd() / "tools" / "simcluster")
    for candidate in candidates:
        if (candidate / "go.mod").is_file():
            return candidate
    raise PreflightError(
        "the Go module tools/simcluster was not found next to the TTG sources",
        hint="run from a TTG checkout, or set TTG_SIM_MODULE to the folder holding its go.mod",
    )


@contextmanager
def _build_lock(home: Path) -> Iterator[None]:
    """Serialise builds of one cache directory across processes (CI, parallel sessions)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_go(args: list[str], cwd: Path, env: dict[str, str], log: Path, what: str) -> None:
    """Run one ``go`` command, appending its output to ``log``; raise with the log tail."""
    logger.info("Building {} for the simulated cluster; output goes to {}.", what, log)
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(args)}\n")
        out.flush()
        try:
            result = subprocess.run(
                args,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PreflightError(
                f"building {what} did not finish within {BUILD_TIMEOUT_S:.0f} s; see {log}"
            ) from exc
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise PreflightError(
            f"building {what} failed with exit code {result.returncode}:\n{tail}",
            hint=f"the full build log is {log}",
        )


def _module_source(name: str, version: str, env: dict[str, str], cwd: Path) -> Path:
    """The unpacked source directory of a module version in the module cache."""
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{name}@{version}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise PreflightError(f"`go mod download {name}@{version}` failed: {result.stderr[-500:]}")
    return Path(json.loads(result.stdout)["Dir"])


def build(home: Path | None = None, force: bool = False) -> Binaries:
    """Build every missing binary into the cache (reused when the pins match)."""
    home = home or sim_home()
    wait_for_build(home)
    if not force and not missing(home):
        return _built(home)
    if shutil.which("go") is None:
        raise PreflightError("Go is needed to build the simulated cluster", hint=GO_HINT)
    source = module_dir()
    env = go_cache_env()
    with _build_lock(home):
        # Another process may have finished the same build while this one waited.
        if not force and not missing(home):
            return _built(home)
        bin_dir = home / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        _stamp_path(home).unlink(missing_ok=True)
        log = home / "build.log"
        started = time.monotonic()
        flags = ["-trimpath", "-ldflags=-s -w"]
        packages = [f"k8s.io/kubernetes/cmd/{name}" for name in CONTROL_PLANE_BINARIES]
        _run_go(
            ["go", "build", *flags, "-o", f"{bin_dir}/", *packages]
            + [f"./cmd/{name}" for name in LOCAL_COMMANDS],
            source,
            env,
            log,
            f"Kubernetes {K8S_VERSION} control plane and etcd {ETCD_VERSION}",
        )
        install_env = {**env, "GOBIN": str(bin_dir)}
        _run_go(
            ["go", "install", *flags, f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"],
            source,
            install_env,
            log,
            f"kwok {KWOK_VERSION}",
        )
        _run_go(
            ["go", "install", *flags, f"sigs.k8s.io/kind@{KIND_VERSION}"],
            source,
            install_env,
            log,
            f"kind {KIND_VERSION}",
        )

        # kwok serves pod logs from Logs objects; their CRDs ship in the kwok module.
        kwok_source = _module_source("sigs.k8s.io/kwok", KWOK_VERSION, env, source)
        crd_dir = home / "crds"
        crd_dir.mkdir(exist_ok=True)
        for crd in KWOK_CRDS:
            shutil.copyfile(
                kwok_source / "kustomize" / "crd" / "bases" / f"kwok.x-k8s.io_{crd}.yaml",
                crd_dir / f"{crd}.yaml",
            )
        _stamp_path(home).write_text(json.dumps(versions(), indent=2) + "\n")
        logger.info(
            "Built the simulated cluster's binaries into {} in {:.0f} s.",
            bin_dir,
            time.monotonic() - started,
        )
    return _built(home)
