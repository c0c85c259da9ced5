"""The one place TTG talks to the kubernetes client: contexts and error mapping.

Every other module gets its API client from :func:`api_client` and wraps
calls in :func:`api_errors`, so a 404, 409, 410, 403 or 422 becomes a small
domain error with the cause chained and the response body truncated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ttg_ops.errors import PreflightError, TTGError
from ttg_ops.labels import DEFAULT_CLUSTER

DEFAULT_CONTEXT = f"kind-{DEFAULT_CLUSTER}"
_BODY_LIMIT = 300


class ApiError(TTGError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0 when unreachable)."""

    status = 0


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    """A watch or list resourceVersion expired; list again and resume."""

    status = 410


class Forbidden(ApiError):
    status = 403


class Invalid(ApiError):
    status = 422


class ClusterUnreachable(PreflightError):
    """The API server of the named context does not answer."""


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls for cls in (NotFound, Conflict, Gone, Forbidden, Invalid)
}


def kubeconfig_path(kubeconfig: str | None = None) -> str:
    """The kubeconfig in use: the argument, ``$KUBECONFIG``'s first entry or ~/.kube/config."""
    if kubeconfig:
        return kubeconfig
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return env.split(os.pathsep)[0]
    return str(Path.home() / ".kube" / "config")


def list_contexts(kubeconfig: str | None = None) -> list[str]:
    """Names of the contexts in the kubeconfig; empty when there is no kubeconfig."""
    from kubernetes import config

    path = kubeconfig_path(kubeconfig)
    if not Path(path).is_file():
        return []
    try:
        contexts, _active = config.list_kube_config_contexts(config_file=path)
    except config.ConfigException:
        return []
    return [c["name"] for c in contexts or []]


def api_client(context: str = DEFAULT_CONTEXT, kubeconfig: str | None = None) -> Any:
    """An API client for exactly ``context``; never the current context by accident."""
    from kubernetes import config

    path = kubeconfig_path(kubeconfig)
    names = list_contexts(path)
    if context not in names:
        available = ", ".join(names) if names else "none"
        raise PreflightError(
            f"kube context {context!r} is not in {path} (available: {available})",
            hint="create the kind cluster with `inv kind.create`, or name another "
            "cluster's context with --context",
        )
    try:
        return config.new_client_from_config(config_file=path, context=context)
    except config.ConfigException as exc:
        raise PreflightError(f"kube context {context!r} cannot be loaded: {exc}") from exc


def _truncate(text: str) -> str:
    return text if len(text) <= _BODY_LIMIT else text[:_BODY_LIMIT] + "..."


def _reason(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        return str(json.loads(body).get("message", body))
    except (ValueError, AttributeError):
        return str(body)


@contextmanager
def api_errors(what: str, context: str = "") -> Iterator[None]:
    """Translate client errors raised while doing ``what`` into TTG's API errors."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    try:
        yield
    except ApiException as exc:
        cls = _BY_STATUS.get(exc.status or 0, ApiError)
        error = cls(f"{what} failed ({exc.status} {exc.reason}): {_truncate(_reason(exc.body))}")
        error.status = exc.status or 0
        raise error from exc
    except (Urllib3Error, OSError) as exc:
        where = f" of context {context!r}" if context else ""
        raise ClusterUnreachable(
            f"{what} failed: the API server{where} does not answer ({_truncate(str(exc))})",
            hint="check that the cluster is running (`inv kind.status`)",
        ) from exc
