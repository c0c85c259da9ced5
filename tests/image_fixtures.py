"""Fixtures for tests that run the worker image in real containers.

The image is built once per session from the current tree with
``ttg_ops.images.build_image`` (the same code as ``inv build``; cached layers
make it fast). Containers are started with testcontainers' ``DockerContainer``
with its reaper (Ryuk) disabled, because the reaper image cannot be pulled
offline: every container carries this session's label instead and is removed
by the fixtures' finalisers, even when a test fails.

Without a Docker daemon the tests skip, or fail under ``TTG_REQUIRE_DOCKER=1``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# Before testcontainers is imported anywhere: the reaper image cannot be pulled here.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import pytest

SESSION = uuid.uuid4().hex[:10]
SESSION_LABEL = "ttg.test-session"
NEEDS_DOCKER = "needs a Docker daemon (start one with `dockerd &`)"


@dataclass
class WorkerRun:
    """A worker container that ran to its end: exit code, both streams, final inspect data."""

    exit_code: int
    stdout: str
    stderr: str
    attrs: dict[str, Any]

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]


def session_labels(version: str) -> dict[str, str]:
    """TTG's container labels plus this test session's, so cleanup can find leftovers."""
    from ttg_ops.labels import docker_labels

    return {**docker_labels(version, run_id=f"test-{SESSION}"), SESSION_LABEL: SESSION}


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A Docker SDK client; removes every container of this session at the end."""
    from ttg_ops import dockerapi
    from ttg_ops.errors import PreflightError

    from tests.conftest import require_or_skip

    try:
        client = dockerapi.client(timeout=60)
    except PreflightError as exc:
        require_or_skip("TTG_REQUIRE_DOCKER", f"{NEEDS_DOCKER}: {exc}")
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True
    yield client
    leftovers = client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={SESSION}"})
    for container in leftovers:
        container.remove(force=True, v=True)


@pytest.fixture(scope="session")
def worker_image(docker_client: Any) -> Any:
    """The worker image built from the current tree (``ttg_ops.images.BuildResult``)."""
    from ttg_ops.errors import PreflightError
    from ttg_ops.images import build_image
    from ttg_ops.spec import DEFAULT_VERSION

    from tests.conftest import require_or_skip

    try:
        return build_image(DEFAULT_VERSION)
    except PreflightError as exc:
        require_or_skip("TTG_REQUIRE_DOCKER", f"cannot build the worker image: {exc}")


@pytest.fixture
def run_worker(docker_client: Any, worker_image: Any) -> Iterator[Callable[..., WorkerRun]]:
    """Run the worker image to its end and return a :class:`WorkerRun`.

    ``run_worker(env, timeout=..., while_running=fn, **create_kwargs)``:
    ``while_running(container)`` is called once the container has started
    (to send it a signal, say); ``create_kwargs`` go to the Docker SDK
    (``read_only``, ``user``, ``entrypoint``...), except ``tmpfs`` (path to
    mount options) and ``volumes`` (host directory to container path, mounted
    read-write), which go through testcontainers' own mount settings.
    """
    from docker.errors import NotFound
    from testcontainers.core.container import DockerContainer

    started: list[DockerContainer] = []

    def run(
        env: dict[str, str],
        timeout: float = 120,
        while_running: Callable[[Any], None] | None = None,
        **create_kwargs: Any,
    ) -> WorkerRun:
        labels = session_labels(worker_image.labels["ttg.version"])
        tmpfs: dict[str, str] = create_kwargs.pop("tmpfs", {})
        volumes: dict[str, str] = create_kwargs.pop("volumes", {})
        container = DockerContainer(worker_image.tags[0], env=env, labels=labels, **create_kwargs)
        for path, options in tmpfs.items():
            container.tmpfs[path] = options
        for host, target in volumes.items():
            container.with_volume_mapping(host, target, mode="rw")
        started.append(container)
        container.start()
        wrapped = container.get_wrapped_container()
        if while_running is not None:
            while_running(wrapped)
        # Wait for the exit first, then read the logs: a fast worker may be gone already.
        status = wrapped.wait(timeout=timeout)
        stdout, stderr = container.get_logs()
        wrapped.reload()
        return WorkerRun(
            exit_code=int(status["StatusCode"]),
            stdout=stdout.decode("utf-8", errors="replace"),
            stderr=stderr.decode("utf-8", errors="replace"),
            attrs=wrapped.attrs,
        )

    yield run
    for container in started:
        with contextlib.suppress(NotFound):
            container.stop()
