"""A real Kubernetes control plane for tests, with kwok simulating nodes and pods.

:class:`SimCluster` starts etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok as plain processes on loopback ports, registers nodes
shaped like TTG's kind cluster and writes a kubeconfig with a kind-style
context. :func:`build` builds the binaries once into a cache keyed by the
pinned versions. docs/TESTING.md describes the tiers and the fixture.
"""

from ttg_ops.simcluster._build import (
    ETCD_VERSION,
    K8S_VERSION,
    KIND_VERSION,
    KWOK_VERSION,
    Binaries,
    binaries,
    build,
    cache_key,
    missing,
    sim_home,
    versions,
    wait_for_build,
)
from ttg_ops.simcluster._cluster import (
    ComponentStatus,
    SimCluster,
    SimClusterError,
    SimStatus,
    check_cluster_name,
    status_table,
)
from ttg_ops.simcluster._kwok import (
    EXIT_CODE,
    FAIL_INDEXES,
    IMAGE_MISSING,
    OUTCOME,
    PROJECT_LABEL,
    ROLE_LABEL,
    RUN_DURATION,
    cri_log,
    node_names,
)

__all__ = [
    "ETCD_VERSION",
    "EXIT_CODE",
    "FAIL_INDEXES",
    "IMAGE_MISSING",
    "K8S_VERSION",
    "KIND_VERSION",
    "KWOK_VERSION",
    "OUTCOME",
    "PROJECT_LABEL",
    "ROLE_LABEL",
    "RUN_DURATION",
    "Binaries",
    "ComponentStatus",
    "SimCluster",
    "SimClusterError",
    "SimStatus",
    "binaries",
    "build",
    "cache_key",
    "check_cluster_name",
    "cri_log",
    "missing",
    "node_names",
    "sim_home",
    "status_table",
    "versions",
    "wait_for_build",
]
