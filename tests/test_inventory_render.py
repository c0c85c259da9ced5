"""The inventory tables off a terminal: 80 columns, nothing cut; inventories built in memory."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console
from ttg_ops import inventory
from ttg_ops.inventory import (
    ContainerInfo,
    DockerSection,
    EventInfo,
    ImageInfo,
    Inventory,
    JobInfo,
    KindSection,
    KubeSection,
    PodInfo,
)

RUN = "ttg-computation-20261203-175336-ab12"
MESSAGE = (
    "0/4 nodes are available: 1 node(s) had untolerated taint "
    "{node-role.kubernetes.io/control-plane: }, 3 node(s) didn't match pod anti-affinity rules."
)


def _inventory() -> Inventory:
    docker = DockerSection(True)
    docker.images = [
        ImageInfo(
            "sha256:" + "a" * 64,
            "ttg-test-c1bc9c4da2/worker",
            ["ttg-test-c1bc9c4da2/worker:latest", "ttg-test-c1bc9c4da2/worker:v9.9.9"],
            "9.9.9",
            45_504_527,
            "2026-12-03T16:28:19Z",
        ),
        ImageInfo("sha256:" + "b" * 64, "<none>", [], "1.1.0", 45_504_527, "2026-12-03T16:20:00Z"),
    ]
    docker.build_cache = [
        ImageInfo("sha256:" + "c" * 64, "<none>", [], "", 123_347_000, "2026-12-03T17:53:49Z")
    ]
    docker.containers = [
        ContainerInfo("x", "ttg-run-20261203-175336-ab12-0", "ttg-worker:v1.1.0", "", "exited", RUN)
    ]
    kube = KubeSection("kind-ttg-cluster", "/root/.kube/config", None, True)
    kube.jobs = [JobInfo("ttg", RUN, "u", "3/3", 3, 0, 0, "Complete", 93.0, "r")]
    kube.pods = [
        PodInfo(
            "ttg",
            f"{RUN}-{i}-x7q2k",
            "u",
            "ttg-cluster-worker2",
            "Succeeded",
            "Completed",
            RUN,
            "r",
        )
        for i in range(3)
    ]
    kube.events = [
        EventInfo(
            "ttg",
            "Warning",
            "FailedScheduling",
            f"Pod/{RUN}-0-x7q2k",
            MESSAGE,
            1,
            "2026-12-03T17:53:36Z",
        )
    ]
    return Inventory(docker, KindSection(True, "ttg-cluster"), kube)


def _render(width: int) -> str:
    buffer = StringIO()
    inventory.render(_inventory(), Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()


def test_plain_tables_fit_80_columns_and_keep_names_whole() -> None:
    text = _render(80)

    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80, text
    for whole in (
        "ttg-test-c1bc9c4da2/worker",
        f"{RUN}-2-x7q2k",
        "ttg-run-20261203-175336-ab12-0",
        "FailedScheduling",
        "2026-12-03 16:28",
        "bbbbbbbbbbbb",  # an untagged image keeps its id when the ID column goes
    ):
        assert whole in text, whole
    assert "TTG pods in namespace ttg" in text
    assert "didn't match pod" in " ".join(text.split())
    assert "Build cache: 1 untagged image(s)" in text


@pytest.mark.parametrize("width", [100, 160])
def test_wide_consoles_keep_every_column(width: int) -> None:
    text = _render(width)

    assert "aaaaaaaaaaaa" in text  # the ID column
    assert "2026-12-03T16:28:19Z" in text
    assert "Namespace" in text
    assert "Summary  Docker: TTG Images: 2, TTG Containers: 1, Kind Clusters: 0; Kubernetes" in text


def test_short_time_cuts_iso_times_to_the_minute() -> None:
    assert inventory.short_time("2026-12-03T16:28:19Z") == "2026-12-03 16:28"
    assert inventory.short_time("") == ""
    assert inventory.short_time("yesterday") == "yesterday"
