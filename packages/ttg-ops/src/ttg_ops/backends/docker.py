"""Run workers as Docker containers of the worker image, one per worker index.

Each container gets :func:`ttg_ops.spec.worker_env` for its index plus
``TTG_OUTPUT_DIR=/output``, ``POD_NAME`` (the container name,
``ttg-<run id>-<index>``) and ``NODE_NAME`` (the Docker host's name), and
carries :func:`ttg_ops.labels.docker_labels` with the run id, so inventory
and cleanup find it. The run's ``results`` directory is bind-mounted at
``/output``; a parameter space file given as a host path is mounted
read-only under ``/input`` and ``TTG_SPACE`` is rewritten to match.

Containers run locked down: read-only root file system with a small tmpfs
at ``/tmp``, every capability dropped, ``no-new-privileges``, no network,
memory and process limits.

Which user writes the results: the image's unprivileged user (10001) when
TTG runs as root, after the results directory is handed to that user; the
caller's own uid:gid otherwise, so the files belong to whoever started the
run. A container never runs as root.

One thread per container follows its log stream (stdout and stderr merged,
as ``kubectl logs`` shows them; see :class:`ttg_ops.backends.base.LineStreams`)
and puts ``(index, line)`` on a queue that :meth:`DockerBackend.lines` drains.
States come from ``docker inspect``: exit code, start and finish times, OOM
kills. :meth:`DockerBackend.stop` sends SIGTERM, waits a grace period, kills
what is left, then removes the containers unless ``keep`` is set.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from ttg_ops import dockerapi, labels
from ttg_ops.backends.base import (
    FAILED,
    LAST_LINES,
    MISSING,
    PENDING,
    RUNNING,
    SUCCEEDED,
    LineStreams,
    WorkerState,
)
from ttg_ops.errors import ConfigError, PreflightError
from ttg_ops.spec import (
    ENV_NODE_NAME,
    ENV_OUTPUT_DIR,
    ENV_POD_NAME,
    ENV_SPACE,
    RunSpec,
    validate_version,
    worker_env,
)

CONTAINER_OUTPUT = "/output"
CONTAINER_INPUT = "/input"
IMAGE_UID = 10001
IMAGE_GID = 10001
STOP_GRACE_SECONDS = 10.0
DEFAULT_MEMORY = "512m"
DEFAULT_PIDS = 256
INDEX_LABEL = "ttg.worker-index"
# An image reference as Docker parses it: [registry[:port]/]path[:tag][@digest].
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REFERENCE = re.compile(
    r"^(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
    r"[A-Za-z0-9])?)*(?::\d+)?|\[[0-9A-Fa-f:]+\](?::\d+)?)/)?"
    rf"{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:"
    r"[0-9A-Fa-f]{32,})?$"
)


def validate_image_reference(image: str) -> str:
    """Return ``image`` if Docker can parse it as an image reference, else raise ConfigError."""
    if len(image) > 255 or not _IMAGE_REFERENCE.match(image):
        raise ConfigError(
            f"image {image!r} is not a valid image reference; allowed: [registry[:port]/]"
            "name[:tag][@digest] with a lowercase name, such as ttg-worker:v1.1.0 or "
            "registry.example:5000/team/ttg-worker:v1.1.0"
        )
    return image


_DOCKER_TIME = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d\d:\d\d)$"
)


class DockerBackend:
    """One container of the worker image per worker index (see the module docs)."""

    name = "docker"

    def __init__(
        self,
        image: str | None = None,
        *,
        keep: bool = False,
        memory: str = DEFAULT_MEMORY,
        cpus: float | None = None,
        network: str = "none",
        stop_grace: float = STOP_GRACE_SECONDS,
        last_lines: int = LAST_LINES,
    ) -> None:
        # Import the Docker SDK now, before a run directory exists: a Ctrl-C in the
        # middle of an import during launch leaves half-initialised modules behind,
        # and stopping the run then fails with an AttributeError.
        import docker  # noqa: F401
        import requests.exceptions  # noqa: F401

        import ttg_ops.images  # noqa: F401

        self.image = validate_image_reference(image) if image else image
        self.keep = keep
        self.memory = memory
        self.cpus = cpus
        self.network = network
        self.stop_grace = stop_grace
        self._client: Any = None
        self._containers: list[Any | None] = []
        self._states: list[WorkerState] = []
        self._streams = LineStreams(last_lines)
        self._removed = False

    # -- Backend protocol ------------------------------------------------------

    def launch(self, spec: RunSpec, run_dir: Path) -> None:
        """Create and start one container per index; results go under ``run_dir / "results"``."""
        from ttg_ops.images import image_tag

        image = self.image or f"{labels.IMAGE_REPOSITORY}:{image_tag(spec.version)}"
        self.image = image
        self._client = dockerapi.client(timeout=120)
        try:
            self._require_image(image, spec.version)
            output = (Path(run_dir) / "results").resolve()
            output.mkdir(parents=True, exist_ok=True)
            user = self._prepare_output(output)
            volumes = {str(output): {"bind": CONTAINER_OUTPUT, "mode": "rw"}}
            space = self._space(spec, volumes)
            node = str(self._client.info().get("Name") or "docker")
        except BaseException:
            self._close()
            raise

        self._states = [WorkerState(index=i) for i in range(spec.workers)]
        self._streams.reset(spec.workers)
        self._containers = [None] * spec.workers
        container_labels = labels.docker_labels(spec.version, spec.run_id)
        settings: list[dict[str, Any]] = []
        for index in range(spec.workers):
            name = f"ttg-{spec.run_id}-{index}"
            env = worker_env(spec, index)
            env[ENV_OUTPUT_DIR] = CONTAINER_OUTPUT
            env[ENV_POD_NAME] = name
            env[ENV_NODE_NAME] = node
            if space is not None:
                env[ENV_SPACE] = space
            self._states[index].name, self._states[index].node = name, node
            settings.append(
                {
                    "name": name,
                    "hostname": name,
                    "environment": env,
                    "labels": {**container_labels, INDEX_LABEL: str(index)},
                    "volumes": volumes,
                    "user": user,
                    "read_only": True,
                    "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
                    "cap_drop": ["ALL"],
                    "security_opt": ["no-new-privileges"],
                    "network_mode": self.network,
                    "mem_limit": self.memory,
                    "memswap_limit": self.memory,
                    "pids_limit": DEFAULT_PIDS,
                    "nano_cpus": int(self.cpus * 1e9) if self.cpus else None,
                    "detach": True,
                }
            )

        # Create and start the containers side by side: each takes a few hundred
        # milliseconds of daemon work, which would otherwise add up per worker.
        with ThreadPoolExecutor(max_workers=min(spec.workers, 8)) as pool:
            futures = [
                pool.submit(self._create_and_start, index, image, options)
                for index, options in enumerate(settings)
            ]
            errors = [exc for future in futures if (exc := future.exception()) is not None]
        if errors:
            self._abort()
            first = errors[0]
            if isinstance(first, PreflightError):
                raise first
            raise PreflightError(f"cannot start the worker containers: {first}") from first

    def _create_and_start(self, index: int, image: str, options: dict[str, Any]) -> None:
        from docker.errors import APIError

        name = options["name"]
        try:
            container = self._client.containers.create(image, **options)
        except APIError as exc:
            raise PreflightError(
                f"cannot create container {name} from {image}: {exc.explanation or exc}",
                hint="remove leftovers of an earlier run with `inv cleanup`",
            ) from exc
        self._states[index].created_at = time.time()
        self._containers[index] = container
        try:
            container.start()
        except APIError as exc:
            raise PreflightError(
                f"cannot start container {name}: {exc.explanation or exc}"
            ) from exc
        self._states[index].state = RUNNING
        logger.debug(f"Started worker {index} as container {name}.")
        self._streams.follow(
            index,
            f"ttg-docker-{index}",
            _log_lines(container),
            on_end=functools.partial(self._record_end, index, container),
        )

    def lines(self, timeout: float | None = None) -> Iterator[tuple[int, str]]:
        """Yield ``(index, line)`` as containers print; end when every container has exited.

        With ``timeout``, give up waiting for the next line after that many
        seconds (the generator then ends although containers still run).
        """
        return self._streams.lines(timeout)

    def states(self) -> list[WorkerState]:
        """Each worker's state, with its last lines, ordered by index."""
        states = self._streams.with_tails(self._states)
        for state in states:
            if (
                state.exit_code is not None
                and not state.last_lines
                and "memory" not in state.message
            ):
                # A container that printed nothing never ran a TTG worker.
                state.message = (
                    f"it printed nothing and no summary: is {self.image} a TTG worker image "
                    "(entrypoint ttg-worker)?"
                )
        return states

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM running containers, kill them after ``grace`` s, then remove them unless kept."""
        from docker.errors import APIError, NotFound
        from requests.exceptions import RequestException

        grace = self.stop_grace if grace is None else grace
        running = []
        for index, container in enumerate(self._containers):
            if container is None or self._states[index].state != RUNNING:
                continue
            logger.info(f"Stopping worker {index} (container {container.name}) with SIGTERM.")
            with contextlib.suppress(NotFound, APIError):
                container.kill(signal="SIGTERM")
                running.append((index, container))
        deadline = time.monotonic() + grace
        for index, container in running:
            try:
                container.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except (NotFound, APIError):
                continue
            except RequestException:  # the SDK's wait timeout is a requests timeout
                logger.warning(
                    f"Worker {index} (container {container.name}) did not exit within "
                    f"{grace:.0f} s of SIGTERM; killing it."
                )
                with contextlib.suppress(NotFound, APIError):
                    container.kill()
        self._streams.join(timeout=30)
        if not self.keep:
            self._remove_all()
        self._close()

    # -- Extras -----------------------------------------------------------------

    def kill(self, index: int, sig: int | str = "SIGKILL") -> None:
        """Send ``sig`` to worker ``index``'s container (failure drills and tests)."""
        from docker.errors import APIError

        container = self._containers[index]
        if container is not None:
            with contextlib.suppress(APIError):
                container.kill(signal=sig)

    def container_names(self) -> list[str]:
        return [container.name for container in self._containers if container is not None]

    # -- Internals --------------------------------------------------------------

    def _require_image(self, image: str, version: str) -> None:
        from docker.errors import APIError, ImageNotFound

        validate_image_reference(image)
        try:
            self._client.images.get(image)
        except ImageNotFound:
            # ttg-worker:v<version> is what `inv build --version=<version>` makes.
            repository, _, tag = image.rpartition(":")
            if repository == labels.IMAGE_REPOSITORY and tag.startswith("v"):
                with contextlib.suppress(ConfigError):
                    version = validate_version(tag[1:])
            raise PreflightError(
                f"the worker image {image} does not exist in the Docker daemon",
                hint=f"build it with `inv build --version={version}` or pass --image",
            ) from None
        except APIError as exc:
            raise PreflightError(
                f"the Docker daemon refused to look up the worker image {image}: "
                f"{exc.explanation or exc}"
            ) from None

    def _prepare_output(self, output: Path) -> str:
        """Make ``output`` writable for the container user and return that ``uid:gid``."""
        if os.geteuid() != 0:
            return f"{os.getuid()}:{os.getgid()}"
        for path in (output, *output.iterdir()):
            os.chown(path, IMAGE_UID, IMAGE_GID)
        return f"{IMAGE_UID}:{IMAGE_GID}"

    def _space(self, spec: RunSpec, volumes: dict[str, dict[str, str]]) -> str | None:
        """Mount a host space file read-only; return its path inside the container."""
        if not spec.space:
            return None
        host = Path(spec.space).expanduser()
        if host.is_dir():
            raise ConfigError(
                f"space {spec.space!r} is a directory; pass a .yaml/.json/.jsonl/.csv file"
            )
        if not host.is_file():
            # Not on the host: a path inside the image, passed through unchanged.
            return spec.space
        if os.geteuid() == 0 and not host.stat().st_mode & stat.S_IROTH:
            raise ConfigError(
                f"space file {host} is not readable by the container user {IMAGE_UID}",
                hint=f"make it readable: chmod o+r {host}",
            )
        inside = f"{CONTAINER_INPUT}/{host.name}"
        volumes[str(host.resolve())] = {"bind": inside, "mode": "ro"}
        return inside

    def _record_end(self, index: int, container: Any) -> None:
        from docker.errors import APIError, NotFound
        from requests.exceptions import RequestException

        state = self._states[index]
        try:
            container.wait(timeout=60)
            container.reload()
        except NotFound:
            state.state = MISSING
            state.message = f"container {container.name} disappeared before it was inspected"
            return
        except (APIError, RequestException) as exc:
            state.state = FAILED
            state.message = f"could not read how container {container.name} ended: {exc}"
            return
        with contextlib.suppress(APIError):
            info = container.attrs.get("State", {})
            code = int(info.get("ExitCode", -1))
            state.exit_code = code
            state.started_at = _timestamp(info.get("StartedAt"))
            state.finished_at = _timestamp(info.get("FinishedAt"))
            state.state = SUCCEEDED if code == 0 else FAILED
            if info.get("OOMKilled"):
                state.message = f"killed: out of memory (limit {self.memory})"
            elif code:
                state.message = f"exited with code {code}"
            logger.debug(f"Worker {index} (container {container.name}) exited with code {code}.")

    def _remove_all(self) -> None:
        from docker.errors import APIError, NotFound

        if self._removed:
            return
        for container in self._containers:
            if container is None:
                continue
            with contextlib.suppress(NotFound):
                try:
                    container.remove(force=True, v=True)
                except APIError as exc:
                    logger.warning(f"Could not remove container {container.name}: {exc}")
        self._removed = True

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _abort(self) -> None:
        """Remove what a failed launch created, whatever ``keep`` says."""
        for state in self._states:
            if state.state == PENDING:
                state.state = MISSING
        self._remove_all()
        self._streams.join(timeout=30)
        self._close()


def _log_lines(container: Any) -> Iterator[str]:
    """One container's log (stdout and stderr merged) as lines, until the container exits."""
    pending = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", "replace").rstrip("\r")
        if pending:
            yield pending.decode("utf-8", "replace").rstrip("\r")
    except Exception as exc:  # a lost stream must not hang the run: record and go on
        logger.warning(f"Lost the log stream of container {container.name}: {exc}")


def _timestamp(value: str | None) -> float | None:
    """A Docker RFC 3339 time (nanoseconds, ``Z``) as a UNIX timestamp; None for the zero time."""
    match = _DOCKER_TIME.match(value or "")
    if match is None or match["date"].startswith("0001-"):
        return None
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    fraction = (match["fraction"] or "0")[:6]
    return datetime.fromisoformat(f"{match['date']}.{fraction}{zone}").timestamp()
