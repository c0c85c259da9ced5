"""Play a simulated pod's container with a real local process.

kwok runs nothing inside pods. To give a pod real output, a test runs the
program locally with the environment a kubelet would give the container
(plain values, downward API fields, ConfigMap and Secret keys), serves what
it printed as the pod's log and ends the pod with the program's exit code.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from ttg_ops.errors import TTGError

_FIELD = re.compile(r"^metadata\.(labels|annotations)\['(?P<key>[^']+)'\]$")


def _field(pod: Any, path: str) -> str:
    """The value of a downward API ``fieldRef`` path on ``pod``."""
    match = _FIELD.match(path)
    if match:
        source = pod.metadata.labels if match.group(1) == "labels" else pod.metadata.annotations
        return str((source or {}).get(match.group("key"), ""))
    simple = {
        "metadata.name": pod.metadata.name,
        "metadata.namespace": pod.metadata.namespace,
        "metadata.uid": pod.metadata.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": pod.spec.service_account_name,
        "status.podIP": pod.status.pod_ip if pod.status else None,
        "status.hostIP": pod.status.host_ip if pod.status else None,
    }
    if path not in simple:
        raise TTGError(f"the downward API field {path!r} of pod {pod.metadata.name} is not played")
    return str(simple[path] or "")


def _config_data(core: Any, namespace: str, kind: str, name: str) -> dict[str, str]:
    if kind == "ConfigMap":
        return dict(core.read_namespaced_config_map(name, namespace).data or {})
    data = core.read_namespaced_secret(name, namespace).data or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def container_environment(core: Any, pod: Any, container: str | None = None) -> dict[str, str]:
    """The environment a kubelet would give ``container`` (default: the first) of ``pod``."""
    containers = {c.name: c for c in pod.spec.containers}
    name = container or pod.spec.containers[0].name
    if name not in containers:
        raise TTGError(
            f"pod {pod.metadata.name} has no container {name!r} (it has {', '.join(containers)})"
        )
    spec = containers[name]
    namespace = pod.metadata.namespace
    env: dict[str, str] = {}
    for source in spec.env_from or []:
        prefix = source.prefix or ""
        if source.config_map_ref is not None:
            data = _config_data(core, namespace, "ConfigMap", source.config_map_ref.name)
        else:
            data = _config_data(core, namespace, "Secret", source.secret_ref.name)
        env.update({prefix + key: value for key, value in data.items()})
    for variable in spec.env or []:
        if variable.value_from is None:
            env[variable.name] = variable.value or ""
            continue
        origin = variable.value_from
        if origin.field_ref is not None:
            env[variable.name] = _field(pod, origin.field_ref.field_path)
        elif origin.config_map_key_ref is not None:
            ref = origin.config_map_key_ref
            env[variable.name] = _config_data(core, namespace, "ConfigMap", ref.name)[ref.key]
        elif origin.secret_key_ref is not None:
            ref = origin.secret_key_ref
            env[variable.name] = _config_data(core, namespace, "Secret", ref.name)[ref.key]
        else:
            raise TTGError(
                f"the source of variable {variable.name} in pod {pod.metadata.name} is not "
                "played (resourceFieldRef and fileKeyRef are not)"
            )
    return env
