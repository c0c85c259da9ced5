"""Fixtures for tests against the simulated Kubernetes cluster (marker ``cluster``).

``sim_cluster`` (session scope) is a running :class:`ttg_ops.simcluster.SimCluster`:
``.kubeconfig`` (path, str), ``.context`` (``kind-ttg-cluster``), ``.api_client()``,
``.worker_names``, ``.control_plane_name`` and ``.serve_logs(namespace, pod, file)``.
It skips (or fails under ``TTG_REQUIRE_CLUSTER=1``) when the binaries are missing or
the control plane does not start; ``TTG_SIM_REUSE=1`` uses a cluster already started
with ``inv cluster.sim-up`` instead of starting one. ``sim_namespace`` is a fresh
namespace per test, deleted afterwards. docs/TESTING.md describes both.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

ENABLE_HINT = (
    "build the simulated cluster once with `uv run inv cluster.sim-build` "
    "(or set TTG_SIM_BUILD=1 to build it from the test session)"
)


@pytest.fixture(scope="session")
def sim_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running simulated cluster shared by the whole test session."""
    from ttg_ops.errors import TTGError
    from ttg_ops.simcluster import SimCluster, build, missing, wait_for_build

    from tests.conftest import require_or_skip

    if os.environ.get("TTG_SIM_REUSE") == "1":
        running = SimCluster()
        if running.status().api_ready:
            # A cluster from `inv cluster.sim-up`: use it and leave it running.
            yield running
            return

    required = os.environ.get("TTG_REQUIRE_CLUSTER") == "1"
    wait_for_build()
    absent = missing()
    if absent and not (required or os.environ.get("TTG_SIM_BUILD") == "1"):
        require_or_skip(
            "TTG_REQUIRE_CLUSTER",
            f"the simulated cluster's binaries are not built ({', '.join(absent)}); " + ENABLE_HINT,
        )
    try:
        build()
    except TTGError as exc:
        require_or_skip("TTG_REQUIRE_CLUSTER", f"the simulated cluster cannot be built: {exc}")

    cluster = SimCluster(run_dir=tmp_path_factory.mktemp("simcluster"))
    try:
        cluster.start()
    except TTGError as exc:
        require_or_skip("TTG_REQUIRE_CLUSTER", f"the simulated cluster does not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sim_namespace(sim_cluster: Any) -> Iterator[str]:
    """A fresh namespace in the simulated cluster, deleted (with its pods) after the test."""
    from kubernetes import client

    core: Any = client.CoreV1Api(sim_cluster.api_client())
    name = f"sim-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")
