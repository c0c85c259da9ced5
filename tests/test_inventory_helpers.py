"""Factories for inventory and cleanup tests: throwaway Docker images, containers, kind nodes.

Nothing can be pulled here, so images are built ``FROM scratch`` out of a
tiny in-memory build context. Every object a test makes is recorded and
removed in the fixture's finaliser, whatever the test did. TTG-labelled
objects also carry a per-test scope label (``ttg.test-session=<id>``), and
the code under test is given that scope, so a test never sees or deletes a
developer's real TTG images, containers or kind clusters.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ttg_ops import labels
from ttg_ops.inventory import SCOPE_ENV, TTG_NODE_LABEL, Scope
from ttg_ops.kind import KIND_CLUSTER_LABEL, KIND_ROLE_LABEL

ROOT = Path(__file__).resolve().parent.parent
SESSION_KEY = "ttg.test-session"

# What kind writes into a node's /kind/kubeadm.conf for a node with labels
# in the cluster config (trimmed to the part that matters here).
KUBEADM_CONF = """apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
nodeRegistration:
  criSocket: unix:///run/containerd/containerd.sock
  kubeletExtraArgs:
    - name: node-ip
      value: 172.18.0.3
    - name: node-labels
      value: "{labels}"
"""


def build_context(files: dict[str, bytes], dockerfile: str | None = None) -> io.BytesIO:
    """An in-memory build context: ``files`` plus a Dockerfile (default: scratch + COPY)."""
    lines = ["FROM scratch"] + [f"COPY {name} /{name}" for name in sorted(files)]
    members = {**files, "Dockerfile": (dockerfile or "\n".join(lines) + "\n").encode()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@dataclass
class DockerWorld:
    """Makes Docker objects for one test and removes all of them afterwards."""

    client: Any
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    images: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)

    @property
    def scope(self) -> Scope:
        return Scope(((SESSION_KEY, self.session),))

    @property
    def scope_label(self) -> dict[str, str]:
        return {SESSION_KEY: self.session}

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for `inv` scoped to this test, with no reachable kube context."""
        env = dict(os.environ)
        env[SCOPE_ENV] = str(self.scope)
        env["KUBECONFIG"] = str(ROOT / ".no-such-kubeconfig")
        env.pop("FORCE_COLOR", None)
        env.update(extra)
        return env

    def image(
        self,
        tag: str | None,
        *,
        ttg: bool,
        scoped: bool = True,
        version: str = "9.9.9",
        files: dict[str, bytes] | None = None,
        extra_labels: dict[str, str] | None = None,
    ) -> Any:
        """Build a tiny image; ``ttg`` gives it TTG's labels, ``scoped`` the test's label."""
        image_labels = labels.docker_labels(version) if ttg else {}
        image_labels.update(extra_labels or {})
        if scoped:
            image_labels.update(self.scope_label)
        # Unique content, so that two images never share an id by accident.
        content = {"marker": uuid.uuid4().hex.encode(), **(files or {})}
        image, _log = self.client.images.build(
            fileobj=build_context(content),
            custom_context=True,
            tag=tag,
            labels=image_labels,
            rm=True,
            forcerm=True,
            pull=False,
        )
        self.images.append(image.id)
        return image

    def tag(self, image: Any, repository: str, tag: str) -> None:
        image.tag(repository, tag)

    def container(
        self,
        image: Any,
        name: str,
        *,
        ttg: bool,
        scoped: bool = True,
        run_id: str = "",
        extra: dict[str, str] | None = None,
    ) -> Any:
        """Create (not start) a container of ``image``; labelled like TTG's when ``ttg``."""
        container_labels = labels.docker_labels("9.9.9", run_id or None) if ttg else {}
        if scoped:
            container_labels.update(self.scope_label)
        container_labels.update(extra or {})
        container = self.client.containers.create(
            image.id, command=["/marker"], name=name, labels=container_labels
        )
        self.containers.append(container.id)
        return container

    def kind_node(self, cluster: str, role: str, *, ttg_node_label: bool) -> Any:
        """A stand-in kind node: a container with kind's labels and a kubeadm.conf."""
        node_labels = f"{TTG_NODE_LABEL},ttg.io/role={role}" if ttg_node_label else "tier=other"
        conf = KUBEADM_CONF.format(labels=node_labels).encode()
        image = self.image(None, ttg=False, files={"kind/kubeadm.conf": conf})
        name = f"{cluster}-{role}"
        return self.container(
            image,
            name,
            ttg=False,
            extra={KIND_CLUSTER_LABEL: cluster, KIND_ROLE_LABEL: role},
        )

    def exists(self, kind: str, ref: str) -> bool:
        from docker.errors import NotFound

        try:
            (self.client.images if kind == "image" else self.client.containers).get(ref)
        except NotFound:
            return False
        return True

    def remove_all(self) -> None:
        from docker.errors import APIError, NotFound

        for ref in self.containers:
            with contextlib.suppress(NotFound):
                self.client.containers.get(ref).remove(force=True, v=True)
        for ref in reversed(self.images):
            with contextlib.suppress(NotFound, APIError):
                self.client.images.remove(ref, force=True, noprune=False)


def docker_client_or_skip() -> Any:
    from ttg_ops import dockerapi
    from ttg_ops.errors import PreflightError

    from tests.conftest import require_or_skip

    try:
        return dockerapi.client(timeout=60)
    except PreflightError as exc:
        require_or_skip("TTG_REQUIRE_DOCKER", f"no Docker daemon answers ({exc})")
        raise  # pragma: no cover - require_or_skip always raises


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker_client_or_skip()
    yield client
    client.close()


@pytest.fixture
def docker_world(docker_client: Any) -> Iterator[DockerWorld]:
    world = DockerWorld(docker_client)
    try:
        yield world
    finally:
        world.remove_all()


def inv(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``inv <args>`` from the project root, stdin not a terminal, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------------------
# Kubernetes objects in the simulated cluster
# ---------------------------------------------------------------------------


@dataclass
class KubeWorld:
    """Makes Kubernetes objects for one test in the simulated cluster; removes what it made."""

    sim: Any
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    namespaces: list[str] = field(default_factory=list)
    cluster_objects: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from kubernetes import client

        self.api = self.sim.api_client()
        self.core: Any = client.CoreV1Api(self.api)
        self.batch: Any = client.BatchV1Api(self.api)
        self.rbac: Any = client.RbacAuthorizationV1Api(self.api)

    @property
    def scope(self) -> Scope:
        return Scope(((SESSION_KEY, self.session),))

    @property
    def selector(self) -> str:
        """TTG's selector narrowed to this test, as an independent count would use it."""
        return f"{labels.K8S_PROJECT}={labels.PROJECT},{SESSION_KEY}={self.session}"

    def ttg_labels(self, run_id: str = "run-a") -> dict[str, str]:
        return {**labels.k8s_labels("9.9.9", run_id), SESSION_KEY: self.session}

    def namespace(self, *, ttg_created: bool) -> str:
        name = f"inv-{uuid.uuid4().hex[:8]}"
        meta_labels = {SESSION_KEY: self.session}
        if ttg_created:
            meta_labels.update(
                {labels.K8S_CREATED_NAMESPACE: "true", labels.K8S_PROJECT: labels.PROJECT}
            )
        self.core.create_namespace({"metadata": {"name": name, "labels": meta_labels}})
        self.namespaces.append(name)
        return name

    def job(
        self, namespace: str, name: str, *, ttg: bool, completions: int = 3, run: str = "60s"
    ) -> Any:
        """An Indexed Job whose pods kwok keeps Running for ``run``."""
        meta_labels = self.ttg_labels() if ttg else {"app": "someone-else"}
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": meta_labels},
            "spec": {
                "completionMode": "Indexed",
                "completions": completions,
                "parallelism": completions,
                "backoffLimit": 0,
                "template": {
                    "metadata": {
                        "labels": meta_labels,
                        "annotations": {"ttg.io/sim-run-duration": run},
                    },
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "worker",
                                "image": "ttg-worker:v9.9.9",
                                "imagePullPolicy": "Never",
                            }
                        ],
                    },
                },
            },
        }
        return self.batch.create_namespaced_job(namespace, body)

    def pod(self, namespace: str, name: str, *, ttg: bool) -> Any:
        """A bare pod (no owner); kwok keeps it Running until it is deleted."""
        meta_labels = self.ttg_labels() if ttg else {"app": "someone-else"}
        body = {
            "metadata": {"name": name, "labels": meta_labels},
            "spec": {
                "containers": [
                    {"name": "main", "image": "someone/else:1", "imagePullPolicy": "Never"}
                ]
            },
        }
        return self.core.create_namespaced_pod(namespace, body)

    def config_map(self, namespace: str, name: str) -> Any:
        body = {"metadata": {"name": name}, "data": {"owner": "someone else"}}
        return self.core.create_namespaced_config_map(namespace, body)

    def pods(self, namespace: str, selector: str = "") -> list[Any]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def wait_for(self, what: str, check: Any, timeout: float = 60.0) -> Any:
        """Poll ``check()`` every 0.25 s until it returns something truthy, or fail."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout:.0f}s for {what}; last result: {result!r}")
            time.sleep(0.25)

    def wait_scheduled(self, namespace: str, selector: str, count: int) -> list[Any]:
        def scheduled() -> list[Any]:
            pods = [p for p in self.pods(namespace, selector) if p.spec.node_name]
            return pods if len(pods) == count else []

        return self.wait_for(
            f"{count} scheduled pods matching {selector} in {namespace}", scheduled
        )

    def remove_all(self) -> None:
        from kubernetes.client.exceptions import ApiException

        for name in self.namespaces:
            try:
                self.core.delete_namespace(name, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    raise
        for kind, name in self.cluster_objects:
            delete = (
                self.rbac.delete_cluster_role
                if kind == "ClusterRole"
                else self.rbac.delete_cluster_role_binding
            )
            try:
                delete(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.fixture
def kube_world(sim_cluster: Any) -> Iterator[KubeWorld]:
    world = KubeWorld(sim_cluster)
    try:
        yield world
    finally:
        world.remove_all()
