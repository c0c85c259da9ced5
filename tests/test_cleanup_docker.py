"""`inv cleanup` against a real Docker daemon: only TTG-labelled objects go, impostors stay."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from ttg_ops import cleanup, labels
from ttg_ops.cleanup import FAILED, GONE, REMOVED, CleanupIncompleteError

from tests.test_inventory_helpers import DockerWorld, docker_client, docker_world, inv

__all__ = ["docker_client", "docker_world"]

pytestmark = pytest.mark.docker

NO_KUBECONFIG = str(Path("/nonexistent/kubeconfig"))
NOT_TTG = {labels.DOCKER_PROJECT: "someone-else"}


def _console() -> tuple[Console, StringIO]:
    buffer = StringIO()
    return Console(file=buffer, width=240, color_system=None), buffer


def _world(world: DockerWorld) -> dict[str, list[Any]]:
    s = world.session
    worker = world.image(f"ttg-test-{s}/worker:v9.9.9", ttg=True)
    world.tag(worker, f"ttg-test-{s}/worker", "latest")
    untagged = world.image(None, ttg=True)
    impostor = world.image(f"ttg-worker:impostor-{s}", ttg=False)
    named = world.image(f"ttg-something-{s}:latest", ttg=False, scoped=False)
    return {
        "images": [worker, untagged],
        "containers": [
            world.container(worker, f"ttg-test-{s}-0", ttg=True, run_id="run-a"),
            world.container(untagged, f"ttg-test-{s}-1", ttg=True, run_id="run-a"),
        ],
        "kept_images": [impostor, named],
        "kept_containers": [
            world.container(impostor, f"ttg-worker-{s}-impostor", ttg=False),
            world.container(named, f"ttg-{s}-unlabelled", ttg=False, scoped=False),
        ],
    }


def _assert_only_ttg_objects_are_gone(world: DockerWorld, made: dict[str, list[Any]]) -> None:
    for image in made["images"]:
        assert not world.exists("image", image.id), image.tags
    for container in made["containers"]:
        assert not world.exists("container", container.id), container.name
    for image in made["kept_images"]:
        assert world.exists("image", image.id), image.tags
    for container in made["kept_containers"]:
        assert world.exists("container", container.id), container.name


def test_dry_run_lists_exactly_what_the_real_run_deletes(docker_world: DockerWorld) -> None:
    made = _world(docker_world)
    console, buffer = _console()

    dry_plan, nothing = cleanup.run(
        console=console, dry_run=True, kubeconfig=NO_KUBECONFIG, scope=docker_world.scope
    )

    assert nothing is None
    listed = [line.strip() for line in buffer.getvalue().splitlines() if "would delete" in line]
    assert len(listed) == 4
    assert all(docker_world.exists("image", i.id) for i in made["images"])
    assert all(docker_world.exists("container", c.id) for c in made["containers"])

    real_plan, report = cleanup.run(
        console=console, assume_yes=True, kubeconfig=NO_KUBECONFIG, scope=docker_world.scope
    )

    assert report is not None
    assert real_plan.actions == dry_plan.actions
    assert [o.action for o in report.outcomes] == real_plan.actions
    assert {o.result for o in report.outcomes} == {REMOVED}
    assert listed == [f"would delete {o.action.describe()}" for o in report.outcomes]
    # Containers go before the images they use.
    kinds = [a.kind for a in real_plan.actions]
    assert kinds == ["container", "container", "image", "image"]
    _assert_only_ttg_objects_are_gone(docker_world, made)


def test_inv_cleanup_yes_removes_labelled_objects_and_keeps_lookalikes(
    docker_world: DockerWorld,
) -> None:
    made = _world(docker_world)

    dry = inv("cleanup", "--dry-run", env=docker_world.env())
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would delete") == 4
    assert "2 Docker containers, 2 Docker images" in dry.stdout
    assert all(docker_world.exists("image", i.id) for i in made["images"])

    done = inv("cleanup", "--yes", env=docker_world.env())

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Removed 4 of 4 planned objects." in done.stdout
    _assert_only_ttg_objects_are_gone(docker_world, made)


def test_cleanup_refuses_without_a_terminal_and_without_yes(docker_world: DockerWorld) -> None:
    made = _world(docker_world)

    done = inv("cleanup", env=docker_world.env())

    assert done.returncode == 2
    assert "not a terminal" in done.stderr
    assert "--yes" in done.stderr
    assert "Traceback" not in done.stderr
    for image in made["images"]:
        assert docker_world.exists("image", image.id)
    for container in made["containers"]:
        assert docker_world.exists("container", container.id)


def test_image_in_use_by_a_foreign_container_is_reported_and_the_rest_removed(
    docker_world: DockerWorld,
) -> None:
    s = docker_world.session
    busy = docker_world.image(f"ttg-test-{s}/busy:v1", ttg=True)
    free = docker_world.image(f"ttg-test-{s}/free:v1", ttg=True)
    ours = docker_world.container(free, f"ttg-test-{s}-ours", ttg=True)
    # Docker copies an image's labels onto its containers; a container that is
    # not TTG's overrides the project label (here: someone else's project).
    foreign = docker_world.container(
        busy, f"someone-else-{s}", ttg=False, scoped=False, extra=NOT_TTG
    )
    console, buffer = _console()

    with pytest.raises(CleanupIncompleteError) as raised:
        cleanup.run(
            console=console, assume_yes=True, kubeconfig=NO_KUBECONFIG, scope=docker_world.scope
        )

    message = str(raised.value)
    assert raised.value.exit_code == 1
    assert f"ttg-test-{s}/busy:v1" in message
    assert f"someone-else-{s} (not TTG's)" in message
    assert "1 of 3 planned objects were not removed" in message
    assert "Removed 2 of 3 planned objects." in buffer.getvalue()
    assert docker_world.exists("image", busy.id)
    assert busy.id in {i.id for i in docker_world.client.images.list()}
    assert docker_world.client.images.get(busy.id).tags == [f"ttg-test-{s}/busy:v1"]
    assert docker_world.exists("container", foreign.id)
    assert not docker_world.exists("image", free.id)
    assert not docker_world.exists("container", ours.id)


def test_inv_cleanup_exits_non_zero_with_a_summary_of_what_failed(
    docker_world: DockerWorld,
) -> None:
    s = docker_world.session
    busy = docker_world.image(f"ttg-test-{s}/busy:v1", ttg=True)
    docker_world.container(busy, f"someone-else-{s}", ttg=False, scoped=False, extra=NOT_TTG)
    other = docker_world.container(busy, f"ttg-test-{s}-other", ttg=True)

    done = inv("cleanup", "--yes", env=docker_world.env())

    assert done.returncode == 1
    assert f"removed: Docker container ttg-test-{s}-other" in done.stdout
    assert f"failed: Docker image ttg-test-{s}/busy:v1" in done.stdout
    assert "error: 1 of 2 planned objects were not removed" in done.stderr
    assert f"someone-else-{s}" in done.stderr
    assert not docker_world.exists("container", other.id)


def test_keep_images_removes_containers_only(docker_world: DockerWorld) -> None:
    made = _world(docker_world)

    done = inv("cleanup", "--yes", "--keep-images", env=docker_world.env())

    assert done.returncode == 0, done.stderr
    assert "TTG image(s) are kept (--keep-images)" in done.stdout
    assert all(docker_world.exists("image", i.id) for i in made["images"])
    assert not any(docker_world.exists("container", c.id) for c in made["containers"])


def test_object_already_gone_counts_as_done(docker_world: DockerWorld) -> None:
    made = _world(docker_world)
    the_plan = cleanup.plan(kubeconfig=NO_KUBECONFIG, scope=docker_world.scope)
    made["containers"][0].remove(force=True)

    report = cleanup.execute(the_plan)

    results = {o.action.name: o.result for o in report.outcomes}
    assert results[made["containers"][0].name] == GONE
    assert FAILED not in results.values()
    assert report.summary() == "Removed 4 of 4 planned objects (1 already gone)."


def test_image_replaced_under_the_same_tag_since_the_plan_is_left_alone(
    docker_world: DockerWorld,
) -> None:
    s = docker_world.session
    image = docker_world.image(f"ttg-test-{s}/worker:v1", ttg=True)
    the_plan = cleanup.plan(kubeconfig=NO_KUBECONFIG, scope=docker_world.scope)
    # The tag now points at an image without TTG's labels; the id in the plan does not.
    docker_world.client.images.remove(f"ttg-test-{s}/worker:v1")
    replacement = docker_world.image(f"ttg-test-{s}/worker:v1", ttg=False)

    report = cleanup.execute(the_plan)

    assert [o.result for o in report.outcomes] == [GONE]
    assert docker_world.exists("image", replacement.id)
    assert not docker_world.exists("image", image.id)


def test_help_lists_the_dashed_flags() -> None:
    done = inv("--help", "cleanup", env={**DockerWorld(None).env()})

    assert done.returncode == 0, done.stderr
    for flag in ("--dry-run", "--yes", "--keep-cluster", "--keep-images", "--context"):
        assert flag in done.stdout


def test_kind_cluster_that_is_not_ttgs_is_never_planned(docker_world: DockerWorld) -> None:
    s = docker_world.session
    name = f"ttgtest-{s}"
    node = docker_world.kind_node(name, "control-plane", ttg_node_label=False)

    the_plan = cleanup.plan(kubeconfig=NO_KUBECONFIG, scope=docker_world.scope, cluster=name)

    assert [a for a in the_plan.actions if a.kind == "cluster"] == []
    assert any(f"kind cluster {name} is not TTG's" in note for note in the_plan.kept)
    report = cleanup.execute(the_plan)
    assert report.outcomes == []
    assert docker_world.exists("container", node.id)


def test_ttg_kind_cluster_is_planned_unless_kept(docker_world: DockerWorld) -> None:
    s = docker_world.session
    name = f"ttgtest-{s}"
    docker_world.kind_node(name, "control-plane", ttg_node_label=True)
    docker_world.kind_node(name, "worker", ttg_node_label=True)

    kept = cleanup.plan(
        kubeconfig=NO_KUBECONFIG, scope=docker_world.scope, cluster=name, keep_cluster=True
    )
    planned = cleanup.plan(kubeconfig=NO_KUBECONFIG, scope=docker_world.scope, cluster=name)

    assert [a.kind for a in kept.actions] == []
    assert f"kind cluster {name} is kept (--keep-cluster)" in kept.kept
    clusters = [a for a in planned.actions if a.kind == "cluster"]
    assert [(a.name, a.detail) for a in clusters] == [(name, "2 nodes")]
    assert planned.count_lines() == ["1 Kind cluster"]


def _kind_installed() -> bool:
    from ttg_ops import kind
    from ttg_ops.errors import PreflightError

    try:
        kind.kind_binary()
    except PreflightError:
        return False
    return True


def test_ttg_kind_cluster_is_deleted_through_the_kind_cli(
    docker_world: DockerWorld, tmp_path: Path
) -> None:
    s = docker_world.session
    name = f"ttgtest-{s}"
    nodes = [
        docker_world.kind_node(name, "control-plane", ttg_node_label=True),
        docker_world.kind_node(name, "worker", ttg_node_label=True),
    ]
    kubeconfig = str(tmp_path / "kubeconfig")
    the_plan = cleanup.plan(kubeconfig=kubeconfig, scope=docker_world.scope, cluster=name)

    report = cleanup.execute(the_plan)

    assert [(o.action.kind, o.action.name) for o in report.outcomes] == [("cluster", name)]
    outcome = report.outcomes[0]
    if _kind_installed():
        # kind deletes a cluster by removing the containers labelled with its name.
        assert outcome.result == REMOVED, outcome.reason
        assert not any(docker_world.exists("container", node.id) for node in nodes)
    else:
        assert outcome.result == FAILED
        assert "kind CLI is not installed" in outcome.reason
        assert all(docker_world.exists("container", node.id) for node in nodes)


def _inv_on_a_terminal(world: DockerWorld, answer: str, timeout: float = 120) -> tuple[int, str]:
    """Run ``inv cleanup`` with a pseudo-terminal as stdin and stdout; answer its question."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    from tests.test_inventory_helpers import ROOT

    master, slave = pty.openpty()
    env = world.env(TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "cleanup"],
        cwd=ROOT,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"Delete these" in output:
                os.write(master, answer.encode())
                answered = True
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert answered, output.decode(errors="replace")
    return code, output.decode(errors="replace")


def test_on_a_terminal_cleanup_asks_and_no_deletes_nothing(docker_world: DockerWorld) -> None:
    made = _world(docker_world)

    code, output = _inv_on_a_terminal(docker_world, "n\r")

    assert code == 1, output
    assert "cleanup cancelled at the prompt; nothing was deleted" in output
    assert all(docker_world.exists("image", i.id) for i in made["images"])
    assert all(docker_world.exists("container", c.id) for c in made["containers"])


def test_on_a_terminal_cleanup_asks_and_yes_deletes_in_colour(docker_world: DockerWorld) -> None:
    made = _world(docker_world)

    code, output = _inv_on_a_terminal(docker_world, "y\r")

    assert code == 0, output
    assert "Removed 4 of 4 planned objects." in output
    assert "\x1b[32m" in output or "\x1b[1;32m" in output  # green on a real terminal
    _assert_only_ttg_objects_are_gone(docker_world, made)


def test_kind_node_made_from_a_ttg_image_is_left_to_the_kind_layer(
    docker_world: DockerWorld,
) -> None:
    from ttg_ops.kind import KIND_CLUSTER_LABEL, KIND_ROLE_LABEL

    s = docker_world.session
    image = docker_world.image(f"ttg-test-{s}/base:v1", ttg=True)
    # The node inherits TTG's labels from its image, but it is a node of a
    # kind cluster that is not TTG's (no TTG node label, another name).
    node = docker_world.container(
        image,
        f"other-{s}-control-plane",
        ttg=False,
        extra={KIND_CLUSTER_LABEL: f"other-{s}", KIND_ROLE_LABEL: "control-plane"},
    )

    report = cleanup.execute(cleanup.plan(kubeconfig=NO_KUBECONFIG, scope=docker_world.scope))

    assert [(o.action.kind, o.result) for o in report.outcomes] == [("image", FAILED)]
    assert f"a node of kind cluster other-{s}" in report.outcomes[0].reason
    assert docker_world.exists("container", node.id)
    assert docker_world.exists("image", image.id)


def test_build_stage_images_are_removed_as_build_cache_and_kept_with_keep_images(
    docker_world: DockerWorld,
) -> None:
    from ttg_ops import images

    s = docker_world.session
    worker = docker_world.image(f"ttg-test-{s}/worker:v9.9.9", ttg=True)
    stage = docker_world.image(
        None, ttg=True, version="", extra_labels={labels.DOCKER_COMPONENT: images.STAGE_COMPONENT}
    )
    console, buffer = _console()

    kept, _report = cleanup.run(
        console=console,
        assume_yes=True,
        keep_images=True,
        kubeconfig=NO_KUBECONFIG,
        scope=docker_world.scope,
    )
    assert not [a for a in kept.actions if a.kind in ("stage", "image")]
    assert docker_world.exists("image", stage.id)

    the_plan, report = cleanup.run(
        console=console, assume_yes=True, kubeconfig=NO_KUBECONFIG, scope=docker_world.scope
    )

    assert report is not None
    assert [a.ref for a in the_plan.actions if a.kind == "stage"] == [stage.id]
    assert [a.ref for a in the_plan.actions if a.kind == "image"] == [worker.id]
    assert "Docker build-cache image" in buffer.getvalue()
    assert not docker_world.exists("image", stage.id)
    assert not docker_world.exists("image", worker.id)
