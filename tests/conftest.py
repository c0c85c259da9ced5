"""Shared test set-up: heavy tiers skip with a reason, or fail when CI requires them."""

from __future__ import annotations

import os

import pytest

# The simulated Kubernetes cluster's fixtures; docs/TESTING.md describes them.
from tests.cluster_fixtures import sim_cluster, sim_namespace  # noqa: F401

# The worker image and container fixtures; docs/IMAGES.md describes them.
from tests.image_fixtures import docker_client, run_worker, worker_image  # noqa: F401


def require_or_skip(variable: str, reason: str) -> None:
    """Fail when ``variable`` is set to 1 (CI), otherwise skip with ``reason``."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason} ({variable}=1 makes this a failure)")
    pytest.skip(f"{reason}; set {variable}=1 to make this a failure instead of a skip")
