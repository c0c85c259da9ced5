"""`inv cleanup` against the simulated control plane, with the real garbage collector."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from ttg_ops import cleanup, inventory, labels
from ttg_ops.cleanup import FAILED, GONE, REMOVED, CleanupIncompleteError

from tests.test_inventory_helpers import KubeWorld, kube_world

__all__ = ["kube_world"]

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

RBAC_GROUP = "rbac.authorization.k8s.io"


def _console() -> tuple[Console, StringIO]:
    buffer = StringIO()
    return Console(file=buffer, width=240, color_system=None), buffer


def _mixed(world: KubeWorld, namespace: str) -> dict[str, Any]:
    made = {
        "job": world.job(namespace, "ttg-computation", ttg=True),
        "leftover": world.pod(namespace, "ttg-leftover", ttg=True),
        "their_job": world.job(namespace, "their-job", ttg=False, completions=2),
        "their_pod": world.pod(namespace, "ttg-lookalike", ttg=False),
        "their_config": world.config_map(namespace, "their-config"),
    }
    world.wait_scheduled(namespace, world.selector, 4)
    world.wait_scheduled(namespace, "app=someone-else", 3)
    return made


def _run(sim: Any, world: KubeWorld, **options: Any) -> tuple[cleanup.Plan, Any, str]:
    console, buffer = _console()
    the_plan, report = cleanup.run(
        console=console,
        context=options.pop("context", sim.context),
        kubeconfig=options.pop("kubeconfig", sim.kubeconfig),
        scope=world.scope,
        keep_cluster=True,
        **options,
    )
    return the_plan, report, buffer.getvalue()


def _dangling_pods(world: KubeWorld, namespace: str) -> list[str]:
    """Pods whose owner reference names a Job that no longer exists."""
    jobs = {job.metadata.uid for job in world.batch.list_namespaced_job(namespace).items}
    return [
        pod.metadata.name
        for pod in world.pods(namespace)
        for ref in pod.metadata.owner_references or []
        if ref.kind == "Job" and ref.uid not in jobs
    ]


def _terminating(pod: Any) -> bool:
    return pod.metadata.deletion_timestamp is not None


def _orphaned_pods(world: KubeWorld, namespace: str) -> list[str]:
    """Pods of a TTG Job that nothing will delete: no Job owner left and not terminating."""
    jobs = {job.metadata.uid for job in world.batch.list_namespaced_job(namespace).items}
    orphaned = []
    for pod in world.pods(namespace, world.selector):
        owners = [ref.uid for ref in pod.metadata.owner_references or [] if ref.kind == "Job"]
        job_pod = "batch.kubernetes.io/job-name" in (pod.metadata.labels or {})
        alive_owner = any(uid in jobs for uid in owners)
        if job_pod and not alive_owner and not _terminating(pod):
            orphaned.append(pod.metadata.name)
    return orphaned


def _assert_foreign_objects_survive(world: KubeWorld, namespace: str) -> None:
    assert [j.metadata.name for j in world.batch.list_namespaced_job(namespace).items] == [
        "their-job"
    ]
    names = {p.metadata.name for p in world.pods(namespace)}
    assert "ttg-lookalike" in names
    assert len([n for n in names if n.startswith("their-job-")]) == 2
    world.core.read_namespaced_config_map("their-config", namespace)


@pytest.mark.parametrize("propagation", ["Background", "Foreground"])
def test_cleanup_removes_ttg_jobs_and_pods_and_orphans_nothing(
    sim_cluster: Any, kube_world: KubeWorld, propagation: str
) -> None:
    namespace = kube_world.namespace(ttg_created=False)
    _mixed(kube_world, namespace)

    the_plan, report, output = _run(
        sim_cluster, kube_world, namespace=namespace, assume_yes=True, propagation=propagation
    )

    assert [a.kind for a in the_plan.actions] == ["job", "pod", "pod", "pod", "pod"]
    assert the_plan.actions[-1].name == "ttg-leftover"
    assert the_plan.count_lines() == ["1 Kubernetes job", "4 Kubernetes pods"]
    assert {o.result for o in report.outcomes} <= {REMOVED, GONE}
    assert f"propagation {propagation}" in output
    kube_world.wait_for(
        "TTG's pods to be gone", lambda: not kube_world.pods(namespace, kube_world.selector)
    )
    assert _dangling_pods(kube_world, namespace) == []
    assert _orphaned_pods(kube_world, namespace) == []
    _assert_foreign_objects_survive(kube_world, namespace)


def test_deleting_only_the_jobs_lets_the_garbage_collector_remove_their_pods(
    sim_cluster: Any, kube_world: KubeWorld
) -> None:
    namespace = kube_world.namespace(ttg_created=False)
    _mixed(kube_world, namespace)
    the_plan = cleanup.plan(
        context=sim_cluster.context,
        kubeconfig=sim_cluster.kubeconfig,
        namespace=namespace,
        scope=kube_world.scope,
    )
    # Only the Job steps: its pods must go through the propagation policy alone.
    the_plan.actions = [a for a in the_plan.actions if a.kind == "job"]

    report = cleanup.execute(the_plan)

    assert [o.result for o in report.outcomes] == [REMOVED]
    job_pods = f"{kube_world.selector},batch.kubernetes.io/job-name=ttg-computation"
    kube_world.wait_for(
        "the garbage collector to delete the Job's pods",
        lambda: all(_terminating(p) for p in kube_world.pods(namespace, job_pods)),
    )
    # Orphan propagation would have stripped the owner references and left
    # the pods running; here every one is being deleted.
    assert _orphaned_pods(kube_world, namespace) == []
    live = [p.metadata.name for p in kube_world.pods(namespace, kube_world.selector)]
    assert [name for name in live if not name.startswith("ttg-computation-")] == ["ttg-leftover"]


def test_dry_run_lists_exactly_what_the_real_run_deletes_on_the_cluster(
    sim_cluster: Any, kube_world: KubeWorld
) -> None:
    namespace = kube_world.namespace(ttg_created=False)
    _mixed(kube_world, namespace)

    dry_plan, nothing, output = _run(sim_cluster, kube_world, namespace=namespace, dry_run=True)

    assert nothing is None
    listed = [line.strip() for line in output.splitlines() if line.strip().startswith("would")]
    assert len(listed) == 5
    assert len(kube_world.pods(namespace, kube_world.selector)) == 4

    real_plan, report, _output = _run(sim_cluster, kube_world, namespace=namespace, assume_yes=True)

    assert real_plan.actions == dry_plan.actions
    assert listed == [f"would delete {o.action.describe()}" for o in report.outcomes]


def test_namespace_created_by_ttg_is_deleted_only_when_it_holds_nothing_else(
    sim_cluster: Any, kube_world: KubeWorld
) -> None:
    empty_after = kube_world.namespace(ttg_created=True)
    shared = kube_world.namespace(ttg_created=True)
    kube_world.job(empty_after, "ttg-computation", ttg=True, completions=1)
    kube_world.job(shared, "ttg-computation", ttg=True, completions=1)
    kube_world.config_map(shared, "their-config")
    kube_world.wait_scheduled(empty_after, kube_world.selector, 1)
    kube_world.wait_scheduled(shared, kube_world.selector, 1)

    the_plan, _report, _output = _run(sim_cluster, kube_world, assume_yes=True)

    assert [a.name for a in the_plan.actions if a.kind == "namespace"] == [empty_after]
    assert any(
        f"namespace {shared} is kept" in note and "configmap/their-config" in note
        for note in the_plan.kept
    )

    def phase(name: str) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            return str(kube_world.core.read_namespace(name).status.phase)
        except ApiException as exc:
            if exc.status == 404:
                return "gone"
            raise

    assert phase(empty_after) in {"Terminating", "gone"}
    assert phase(shared) == "Active"
    assert kube_world.batch.list_namespaced_job(shared).items == []
    kube_world.core.read_namespaced_config_map("their-config", shared)


def _limited_kubeconfig(sim: Any, world: KubeWorld, namespace: str, path: Path) -> str:
    """A kubeconfig for a service account that may delete pods but not Jobs in ``namespace``.

    It has no cluster-wide rights at all (it cannot list namespaces or nodes),
    like a developer who was given one namespace of a shared cluster.
    """
    from kubernetes import client

    name = f"ttg-limited-{world.session}"
    world.core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    world.rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            ],
        },
    )
    world.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    token = world.core.create_namespaced_service_account_token(
        name, namespace, client.AuthenticationV1TokenRequest(spec={"expirationSeconds": 3600})
    ).status.token

    admin = yaml.safe_load(Path(sim.kubeconfig).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "limited", "user": {"token": token}}],
        "contexts": [
            {
                "name": "limited",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "limited"},
            }
        ],
        "current-context": "limited",
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_forbidden_delete_is_reported_and_the_rest_of_the_plan_still_runs(
    sim_cluster: Any, kube_world: KubeWorld, tmp_path: Path
) -> None:
    namespace = kube_world.namespace(ttg_created=False)
    _mixed(kube_world, namespace)
    kubeconfig = _limited_kubeconfig(sim_cluster, kube_world, namespace, tmp_path / "limited")

    with pytest.raises(CleanupIncompleteError) as raised:
        _run(
            sim_cluster,
            kube_world,
            context="limited",
            kubeconfig=kubeconfig,
            namespace=namespace,
            assume_yes=True,
        )

    message = str(raised.value)
    assert "1 of 5 planned objects were not removed" in message
    section = inventory.kube_objects(
        "limited", kubeconfig=kubeconfig, namespace=namespace, scope=kube_world.scope
    )
    assert section.reachable
    assert section.note == "not allowed: listing namespaces, listing nodes (403 Forbidden)"
    assert [j.name for j in section.jobs] == ["ttg-computation"]
    assert f"Kubernetes job {namespace}/ttg-computation" in message
    assert "403" in message
    assert "forbidden" in message.lower()
    # The pods were deleted by the same run; the Job is still there.
    assert [j.metadata.name for j in kube_world.batch.list_namespaced_job(namespace).items] == [
        "their-job",
        "ttg-computation",
    ]
    # The pods' deletions were accepted by the same run (they are terminating
    # or gone); the Job could not be deleted and is still there.
    leftover = [p for p in kube_world.pods(namespace) if p.metadata.name == "ttg-leftover"]
    assert all(_terminating(p) for p in leftover)


def test_job_replaced_under_the_same_name_since_the_plan_is_not_deleted(
    sim_cluster: Any, kube_world: KubeWorld
) -> None:
    namespace = kube_world.namespace(ttg_created=False)
    kube_world.job(namespace, "ttg-computation", ttg=True, completions=1)
    kube_world.wait_scheduled(namespace, kube_world.selector, 1)
    the_plan = cleanup.plan(
        context=sim_cluster.context,
        kubeconfig=sim_cluster.kubeconfig,
        namespace=namespace,
        scope=kube_world.scope,
    )
    kube_world.batch.delete_namespaced_job(
        "ttg-computation", namespace, propagation_policy="Background"
    )
    kube_world.wait_for(
        "the first Job to be gone",
        lambda: not kube_world.batch.list_namespaced_job(namespace).items,
    )
    replacement = kube_world.job(namespace, "ttg-computation", ttg=True, completions=1)
    the_plan.actions = [a for a in the_plan.actions if a.kind == "job"]

    report = cleanup.execute(the_plan)

    assert [o.result for o in report.outcomes] == [FAILED]
    assert "replaced by another object" in report.outcomes[0].reason
    still = kube_world.batch.read_namespaced_job("ttg-computation", namespace)
    assert still.metadata.uid == replacement.metadata.uid
    assert labels.K8S_PROJECT in still.metadata.labels
