"""The one place TTG gets a Docker client, with a clear error when there is none."""

from __future__ import annotations

import gc
import warnings
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
    message = ""
    api = None
    try:
        api = docker.from_env(timeout=timeout)
        api.ping()
    except DockerException as exc:
        message = str(exc)
    if message:
        # The exception is no longer referenced here, so the connection it holds
        # can be finalised now rather than warn later in unrelated code.
        if api is not None:
            api.close()
        api = None
        _collect_abandoned_sockets()
        raise PreflightError(
            f"the Docker daemon does not answer: {message[:200]}", hint=INSTALL_HINT
        )
    return api


def _collect_abandoned_sockets() -> None:
    """Finalise the socket the SDK leaves open when API version negotiation fails.

    ``docker.from_env()`` opens a connection to negotiate the API version and
    drops it unclosed when the daemon does not answer; collecting it here, with
    its ResourceWarning silenced, keeps the warning from surfacing later in
    unrelated code.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def available() -> bool:
    """Whether a Docker daemon answers, without raising."""
    try:
        client(timeout=5).close()
    except PreflightError:
        return False
    return True
