"""The one definition of the labels TTG puts on everything it creates.

Inventory and cleanup find TTG's objects only through these labels, never by
name, so an object without them is never touched.
"""

from __future__ import annotations

import re

PROJECT = "distributed-compute"
COMPONENT = "worker"
APP_NAME = "ttg-worker"
IMAGE_REPOSITORY = "ttg-worker"
DEFAULT_CLUSTER = "ttg-cluster"
DEFAULT_NAMESPACE = "ttg"
JOB_NAME = "ttg-computation"

# Docker images and containers: the seed's dotted keys.
DOCKER_PROJECT = "ttg.project"
DOCKER_COMPONENT = "ttg.component"
DOCKER_VERSION = "ttg.version"
DOCKER_RUN_ID = "ttg.run-id"

# Kubernetes objects: prefixed keys next to the standard app.kubernetes.io set.
K8S_PROJECT = "ttg.io/project"
K8S_COMPONENT = "ttg.io/component"
K8S_VERSION = "ttg.io/version"
K8S_RUN_ID = "ttg.io/run-id"
K8S_CREATED_NAMESPACE = "ttg.io/created-by-ttg"

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def docker_labels(version: str, run_id: str | None = None) -> dict[str, str]:
    """Labels for a Docker image (without run id) or container (with it)."""
    labels = {
        DOCKER_PROJECT: PROJECT,
        DOCKER_COMPONENT: COMPONENT,
        DOCKER_VERSION: version,
    }
    if run_id is not None:
        labels[DOCKER_RUN_ID] = run_id
    return labels


def docker_selector() -> dict[str, list[str]]:
    """A Docker SDK ``filters`` value that matches only TTG's objects."""
    return {"label": [f"{DOCKER_PROJECT}={PROJECT}"]}


def k8s_labels(version: str, run_id: str | None = None) -> dict[str, str]:
    """Labels for Kubernetes Jobs, pod templates and namespaces."""
    labels = {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/part-of": "ttg",
        "app.kubernetes.io/managed-by": "ttg",
        "app.kubernetes.io/version": version,
        K8S_PROJECT: PROJECT,
        K8S_COMPONENT: COMPONENT,
        K8S_VERSION: version,
    }
    if run_id is not None:
        labels[K8S_RUN_ID] = run_id
    return labels


def k8s_selector(run_id: str | None = None) -> str:
    """A Kubernetes label selector for TTG's objects, optionally of one run."""
    selector = f"{K8S_PROJECT}={PROJECT}"
    if run_id is not None:
        selector += f",{K8S_RUN_ID}={run_id}"
    return selector


def is_valid_label_value(value: str) -> bool:
    """Whether ``value`` is a legal Kubernetes label value."""
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))
