"""`inv resources` against a real Docker daemon: TTG's objects by label, never by name."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rich.console import Console
from ttg_ops import images, inventory, labels
from ttg_ops.inventory import Scope

from tests.test_inventory_helpers import ROOT, DockerWorld, docker_client, docker_world, inv

__all__ = ["docker_client", "docker_world"]

pytestmark = pytest.mark.docker

SCHEMA = json.loads((ROOT / "docs" / "schemas" / "resources.schema.json").read_text())
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-7]m|\x1b\[[0-9;]*9[0-7]m")


def _mixed_world(world: DockerWorld) -> dict[str, Any]:
    """Two TTG images and three TTG containers next to look-alikes without TTG's labels."""
    s = world.session
    worker = world.image(f"ttg-test-{s}/worker:v9.9.9", ttg=True)
    world.tag(worker, f"ttg-test-{s}/worker", "latest")
    helper = world.image(f"ttg-test-{s}/helper:v1.0.0", ttg=True, version="1.0.0")
    impostor = world.image(f"ttg-worker:impostor-{s}", ttg=False)
    named = world.image(f"ttg-something-{s}:latest", ttg=False, scoped=False)
    containers = [
        world.container(worker, f"ttg-test-{s}-0", ttg=True, run_id="run-a"),
        world.container(worker, f"ttg-test-{s}-1", ttg=True, run_id="run-a"),
        world.container(helper, f"ttg-test-{s}-2", ttg=True),
    ]
    fakes = [
        world.container(impostor, f"ttg-worker-{s}-impostor", ttg=False),
        world.container(named, f"ttg-{s}-unlabelled", ttg=False, scoped=False),
    ]
    return {
        "images": [worker, helper],
        "containers": containers,
        "fake_images": [impostor, named],
        "fake_containers": fakes,
    }


def test_resources_lists_ttg_labelled_images_and_containers_only(docker_world: DockerWorld) -> None:
    made = _mixed_world(docker_world)

    section = inventory.docker_objects(docker_world.client, docker_world.scope)

    assert {i.id for i in section.images} == {i.id for i in made["images"]}
    assert {c.id for c in section.containers} == {c.id for c in made["containers"]}
    worker = next(i for i in section.images if i.id == made["images"][0].id)
    s = docker_world.session
    assert worker.tags == sorted([f"ttg-test-{s}/worker:latest", f"ttg-test-{s}/worker:v9.9.9"])
    assert worker.repository == f"ttg-test-{s}/worker"
    assert worker.version == "9.9.9"
    assert worker.size >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", worker.created)
    runs = {c.name: c.run_id for c in section.containers}
    assert runs == {f"ttg-test-{s}-0": "run-a", f"ttg-test-{s}-1": "run-a", f"ttg-test-{s}-2": ""}
    assert {c.status for c in section.containers} == {"created"}


def test_unscoped_selection_ignores_unlabelled_objects_even_with_ttg_names(
    docker_world: DockerWorld,
) -> None:
    made = _mixed_world(docker_world)

    # The selector users get: TTG's project label only, no test scope.
    section = inventory.docker_objects(docker_world.client, Scope())

    image_ids = {i.id for i in section.images}
    container_ids = {c.id for c in section.containers}
    assert {i.id for i in made["images"]} <= image_ids
    assert {c.id for c in made["containers"]} <= container_ids
    assert not {i.id for i in made["fake_images"]} & image_ids
    assert not {c.id for c in made["fake_containers"]} & container_ids


def test_resources_json_validates_and_counts_match_docker(docker_world: DockerWorld) -> None:
    _mixed_world(docker_world)

    done = inv("resources", "--json", env=docker_world.env())

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, SCHEMA)
    # Count independently, straight from the daemon with the same labels.
    filters = {
        "label": [f"{labels.DOCKER_PROJECT}={labels.PROJECT}", *docker_world.scope.docker_labels()]
    }
    client = docker_world.client
    images = client.images.list(filters=filters)
    containers = client.containers.list(all=True, filters=filters)
    assert document["summary"]["docker"]["images"] == len(images) == 2
    assert document["summary"]["docker"]["containers"] == len(containers) == 3
    assert document["summary"]["docker"]["kind_clusters"] == 0
    assert document["summary"]["kubernetes"] == {"jobs": None, "pods": None}
    assert document["kubernetes"]["reachable"] is False
    assert "skipped" in document["kubernetes"]["note"]
    assert document["scope"] == str(docker_world.scope)


def test_resources_prints_the_seed_summary_without_colour_off_a_terminal(
    docker_world: DockerWorld,
) -> None:
    _mixed_world(docker_world)

    done = inv("resources", env=docker_world.env())

    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout
    # 80 columns off a terminal: the summary's two halves on lines of their own.
    lines = done.stdout.splitlines()
    assert "Summary  Docker: TTG Images: 2, TTG Containers: 3, Kind Clusters: 0" in lines
    assert "         Kubernetes: TTG Jobs: -, TTG Pods: -" in lines
    assert f"ttg-test-{docker_world.session}-0" in done.stdout
    assert "impostor" not in done.stdout


@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "no-color"])
def test_terminal_output_is_coloured_unless_no_color_is_set(
    docker_world: DockerWorld, monkeypatch: pytest.MonkeyPatch, no_color: bool
) -> None:
    _mixed_world(docker_world)
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    buffer = StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system="standard")
    found = inventory.collect(
        kubeconfig=str(Path("/nonexistent/kubeconfig")), scope=docker_world.scope
    )

    inventory.render(found, console)

    coloured = bool(ANSI_COLOUR.search(buffer.getvalue()))
    assert coloured is not no_color


def test_kind_cluster_is_ttgs_only_with_its_name_and_ttg_node_label(
    docker_world: DockerWorld,
) -> None:
    s = docker_world.session
    ours, lookalike = f"ttgtest-{s}-a", f"ttgtest-{s}-b"
    docker_world.kind_node(ours, "control-plane", ttg_node_label=True)
    docker_world.kind_node(ours, "worker", ttg_node_label=True)
    docker_world.kind_node(lookalike, "control-plane", ttg_node_label=False)
    client, scope = docker_world.client, docker_world.scope

    named_ours = inventory.kind_clusters(client, scope, ours)
    named_lookalike = inventory.kind_clusters(client, scope, lookalike)

    assert [c.name for c in named_ours.clusters] == [ours]
    cluster = named_ours.clusters[0]
    assert cluster.context == f"kind-{ours}"
    assert [(n.name, n.role) for n in cluster.nodes] == [
        (f"{ours}-control-plane", "control-plane"),
        (f"{ours}-worker", "worker"),
    ]
    assert "kubeadm.conf" in cluster.evidence
    assert [(i.name, "configured cluster name" in i.reason) for i in named_ours.ignored] == [
        (lookalike, True)
    ]
    # The right name is not enough: no node carries TTG's node label.
    assert named_lookalike.clusters == []
    reasons = {i.name: i.reason for i in named_lookalike.ignored}
    assert "node label" in reasons[lookalike]


def test_kind_cluster_is_recognised_by_the_node_label_seen_on_the_api(
    docker_world: DockerWorld,
) -> None:
    s = docker_world.session
    name = f"ttgtest-{s}-api"
    node = docker_world.kind_node(name, "worker", ttg_node_label=False)

    section = inventory.kind_clusters(
        docker_world.client, docker_world.scope, name, ttg_nodes=[node.name]
    )

    assert [c.name for c in section.clusters] == [name]
    assert "Kubernetes node" in section.clusters[0].evidence


def test_untagged_stage_images_are_build_cache_not_ttg_images(docker_world: DockerWorld) -> None:
    s = docker_world.session
    worker = docker_world.image(f"ttg-test-{s}/worker:v9.9.9", ttg=True)
    stage = docker_world.image(
        None,
        ttg=True,
        version="",
        extra_labels={labels.DOCKER_COMPONENT: images.STAGE_COMPONENT},
    )
    # A stage of a build made before the stage label: it inherited the base's labels.
    inherited = docker_world.image(
        None, ttg=True, version="bookworm", extra_labels={labels.DOCKER_COMPONENT: "base"}
    )

    section = inventory.docker_objects(docker_world.client, docker_world.scope)

    assert [i.id for i in section.images] == [worker.id]
    assert {i.id for i in section.build_cache} == {stage.id, inherited.id}
    assert section.build_cache_size == sum(i.size for i in section.build_cache)

    done = inv("resources", "--json", env=docker_world.env())
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    jsonschema.validate(document, SCHEMA)
    assert document["summary"]["docker"]["images"] == 1
    assert document["summary"]["docker"]["build_cache"] == 2

    plain = inv("resources", env=docker_world.env())
    assert plain.returncode == 0, plain.stderr
    assert "Build cache: 2 untagged image(s)" in plain.stdout
    assert "bookworm" not in plain.stdout  # no bogus version column entry


def test_plain_resources_output_fits_80_columns_and_json_stays_full(
    docker_world: DockerWorld,
) -> None:
    made = _mixed_world(docker_world)
    env = docker_world.env()
    env.pop("COLUMNS", None)

    done = inv("resources", env=env)

    assert done.returncode == 0, done.stderr
    widths = [len(line.rstrip()) for line in done.stdout.splitlines()]
    assert max(widths) <= 80, done.stdout
    s = docker_world.session
    for name in (f"ttg-test-{s}/worker", f"ttg-test-{s}-0", f"ttg-test-{s}/helper"):
        assert name in done.stdout, name
    assert "ID" not in done.stdout.split()  # the low-value column is dropped when narrow

    wide = inv("resources", env={**env, "COLUMNS": "160"})
    assert wide.returncode == 0, wide.stderr
    assert made["images"][0].id.removeprefix("sha256:")[:12] in wide.stdout

    document = json.loads(inv("resources", "--json", env=env).stdout)
    assert {i["id"] for i in document["docker"]["images"]} == {i.id for i in made["images"]}
