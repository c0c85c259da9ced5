"""The cleanup plan and its safety rules, from inventories built in memory (no daemon needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ttg_ops import cleanup
from ttg_ops.cleanup import Action, CleanupCancelledError, Outcome, build_plan
from ttg_ops.errors import ConfigError
from ttg_ops.inventory import (
    ContainerInfo,
    DockerSection,
    IgnoredCluster,
    ImageInfo,
    Inventory,
    JobInfo,
    KindCluster,
    KindNode,
    KindSection,
    KubeSection,
    NamespaceInfo,
    PodInfo,
    Scope,
    summary_text,
)

ORDER = ["job", "pod", "namespace", "cluster", "container", "stage", "image"]


def _image(n: int, built_on: list[str] | None = None) -> ImageInfo:
    ident = f"sha256:{n:064x}"
    return ImageInfo(ident, "ttg-worker", [f"ttg-worker:v1.{n}.0"], "1.1.0", 10, "", built_on or [])


def _inventory(
    *,
    jobs: int = 1,
    pods: int = 3,
    containers: int = 4,
    images: int = 2,
    clusters: int = 1,
    namespaces: tuple[str, ...] = ("ttg",),
    reachable: bool = True,
) -> Inventory:
    kube = KubeSection("kind-ttg-cluster", "/kubeconfig", None, reachable)
    if not reachable:
        kube.note = "skipped: the API server does not answer"
    else:
        kube.jobs = [
            JobInfo("ttg", f"job-{i}", f"uid-job-{i}", "3/3", 3, 0, 0, "Complete", 9.0, "r")
            for i in range(jobs)
        ]
        kube.pods = [
            PodInfo("ttg", f"pod-{i}", f"uid-pod-{i}", "w1", "Succeeded", "Completed", "job-0", "r")
            for i in range(pods)
        ]
        kube.namespaces = [NamespaceInfo(name, f"uid-ns-{name}", "Active") for name in namespaces]
    kind = KindSection(True, "ttg-cluster")
    kind.clusters = [
        KindCluster(
            "ttg-cluster", "kind-ttg-cluster", "label", [KindNode("n", "worker", "running")]
        )
        for _ in range(clusters)
    ]
    kind.ignored = [IgnoredCluster("other", "its name is not the configured cluster name")]
    docker = DockerSection(True)
    docker.containers = [
        ContainerInfo(f"{i:064x}", f"ttg-{i}", "ttg-worker:v1", "sha256:x", "exited", "r")
        for i in range(containers)
    ]
    docker.images = [_image(i) for i in range(images)]
    return Inventory(docker, kind, kube, Scope(), "2026-01-27T05:16:07Z")


def test_plan_follows_dependency_order_and_matches_the_seed_counts() -> None:
    the_plan = build_plan(_inventory(), namespace_contents={"ttg": []})

    kinds = [action.kind for action in the_plan.actions]
    assert kinds == sorted(kinds, key=ORDER.index)
    assert the_plan.count_lines() == [
        "1 Kubernetes job",
        "3 Kubernetes pods",
        "1 Kubernetes namespace",
        "1 Kind cluster",
        "4 Docker containers",
        "2 Docker images",
    ]
    job = the_plan.actions[0]
    assert job.describe() == "Kubernetes job ttg/job-0 (propagation Background)"
    assert job.ref == "uid-job-0"


def test_summary_has_the_seed_shape() -> None:
    assert summary_text(_inventory()) == (
        "Docker: TTG Images: 2, TTG Containers: 4, Kind Clusters: 1; "
        "Kubernetes: TTG Jobs: 1, TTG Pods: 3"
    )
    assert summary_text(_inventory(reachable=False)).endswith("TTG Jobs: -, TTG Pods: -")


def test_keep_flags_leave_their_layers_alone() -> None:
    the_plan = build_plan(_inventory(), keep_cluster=True, keep_images=True)

    assert {action.kind for action in the_plan.actions} == {"job", "pod", "container"}
    assert "kind cluster ttg-cluster is kept (--keep-cluster)" in the_plan.kept
    assert "2 TTG image(s) are kept (--keep-images)" in the_plan.kept


@pytest.mark.parametrize(
    ("contents", "planned", "note"),
    [
        ({"ttg": []}, True, ""),
        (
            {"ttg": ["configmap/theirs"]},
            False,
            "holds objects TTG did not create (configmap/theirs)",
        ),
        ({}, False, "its contents could not be listed"),
    ],
    ids=["empty", "holds-other-objects", "unknown"],
)
def test_namespace_is_planned_only_when_it_holds_nothing_else(
    contents: dict[str, list[str]], planned: bool, note: str
) -> None:
    the_plan = build_plan(_inventory(), namespace_contents=contents)

    names = [a.name for a in the_plan.actions if a.kind == "namespace"]
    assert names == (["ttg"] if planned else [])
    if note:
        assert any(note in line for line in the_plan.kept)


def test_unreachable_cluster_plans_no_kubernetes_objects_and_says_why() -> None:
    the_plan = build_plan(_inventory(reachable=False))

    assert not [a for a in the_plan.actions if a.layer == cleanup.KUBERNETES]
    assert any("does not answer" in note for note in the_plan.kept)


def test_orphan_propagation_is_refused() -> None:
    with pytest.raises(ConfigError, match="Orphan would leave the Jobs' pods behind"):
        build_plan(_inventory(), propagation="Orphan")


def test_image_built_on_another_ttg_image_is_removed_first() -> None:
    inventory = _inventory(images=0)
    base, worker = _image(1), _image(2, built_on=[f"sha256:{1:064x}"])
    inventory.docker.images = [base, worker]

    the_plan = build_plan(inventory)

    assert [a.ref for a in the_plan.actions if a.kind == "image"] == [worker.id, base.id]


def _stage(n: int) -> ImageInfo:
    return ImageInfo(f"sha256:{n:064x}", "<none>", [], "", 120_000_000, "2026-01-27T05:16:07Z")


def test_build_stage_images_are_planned_as_build_cache_before_the_base() -> None:
    inventory = _inventory(images=0)
    base = _image(1)
    inventory.docker.images = [base]
    inventory.docker.build_cache = [_stage(7), _stage(8)]

    the_plan = build_plan(inventory)

    stages = [a for a in the_plan.actions if a.kind == "stage"]
    assert [a.ref for a in stages] == [f"sha256:{7:064x}", f"sha256:{8:064x}"]
    assert the_plan.actions.index(stages[-1]) < [a.ref for a in the_plan.actions].index(base.id)
    assert "2 Docker build-cache images" in the_plan.count_lines()
    assert "1 Docker image" in the_plan.count_lines()
    assert stages[0].describe().startswith("Docker build-cache image 000000000000 (untagged")

    kept = build_plan(inventory, keep_images=True)
    assert not [a for a in kept.actions if a.kind in ("stage", "image")]
    assert "2 build-cache image(s) of earlier builds are kept (--keep-images)" in kept.kept


@given(
    jobs=st.integers(0, 4),
    pods=st.integers(0, 6),
    containers=st.integers(0, 5),
    images=st.integers(0, 4),
    clusters=st.integers(0, 1),
    keep_cluster=st.booleans(),
    keep_images=st.booleans(),
)
def test_dry_run_lines_and_counts_describe_exactly_the_planned_actions(
    *,
    jobs: int,
    pods: int,
    containers: int,
    images: int,
    clusters: int,
    keep_cluster: bool,
    keep_images: bool,
) -> None:
    inventory = _inventory(
        jobs=jobs,
        pods=pods,
        containers=containers,
        images=images,
        clusters=clusters,
        namespaces=(),
    )
    the_plan = build_plan(inventory, keep_cluster=keep_cluster, keep_images=keep_images)

    lines = the_plan.lines()
    assert lines == [f"would delete {a.describe()}" for a in the_plan.actions]
    assert sum(the_plan.counts().values()) == len(the_plan.actions)
    expected = jobs + pods + containers
    expected += 0 if keep_cluster else clusters
    expected += 0 if keep_images else images
    assert len(the_plan.actions) == expected
    kinds = [a.kind for a in the_plan.actions]
    assert kinds == sorted(kinds, key=ORDER.index)


def test_confirmation_is_refused_without_a_terminal() -> None:
    the_plan = build_plan(_inventory())

    with pytest.raises(ConfigError, match="not a terminal") as raised:
        cleanup.confirm(the_plan, assume_yes=False, interactive=False, ask=_never_asked)
    assert raised.value.exit_code == 2
    assert "--yes" in str(raised.value)


def test_confirmation_is_asked_on_a_terminal_and_no_cancels() -> None:
    the_plan = build_plan(_inventory())
    questions: list[str] = []

    def answer_no(question: str) -> bool:
        questions.append(question)
        return False

    with pytest.raises(CleanupCancelledError):
        cleanup.confirm(the_plan, assume_yes=False, interactive=True, ask=answer_no)
    assert questions == [f"Delete these {len(the_plan.actions)} object(s)?"]
    cleanup.confirm(the_plan, assume_yes=False, interactive=True, ask=lambda _q: True)


def test_yes_skips_the_question_and_an_empty_plan_needs_no_answer() -> None:
    cleanup.confirm(build_plan(_inventory()), assume_yes=True, interactive=False, ask=_never_asked)
    empty = build_plan(
        _inventory(jobs=0, pods=0, containers=0, images=0, clusters=0, namespaces=())
    )
    assert empty.actions == []
    cleanup.confirm(empty, assume_yes=False, interactive=False, ask=_never_asked)


def test_report_names_what_failed_and_why() -> None:
    job = Action(cleanup.KUBERNETES, "job", "j", "ttg", "u")
    image = Action(cleanup.DOCKER, "image", "ttg-worker:v1", ref="sha256:1")
    report = cleanup.CleanupReport(
        [
            Outcome(job, cleanup.GONE),
            Outcome(image, cleanup.FAILED, "it is used by container x (not TTG's)"),
        ]
    )

    assert report.summary() == "Removed 1 of 2 planned objects (1 already gone)."
    assert report.failure_text() == (
        "1 of 2 planned objects were not removed: "
        "Docker image ttg-worker:v1: it is used by container x (not TTG's)"
    )
    with pytest.raises(cleanup.CleanupIncompleteError) as raised:
        cleanup.raise_for_failures(report)
    assert raised.value.exit_code == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttg.test-session", "must be key=value"),
        ("=x", "must be key=value"),
        ("k=not valid!", "must be key=value"),
    ],
)
def test_scope_rejects_malformed_labels(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Scope.parse(text)


def test_scope_adds_its_labels_to_both_selectors() -> None:
    scope = Scope.parse("ttg.test-session=abc, tier=x")

    assert scope.docker_filters() == {
        "label": ["ttg.project=distributed-compute", "ttg.test-session=abc", "tier=x"]
    }
    assert scope.k8s_selector() == "ttg.io/project=distributed-compute,ttg.test-session=abc,tier=x"
    assert scope.matches({"ttg.test-session": "abc", "tier": "x", "other": "y"})
    assert not scope.matches({"ttg.test-session": "abc"})
    assert Scope.parse("") == Scope()


def _never_asked(question: str) -> bool:
    raise AssertionError(f"asked {question!r} although no question was expected")
