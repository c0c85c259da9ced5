"""The one place TTG gets a Docker client, with a clear error when there is none."""

from __future__ import annotations

from typing import Any

from ttg_ops.errors import PreflightError

INSTALL_HINT = (
    "install Docker (https://docs.docker.com/engine/install/, or `apt-get install docker.io` "
    "on Debian) and start the daemon (`dockerd &` or `systemctl start docker`)"
)


def client(timeout: int = 120) -> Any:
    """A Docker SDK client that has answered a ping, or a :class:`PreflightError`."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - docker is a declared dependency
        raise PreflightError("the docker Python SDK is not installed") from exc
    try:
        api = docker.from_env(timeout=timeout)
        api.ping()
    except DockerException as exc:
        raise PreflightError(
            f"the Docker daemon does not answer: {str(exc)[:200]}", hint=INSTALL_HINT
        ) from exc
    return api


def available() -> bool:
    """Whether a Docker daemon answers, without raising."""
    try:
        client(timeout=5)
    except PreflightError:
        return False
    return True
