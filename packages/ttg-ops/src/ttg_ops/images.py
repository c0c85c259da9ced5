"""Build the worker image, and the offline base image it can start from.

The worker image is built from ``images/worker/Dockerfile`` with a small,
generated build context: the Dockerfile, the helper script that assembles the
runtime file tree, and a wheelhouse made on the host from ``uv.lock``. Nothing
inside the build reaches the network, so the image builds on machines that
cannot reach a container registry or the package index from a container.

The Dockerfile's default base is the official slim Python image. Where no
registry is reachable, :func:`build_base` makes an equivalent base from
Debian packages with ``debootstrap`` and imports it into the daemon.

The labels are build arguments of the Dockerfile's last instruction, so a
label that changes on every build (``org.opencontainers.image.created``)
re-runs only that metadata step and a rebuild with no change reuses every
layer. Tags are applied only after the build succeeded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

from ttg_ops import dockerapi, labels
from ttg_ops.errors import ConfigError, PreflightError, TTGError
from ttg_ops.spec import validate_version

DEFAULT_BASE = "python:3.11-slim"
BASE_SUITE = "bookworm"
BASE_REPOSITORY = "ttg-base"
OFFLINE_BASE = f"{BASE_REPOSITORY}:{BASE_SUITE}-python3.11"
BASE_COMPONENT = "base"
# The ``ttg.component`` of the images the classic builder leaves for the
# Dockerfile's stages (deps, runtime, app): build cache, not a TTG image.
STAGE_COMPONENT = "build-stage"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
WORKER_PACKAGES = ("ttg-logging", "ttg-worker")
# The pip that installs the wheelhouse inside the build; it runs from its wheel.
PIP_REQUIREMENT = "pip==25.3"
TARGET_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")
TARGET_PYTHON = "3.11"

OCI_DESCRIPTION = "Distributed computation worker for the TTG project"
OCI_LICENSES = "MIT"
OCI_SOURCE = "https://github.com/ttg/distributed-compute"
OCI_TITLE = "TTG Distributed Worker"
OCI_VENDOR = "TTG Team"

# Parts of a debootstrap tree that a container never needs.
_BASE_STRIP = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
)
_DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$")

Echo = Callable[[str], None]


class ImageBuildError(TTGError):
    """The image build (or push) failed; the message carries the failed step's output."""

    exit_code = 1


@dataclass
class BaseResult:
    """The offline base image: its tag and id, and whether this call made it."""

    tag: str
    image_id: str
    size: int
    created: bool
    seconds: float = 0.0


@dataclass
class BuildResult:
    """A built worker image and what it took."""

    image_id: str
    tags: list[str]
    size: int
    seconds: float
    base: str
    labels: dict[str, str]
    pushed: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Paths and small helpers
# ---------------------------------------------------------------------------


def project_root(start: Path | None = None) -> Path:
    """The TTG checkout: the first parent holding ``uv.lock`` and ``images/worker``."""
    here = (start or Path(__file__)).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "uv.lock").is_file() and (candidate / "images" / "worker").is_dir():
            return candidate
    raise PreflightError(
        f"cannot find the TTG checkout above {here}: building the image needs the source tree",
        hint="run the task from a clone of the repository",
    )


def image_tag(version: str) -> str:
    """The worker image tag for ``version``: ``v`` plus the version (``+`` becomes ``_``)."""
    validate_version(version)
    return "v" + version.replace("+", "_")


def git_revision(root: Path) -> str:
    """The short commit of ``root``, with ``-dirty`` when the tree has changes; or ``unknown``."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        head = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        status = subprocess.run(
            [git, "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return "unknown"
    return f"{head}-dirty" if status else head


def image_labels(version: str, revision: str, created: datetime | None = None) -> dict[str, str]:
    """The OCI and TTG labels of a worker image."""
    when = (created or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    oci = {
        "org.opencontainers.image.created": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.description": OCI_DESCRIPTION,
        "org.opencontainers.image.licenses": OCI_LICENSES,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": OCI_SOURCE,
        "org.opencontainers.image.title": OCI_TITLE,
        "org.opencontainers.image.vendor": OCI_VENDOR,
        "org.opencontainers.image.version": version,
    }
    return {**oci, **labels.docker_labels(version)}


# Each label of the image is set from a build argument of the Dockerfile's last
# instructions, so a changing build time re-runs only those instructions.
_LABEL_ARGS = {
    "org.opencontainers.image.created": "OCI_CREATED",
    "org.opencontainers.image.description": "OCI_DESCRIPTION",
    "org.opencontainers.image.licenses": "OCI_LICENSES",
    "org.opencontainers.image.revision": "OCI_REVISION",
    "org.opencontainers.image.source": "OCI_SOURCE",
    "org.opencontainers.image.title": "OCI_TITLE",
    "org.opencontainers.image.vendor": "OCI_VENDOR",
    "org.opencontainers.image.version": "TTG_VERSION",
    labels.DOCKER_COMPONENT: "TTG_COMPONENT",
    labels.DOCKER_PROJECT: "TTG_PROJECT",
    labels.DOCKER_VERSION: "TTG_VERSION",
}


def label_build_args(image_labels_: dict[str, str]) -> dict[str, str]:
    """The Dockerfile build arguments that carry ``image_labels_``."""
    missing = sorted(set(image_labels_) - set(_LABEL_ARGS))
    if missing:
        raise ImageBuildError(f"no Dockerfile build argument carries the labels {missing}")
    return {_LABEL_ARGS[key]: value for key, value in image_labels_.items()}


def _run(argv: list[str], what: str, timeout: float, cwd: Path | None = None) -> str:
    """Run ``argv``; on failure raise :class:`ImageBuildError` with its output tail."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise PreflightError(f"{argv[0]} is not installed; it is needed to {what}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{what} did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
        raise ImageBuildError(f"{what} failed with exit code {done.returncode}:\n{tail}")
    return done.stdout


@contextmanager
def _docker(timeout: int) -> Iterator[Any]:
    """A Docker client (or a PreflightError) that is closed when the block ends."""
    client = dockerapi.client(timeout=timeout)
    try:
        yield client
    finally:
        client.close()


def _image_or_none(client: Any, name: str) -> Any:
    from docker.errors import ImageNotFound

    try:
        return client.images.get(name)
    except ImageNotFound:
        return None


# ---------------------------------------------------------------------------
# The offline base
# ---------------------------------------------------------------------------


def debian_mirror(sources: Iterable[Path] | None = None) -> str:
    """The Debian mirror apt is configured with (deb822 or one-line sources), or the default."""
    if sources is None:
        apt = Path("/etc/apt")
        sources = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            words = line.split()
            if line.startswith("URIs:"):
                uris = words[1:]
            elif words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w][:1]
            else:
                continue
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def _unmount_below(tree: Path) -> None:
    """Unmount every file system mounted under ``tree``, deepest first."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return
    prefix = str(tree.resolve())
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    for point in sorted((p for p in points if p.startswith(prefix + "/")), reverse=True):
        logger.warning("Unmounting {} left behind by debootstrap.", point)
        subprocess.run(["umount", "-l", point], check=False, timeout=60)


def _strip_tree(root: Path) -> None:
    """Remove caches, docs and locales from a debootstrap tree."""
    for relative in _BASE_STRIP:
        target = root / relative
        if not target.is_dir() or target.is_symlink():
            continue
        for child in target.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


def build_base(
    force: bool = False,
    mirror: str | None = None,
    suite: str = BASE_SUITE,
    tag: str = OFFLINE_BASE,
    echo: Echo | None = None,
) -> BaseResult:
    """Make the offline base image with debootstrap and import it; skip it when it exists.

    The base is a minimal Debian with ``python3`` and ``ca-certificates``,
    stripped of package lists, caches, documentation and locales, and carries
    TTG's labels so that inventory and cleanup find it.
    """
    with _docker(timeout=600) as client:
        return _build_base(client, force=force, mirror=mirror, suite=suite, tag=tag, echo=echo)


def _build_base(
    client: Any,
    *,
    force: bool,
    mirror: str | None,
    suite: str,
    tag: str,
    echo: Echo | None,
) -> BaseResult:
    say = echo or (lambda _text: None)
    existing = _image_or_none(client, tag)
    if existing is not None and not force:
        say(f"The offline base {tag} exists ({existing.short_id}); use --force to remake it.")
        return BaseResult(tag, existing.id, int(existing.attrs.get("Size", 0)), created=False)

    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise PreflightError(
            "debootstrap is not installed; it is needed to make the offline base image",
            hint="apt-get install -y debootstrap",
        )
    if os.geteuid() != 0:
        raise PreflightError(
            "making the offline base needs root (debootstrap creates device nodes and "
            "owns files as root)",
            hint="run `inv images.base` as root, or pass --base with an image you can pull",
        )
    source = mirror or debian_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ttg-base-") as scratch:
        tree = Path(scratch) / "rootfs"
        say(f"Running debootstrap for {suite} from {source} (about a minute).")
        try:
            _run(
                [
                    debootstrap,
                    "--variant=minbase",
                    "--include=python3,ca-certificates",
                    suite,
                    str(tree),
                    source,
                ],
                what=f"debootstrap {suite} into {tree}",
                timeout=1200,
            )
        finally:
            # A failed debootstrap can leave /proc or /sys mounted inside the tree;
            # unmount them before anything walks or deletes it.
            _unmount_below(tree)
        _strip_tree(tree)
        archive = Path(scratch) / "rootfs.tar"
        _run(
            [
                "tar",
                "--numeric-owner",
                "--one-file-system",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(tree),
                "-cf",
                str(archive),
                ".",
            ],
            what="pack the base file tree",
            timeout=600,
        )
        base_labels = {
            **labels.docker_labels(suite),
            labels.DOCKER_COMPONENT: BASE_COMPONENT,
        }
        changes = [f'LABEL "{key}"="{value}"' for key, value in base_labels.items()]
        changes += [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
        ]
        repository, _, version_tag = tag.rpartition(":")
        say(f"Importing the base file tree as {tag}.")
        api = client.api
        reply = api.import_image_from_file(
            str(archive), repository=repository, tag=version_tag, changes=changes
        )
        if "error" in str(reply).lower() and "status" not in str(reply).lower():
            raise ImageBuildError(f"docker import of {tag} failed: {str(reply)[:500]}")
    image = _image_or_none(client, tag)
    if image is None:
        raise ImageBuildError(f"docker import reported no error, but {tag} does not exist")
    seconds = time.monotonic() - started
    size = int(image.attrs.get("Size", 0))
    say(f"Made the offline base {tag} ({image.short_id}, {size / 1e6:.0f} MB) in {seconds:.0f} s.")
    return BaseResult(tag, image.id, size, created=True, seconds=seconds)


def resolve_base(client: Any, requested: str | None, echo: Echo | None = None) -> str:
    """The base image to build from: the requested one, the default, or the offline base.

    An explicitly requested base must exist locally or be pullable. The
    default base falls back to the offline base when no registry answers.
    """
    say = echo or (lambda _text: None)
    wanted = requested or DEFAULT_BASE
    if _image_or_none(client, wanted) is not None:
        return wanted
    pull_error = _try_pull(client, wanted)
    if pull_error is None:
        return wanted
    if requested:
        raise PreflightError(
            f"the base image {wanted} is not present locally and cannot be pulled: {pull_error}",
            hint=f"load it into the daemon first, or make the offline base with `inv images.base` "
            f"and pass --base {OFFLINE_BASE}",
        )
    if _image_or_none(client, OFFLINE_BASE) is not None:
        say(f"The default base {wanted} cannot be pulled; building from {OFFLINE_BASE} instead.")
        return OFFLINE_BASE
    raise PreflightError(
        f"the default base image {wanted} is not present and cannot be pulled ({pull_error}), "
        f"and the offline base {OFFLINE_BASE} does not exist",
        hint="make the offline base with `inv images.base` (needs debootstrap and root), "
        "then run the build again",
    )


def _try_pull(client: Any, name: str) -> str | None:
    """Pull ``name``; return None on success or the error text."""
    from docker.errors import DockerException

    repository, _, tag = (
        name.rpartition(":") if ":" in name.rsplit("/", maxsplit=1)[-1] else (name, "", "")
    )
    try:
        client.api.pull(repository, tag=tag or "latest")
    except DockerException as exc:
        return str(exc).splitlines()[0][:300]
    return None


# ---------------------------------------------------------------------------
# The build context
# ---------------------------------------------------------------------------


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _source_digest(root: Path, packages: Iterable[str]) -> str:
    """A digest of the source files of workspace ``packages`` (their wheels' inputs)."""
    digest = hashlib.sha256()
    for package in packages:
        base = root / "packages" / package
        for path in sorted(base.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _prepare_deps(root: Path, cache: Path, echo: Echo) -> tuple[str, Path]:
    """Export the worker's locked requirements and download their wheels (cached by content)."""
    requirements = _run(
        [
            "uv",
            "export",
            "--frozen",
            "--no-dev",
            "--no-emit-workspace",
            "--package",
            "ttg-worker",
            "--no-header",
            "--format",
            "requirements-txt",
        ],
        what="export the worker's locked requirements from uv.lock",
        timeout=120,
        cwd=root,
    )
    key = _digest(requirements, PIP_REQUIREMENT, *TARGET_PLATFORMS, TARGET_PYTHON)
    wheelhouse = cache / "wheelhouse" / key
    if (wheelhouse / ".complete").exists():
        return requirements, wheelhouse
    echo("Downloading the worker's locked dependency wheels for CPython 3.11 manylinux.")
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    (wheelhouse / "deps").mkdir(parents=True)
    (wheelhouse / "tools").mkdir()
    (wheelhouse / "requirements.txt").write_text(requirements, encoding="utf-8")
    platform_args: list[str] = []
    for platform in TARGET_PLATFORMS:
        platform_args += ["--platform", platform]
    pip = ["uv", "run", "--no-project", "--with", PIP_REQUIREMENT, "python", "-m", "pip"]
    common = [
        "download",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        *platform_args,
        "--python-version",
        TARGET_PYTHON,
        "--implementation",
        "cp",
    ]
    _run(
        [
            *pip,
            *common,
            "--dest",
            str(wheelhouse / "deps"),
            "-r",
            str(wheelhouse / "requirements.txt"),
        ],
        what="download the dependency wheels",
        timeout=600,
        cwd=root,
    )
    _run(
        [*pip, *common, "--no-deps", "--dest", str(wheelhouse / "tools"), PIP_REQUIREMENT],
        what="download the pip wheel used inside the build",
        timeout=600,
        cwd=root,
    )
    (wheelhouse / ".complete").write_text(key, encoding="utf-8")
    return requirements, wheelhouse


def prepare_context(root: Path, echo: Echo | None = None) -> Path:
    """Lay out the build context under ``.cache/image/context`` and return it.

    Files whose content did not change are left untouched, so the builder's
    cache sees the same context and reuses every layer.
    """
    say = echo or (lambda _text: None)
    cache = root / ".cache" / "image"
    requirements, wheelhouse = _prepare_deps(root, cache, say)

    app = cache / "app-wheels" / _source_digest(root, WORKER_PACKAGES)
    if not (app / ".complete").exists():
        if app.exists():
            shutil.rmtree(app)
        app.mkdir(parents=True)
        for package in WORKER_PACKAGES:
            _run(
                ["uv", "build", "--wheel", "--package", package, "--out-dir", str(app), "--quiet"],
                what=f"build the {package} wheel",
                timeout=300,
                cwd=root,
            )
        (app / ".complete").touch()

    context = cache / "context"
    wanted: dict[str, bytes] = {}
    source = root / "images" / "worker"
    for path in sorted(source.iterdir()):
        if path.is_file():
            wanted[path.name] = path.read_bytes()
    wanted["requirements.txt"] = requirements.encode()
    for wheel in sorted((wheelhouse / "deps").glob("*.whl")):
        wanted[f"wheels/deps/{wheel.name}"] = wheel.read_bytes()
    pip_wheels = sorted((wheelhouse / "tools").glob("pip-*.whl"))
    if not pip_wheels:
        raise ImageBuildError(f"no pip wheel in {wheelhouse / 'tools'}; remove it and retry")
    wanted["wheels/tools/pip.whl"] = pip_wheels[0].read_bytes()
    for wheel in sorted(app.glob("*.whl")):
        wanted[f"wheels/app/{wheel.name}"] = wheel.read_bytes()
    _sync_tree(context, wanted)
    return context


def _sync_tree(root: Path, files: dict[str, bytes]) -> None:
    """Make ``root`` hold exactly ``files``, rewriting only those whose bytes changed."""
    root.mkdir(parents=True, exist_ok=True)
    for relative, data in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.read_bytes() == data:
            continue
        target.write_bytes(data)
    for path in sorted(root.rglob("*"), reverse=True):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


# ---------------------------------------------------------------------------
# Building, tagging, pushing
# ---------------------------------------------------------------------------


def _stream_build(
    chunks: Iterator[dict[str, Any]], echo: Echo | None, on_step: Echo | None = None
) -> tuple[str, list[str]]:
    """Follow a decoded build stream; return the image id, or raise with the log tail.

    ``echo`` gets every output line, ``on_step`` only the ``Step i/n : ...`` lines.
    """
    log: list[str] = []
    image_id = ""
    failure: str | None = None
    for chunk in chunks:
        if "stream" in chunk:
            for line in str(chunk["stream"]).splitlines():
                if line.strip():
                    log.append(line.rstrip())
                    if echo is not None:
                        echo(line.rstrip())
                    if on_step is not None and line.startswith("Step "):
                        on_step(line.rstrip())
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
        if "error" in chunk or "errorDetail" in chunk:
            # Keep reading: the daemon ends the stream after the error, and a stream
            # left half-read keeps its connection open.
            detail = chunk.get("errorDetail") or {}
            failure = str(detail.get("message") or chunk.get("error") or "unknown error")
    if failure is not None:
        step = next((line for line in reversed(log) if line.startswith("Step ")), "")
        tail = "\n".join(log[-25:])
        where = f" at {step}" if step else ""
        raise ImageBuildError(
            f"the image build failed{where}: {failure.strip()}\n--- build log tail ---\n{tail}"
        )
    if not image_id:
        built = [line for line in log if line.startswith("Successfully built ")]
        if built:
            image_id = built[-1].split()[-1]
    if not image_id:
        tail = "\n".join(log[-25:])
        raise ImageBuildError(f"the build stream ended without an image id:\n{tail}")
    return image_id, log


def run_build(
    client: Any,
    context: Path,
    *,
    buildargs: dict[str, str] | None = None,
    nocache: bool = False,
    echo: Echo | None = None,
    on_step: Echo | None = None,
    chain: set[str] | None = None,
) -> str:
    """Build ``context`` with the streaming API and return the image id, untagged.

    ``chain``, when given, receives the short ids of every image the build
    made or took from the cache (see :func:`build_chain`).

    A failed step arrives as an ``error``/``errorDetail`` chunk, not as an
    exception; it becomes an :class:`ImageBuildError` naming the step, its
    message and the log tail. ``forcerm`` removes intermediate containers
    even then, and ``pull=False`` keeps the build offline.
    """
    chunks = client.api.build(
        path=str(context),
        dockerfile="Dockerfile",
        buildargs=buildargs or {},
        decode=True,
        rm=True,
        forcerm=True,
        pull=False,
        nocache=nocache,
    )
    image_id, log = _stream_build(chunks, echo, on_step)
    if chain is not None:
        chain.update(build_chain(log))
    return image_id


def build_image(
    version: str,
    *,
    base: str | None = None,
    tags: Iterable[str] | None = None,
    verbose: bool = False,
    nocache: bool = False,
    echo: Echo | None = None,
    on_step: Echo | None = None,
    root: Path | None = None,
    timeout: int = 1800,
) -> BuildResult:
    """Build the worker image for ``version`` and tag it ``ttg-worker:v<version>`` and ``latest``.

    ``echo`` gets progress sentences (and, with ``verbose``, the whole build
    output); ``on_step`` gets each ``Step i/n`` line, for a status display.
    ``tags`` replaces the default tags (tests use a throwaway tag). Tags are
    applied only after the build succeeded, so a failed build leaves no
    half-tagged image; ``forcerm`` removes the intermediate containers even
    when a step fails.
    """
    validate_version(version)
    say = echo or (lambda _text: None)
    names = (
        list(tags)
        if tags is not None
        else [
            f"{labels.IMAGE_REPOSITORY}:{image_tag(version)}",
            f"{labels.IMAGE_REPOSITORY}:latest",
        ]
    )
    for name in names:
        _split_name(name)
    checkout = root or project_root()
    with _docker(timeout=timeout) as client:
        return _build_with(
            client,
            version=version,
            base=base,
            names=names,
            verbose=verbose,
            nocache=nocache,
            say=say,
            on_step=on_step,
            checkout=checkout,
        )


def _build_with(
    client: Any,
    *,
    version: str,
    base: str | None,
    names: list[str],
    verbose: bool,
    nocache: bool,
    say: Echo,
    on_step: Echo | None,
    checkout: Path,
) -> BuildResult:
    chosen = resolve_base(client, base, echo=say)

    started = time.monotonic()
    context = prepare_context(checkout, echo=say)
    image_labels_ = image_labels(version, git_revision(checkout))
    say(f"Building the worker image for version {version} from {chosen}.")
    chain: set[str] = set()
    build_started = time.time()
    image_id = run_build(
        client,
        context,
        buildargs={"BASE_IMAGE": chosen, **label_build_args(image_labels_)},
        nocache=nocache,
        echo=say if verbose else None,
        on_step=on_step,
        chain=chain,
    )
    image = client.images.get(image_id)
    got = image.labels or {}
    wrong = {key: got.get(key) for key, value in image_labels_.items() if got.get(key) != value}
    if wrong:
        raise ImageBuildError(
            f"image {image.short_id} was built, but these labels differ from ttg_ops.images "
            f"(is images/worker/Dockerfile's LABEL out of date?): {wrong}"
        )
    previous = {found.id for name in names if (found := _image_or_none(client, name)) is not None}
    for name in names:
        repository, tag = _split_name(name)
        if not image.tag(repository, tag=tag):
            raise ImageBuildError(f"tagging image {image.short_id} as {name} failed")
    _remove_untagged(client, previous - {image.id})
    # The classic builder keeps each stage's last image untagged; those of
    # earlier builds are superseded cache (about 120 MB each), this build's stay.
    pruned, freed = prune_stage_images(
        client, chain | {image.id.removeprefix("sha256:")[:12]}, int(build_started)
    )
    if pruned:
        say(f"Removed {pruned} build-stage image(s) of earlier builds ({freed / 1e6:.0f} MB).")
    seconds = time.monotonic() - started
    image.reload()
    return BuildResult(
        image_id=image.id,
        tags=names,
        size=int(image.attrs.get("Size", 0)),
        seconds=seconds,
        base=chosen,
        labels=image_labels_,
    )


def is_build_stage(image_labels: dict[str, str] | None, tags: Iterable[str]) -> bool:
    """Whether an untagged TTG image is a Dockerfile stage the build left as cache.

    Stage images carry ``ttg.component=build-stage`` (set in the Dockerfile's
    first stage); those of builds made before that label existed inherited the
    offline base's labels, ``ttg.component=base``, but unlike the base they
    have no tag.
    """
    found = image_labels or {}
    return (
        not list(tags)
        and found.get(labels.DOCKER_PROJECT) == labels.PROJECT
        and found.get(labels.DOCKER_COMPONENT) in (STAGE_COMPONENT, BASE_COMPONENT)
    )


_STEP_ID = re.compile(r"^\s*---> ([0-9a-f]{12})\b")


def build_chain(log: Iterable[str]) -> set[str]:
    """Short ids of every image a build log made or reused (its whole cache chain)."""
    chain = set()
    for line in log:
        if match := _STEP_ID.match(line):
            chain.add(match.group(1))
        elif line.startswith("Successfully built "):
            chain.add(line.split()[-1][:12])
    return chain


def prune_stage_images(client: Any, keep: set[str], before: float) -> tuple[int, int]:
    """Remove dangling build-stage images of earlier builds; return their count and bytes.

    ``keep`` holds the short ids of the current build's cache chain, which stay
    so that a rebuild without changes is served from the cache. Only stage
    images created before ``before`` (a Unix time: the start of this build) are
    removed, so a build running at the same time keeps its fresh stages.
    Removing a stage image also removes its untagged parents that nothing else
    uses (the superseded steps of that stage).
    """
    from docker.errors import DockerException

    removed, freed = 0, 0
    dangling = client.api.images(filters={"dangling": True, "label": [_PROJECT_LABEL]})
    for entry in dangling:
        image_id = str(entry["Id"])
        short = image_id.removeprefix("sha256:")[:12]
        tags = [tag for tag in entry.get("RepoTags") or [] if tag != "<none>:<none>"]
        if short in keep or not is_build_stage(entry.get("Labels"), tags):
            continue
        if int(entry.get("Created") or 0) >= before:
            continue
        try:
            client.images.remove(image_id, noprune=False)
        except DockerException as exc:
            # Used by a container, or already gone: `inv cleanup` lists what is left.
            logger.debug("Keeping the build-stage image {}: {}", short, exc)
            continue
        removed += 1
        freed += int(entry.get("Size") or 0)
    return removed, freed


_PROJECT_LABEL = f"{labels.DOCKER_PROJECT}={labels.PROJECT}"


def _remove_untagged(client: Any, image_ids: Iterable[str]) -> None:
    """Remove images that lost their last tag to a rebuild (metadata-only leftovers)."""
    from docker.errors import DockerException

    for image_id in image_ids:
        image = _image_or_none(client, image_id)
        if image is None or image.tags:
            continue
        try:
            client.images.remove(image_id, noprune=False)
        except DockerException as exc:
            # Still used by a container or a child image: leave it for `inv cleanup`.
            logger.debug("Keeping the untagged image {}: {}", image_id[:19], exc)


def _split_name(name: str) -> tuple[str, str]:
    """Split ``repository:tag`` and check both halves."""
    last = name.rsplit("/", maxsplit=1)[-1]
    repository, tag = name.rsplit(":", 1) if ":" in last else (name, "latest")
    if not repository or not _DOCKER_TAG.match(tag):
        raise ConfigError(
            f"image name {name!r} is not REPOSITORY:TAG with a tag of letters, digits, '_', '.' "
            "and '-'"
        )
    return repository, tag


def push_image(image: str, registry: str, version: str, echo: Echo | None = None) -> str:
    """Tag ``image`` as ``REGISTRY/ttg-worker:v<version>`` and push it; return that name."""
    say = echo or (lambda _text: None)
    registry = registry.strip().rstrip("/")
    if not registry or not _REGISTRY.match(registry):
        raise ConfigError(
            f"registry {registry!r} is not a registry address such as localhost:5000 or "
            "registry.example.com/team"
        )
    repository = f"{registry}/{labels.IMAGE_REPOSITORY}"
    tag = image_tag(version)
    with _docker(timeout=600) as client:
        return _push_with(client, image, repository, tag, say)


def _push_with(client: Any, image: str, repository: str, tag: str, say: Echo) -> str:
    found = _image_or_none(client, image)
    if found is None:
        raise ConfigError(f"image {image} does not exist; build it first with `inv build`")
    found.tag(repository, tag=tag)
    target = f"{repository}:{tag}"
    say(f"Pushing {target}.")
    from docker.errors import DockerException

    try:
        failure = None
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail") or {}
                failure = detail.get("message") or chunk.get("error")
                continue  # read to the end of the stream so its connection is released
            status = chunk.get("status")
            if status and chunk.get("id") is None:
                say(str(status))
        if failure is not None:
            raise ImageBuildError(
                f"pushing {target} failed: {failure}",
                hint="check that the registry runs and that `docker login` was done for it",
            )
    except (DockerException, ImageBuildError) as exc:
        # The registry tag is only useful once pushed; do not leave it behind.
        with contextlib.suppress(DockerException):
            client.images.remove(target, noprune=True)
        if isinstance(exc, ImageBuildError):
            raise
        raise ImageBuildError(f"pushing {target} failed: {str(exc)[:300]}") from exc
    return target


def load_into_kind(image: str, echo: Echo | None = None) -> Any:
    """Load ``image`` into the kind cluster through ``ttg_ops.kind``."""
    try:
        from ttg_ops import kind
    except ImportError as exc:
        raise PreflightError(
            "loading into kind needs ttg_ops.kind, which is not available in this checkout"
        ) from exc
    loader = getattr(kind, "load_image", None)
    if loader is None:
        raise PreflightError("ttg_ops.kind has no load_image function; cannot load into kind")
    if echo is not None:
        echo(f"Loading {image} into the kind cluster.")
        return loader(image, echo=echo)
    return loader(image)
