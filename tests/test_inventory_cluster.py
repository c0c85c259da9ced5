"""`inv resources` against the simulated control plane: TTG's Jobs, pods, events by label."""

from __future__ import annotations

import json
import os
from typing import Any

import jsonschema
import pytest
from ttg_ops import inventory

from tests.test_inventory_helpers import ROOT, SCOPE_ENV, KubeWorld, inv, kube_world

__all__ = ["kube_world"]

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SCHEMA = json.loads((ROOT / "docs" / "schemas" / "resources.schema.json").read_text())


def _mixed(world: KubeWorld, namespace: str) -> None:
    world.job(namespace, "ttg-computation", ttg=True)
    world.pod(namespace, "ttg-leftover", ttg=True)
    world.job(namespace, "their-job", ttg=False, completions=2)
    world.pod(namespace, "ttg-lookalike", ttg=False)
    world.config_map(namespace, "their-config")
    world.wait_scheduled(namespace, world.selector, 4)
    world.wait_scheduled(namespace, "app=someone-else", 3)


def test_resources_lists_ttg_jobs_pods_distribution_and_their_events(
    sim_cluster: Any, kube_world: KubeWorld
) -> None:
    namespace = kube_world.namespace(ttg_created=False)
    _mixed(kube_world, namespace)

    def with_events() -> Any:
        found = inventory.kube_objects(
            sim_cluster.context,
            kubeconfig=sim_cluster.kubeconfig,
            namespace=namespace,
            scope=kube_world.scope,
        )
        return found if found.events else None

    section = kube_world.wait_for("events of TTG's objects", with_events)

    assert section.reachable, section.note
    assert [(j.name, j.completions) for j in section.jobs] == [("ttg-computation", "0/3")]
    assert section.jobs[0].status == "Running"
    assert section.jobs[0].duration_seconds is not None
    pods = {p.name: p for p in section.pods}
    assert len(pods) == 4
    assert "ttg-lookalike" not in pods
    assert pods["ttg-leftover"].job == ""
    assert {p.job for n, p in pods.items() if n != "ttg-leftover"} == {"ttg-computation"}
    assert set(section.distribution) <= set(sim_cluster.worker_names)
    assert sum(section.distribution.values()) == 4
    assert set(sim_cluster.worker_names) <= set(section.ttg_nodes)
    ttg_objects = {f"pod/{name}" for name in pods} | {"job/ttg-computation"}
    assert {event.object for event in section.events} <= ttg_objects
    assert {event.reason for event in section.events} & {"Scheduled", "SuccessfulCreate"}


def test_inv_resources_json_counts_match_the_api_server(
    sim_cluster: Any, kube_world: KubeWorld
) -> None:
    namespace = kube_world.namespace(ttg_created=False)
    _mixed(kube_world, namespace)
    env = {**os.environ, SCOPE_ENV: str(kube_world.scope)}

    done = inv(
        "resources",
        "--json",
        f"--context={sim_cluster.context}",
        f"--kubeconfig={sim_cluster.kubeconfig}",
        env=env,
    )

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, SCHEMA)
    # Count independently, across all namespaces, with the same labels.
    jobs = kube_world.batch.list_job_for_all_namespaces(label_selector=kube_world.selector).items
    pods = kube_world.core.list_pod_for_all_namespaces(label_selector=kube_world.selector).items
    assert document["summary"]["kubernetes"] == {"jobs": len(jobs), "pods": len(pods)}
    assert (len(jobs), len(pods)) == (1, 4)
    assert document["kubernetes"]["namespace"] is None
    assert sum(document["kubernetes"]["distribution"].values()) == 4
