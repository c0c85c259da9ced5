"""Building images: version and name checks, labels, the base choice, build failures."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from docker.errors import ImageNotFound
from hypothesis import given
from hypothesis import strategies as st
from ttg_ops import images, labels
from ttg_ops.errors import ConfigError, PreflightError


@pytest.mark.parametrize("version", ["1.1", "v1.1.0x", "", "v1.1.0", "1.1.0.0", "latest"])
def test_build_rejects_a_malformed_version_naming_the_expected_form(version: str) -> None:
    with pytest.raises(ConfigError, match=r"MAJOR\.MINOR\.PATCH such as 1\.1\.0"):
        images.build_image(version)


@given(
    st.integers(0, 999),
    st.integers(0, 999),
    st.integers(0, 999),
    st.sampled_from(["", "-rc1", "-beta.2", "+build.7"]),
)
def test_every_valid_version_gives_a_legal_docker_tag(
    major: int, minor: int, patch: int, suffix: str
) -> None:
    tag = images.image_tag(f"{major}.{minor}.{patch}{suffix}")
    assert tag.startswith("v")
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag)


def test_image_labels_follow_ttg_labels_and_oci_keys() -> None:
    created = datetime(2026, 1, 27, 5, 16, 7, 123456, tzinfo=UTC)
    found = images.image_labels("1.2.0", "f2009bb-dirty", created)

    assert found["org.opencontainers.image.created"] == "2026-01-27T05:16:07Z"
    assert found["org.opencontainers.image.revision"] == "f2009bb-dirty"
    assert found["org.opencontainers.image.version"] == "1.2.0"
    for key, value in labels.docker_labels("1.2.0").items():
        assert found[key] == value


def test_every_label_has_a_dockerfile_build_argument() -> None:
    found = images.image_labels("1.2.0", "abc1234")
    args = images.label_build_args(found)
    dockerfile = (images.project_root() / "images" / "worker" / "Dockerfile").read_text()

    for key, arg in ((k, images._LABEL_ARGS[k]) for k in found):
        assert f'{key}="${{{arg}}}"' in dockerfile
        assert args[arg] == found[key]


def test_debian_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n")

    assert images.debian_mirror([deb822]) == "http://mirror.example/debian"
    assert images.debian_mirror([one_line]) == "http://other.example/debian"
    assert images.debian_mirror([tmp_path / "missing"]) == images.DEFAULT_MIRROR


@pytest.mark.parametrize(
    "registry", ["", "http://localhost:5000", "local host", "registry/UPPER"], ids=repr
)
def test_push_rejects_a_malformed_registry(registry: str) -> None:
    with pytest.raises(ConfigError, match="registry"):
        images.push_image("ttg-worker:latest", registry, "1.1.0")


def test_stream_with_an_error_chunk_raises_with_step_and_tail() -> None:
    chunks = [
        {"stream": "Step 1/2 : FROM base\n"},
        {"stream": "Step 2/2 : RUN make\n"},
        {"stream": "make: *** no rule\n"},
        {"errorDetail": {"code": 2, "message": "returned a non-zero code: 2"}, "error": "x"},
    ]
    with pytest.raises(images.ImageBuildError) as caught:
        images._stream_build(iter(chunks), None)

    text = str(caught.value)
    assert "Step 2/2 : RUN make" in text
    assert "returned a non-zero code: 2" in text
    assert "make: *** no rule" in text


@pytest.mark.docker
def test_a_failing_build_step_is_reported_and_leaves_no_container(
    docker_client: Any, worker_image: Any, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {worker_image.base}\nRUN echo 'preparing the failing step' && exit 7\n"
    )

    with pytest.raises(images.ImageBuildError) as caught:
        images.run_build(docker_client, tmp_path)

    text = str(caught.value)
    assert "Step 2/2 : RUN echo" in text
    assert "returned a non-zero code: 7" in text
    assert "preparing the failing step" in text
    ran_in = re.findall(r"Running in ([0-9a-f]{12})", text)
    assert ran_in, text
    leftovers = docker_client.containers.list(all=True, filters={"id": ran_in[0]})
    assert leftovers == []


@pytest.mark.docker
def test_an_unavailable_explicit_base_fails_naming_the_offline_base(docker_client: Any) -> None:
    with pytest.raises(PreflightError, match=r"inv images\.base"):
        images.resolve_base(docker_client, "ttg-no-such-base:0")


@pytest.mark.docker
def test_the_default_base_falls_back_to_the_offline_base(
    docker_client: Any, worker_image: Any
) -> None:
    try:
        docker_client.images.get(images.DEFAULT_BASE)
        pytest.skip(f"{images.DEFAULT_BASE} is present, so there is nothing to fall back from")
    except ImageNotFound:
        pass
    if images._try_pull(docker_client, images.DEFAULT_BASE) is None:
        pytest.skip(f"{images.DEFAULT_BASE} can be pulled here")

    assert images.resolve_base(docker_client, None) == images.OFFLINE_BASE
    assert worker_image.base == images.OFFLINE_BASE


@pytest.mark.docker
def test_the_offline_base_carries_ttg_labels(docker_client: Any, worker_image: Any) -> None:
    if worker_image.base != images.OFFLINE_BASE:
        pytest.skip(f"the image was built from {worker_image.base}, not the offline base")
    found = docker_client.images.get(images.OFFLINE_BASE).labels
    assert found[labels.DOCKER_PROJECT] == labels.PROJECT
    assert found[labels.DOCKER_COMPONENT] == "base"


def _steps(log: list[str]) -> list[tuple[str, bool]]:
    """``(instruction, used the cache)`` for every step of a verbose build log."""
    steps: list[tuple[str, bool]] = []
    for line in log:
        if line.startswith("Step "):
            steps.append((line.split(" : ", 1)[1], False))
        elif "Using cache" in line and steps:
            steps[-1] = (steps[-1][0], True)
    return steps


def _build_steps(root: Path | None, name: str) -> tuple[Any, list[tuple[str, bool]]]:
    log: list[str] = []
    result = images.build_image("1.1.0", tags=[name], verbose=True, echo=log.append, root=root)
    return result, _steps(log)


@pytest.mark.docker
@pytest.mark.slow
def test_a_rebuild_without_changes_reuses_every_layer(
    worker_image: Any, docker_client: Any
) -> None:
    name = "ttg-worker:test-rebuild"
    try:
        result, steps = _build_steps(None, name)

        rebuilt = [
            instruction
            for instruction, cached in steps
            if not cached and not instruction.startswith(("ARG ", "FROM "))
        ]
        # At most the metadata instruction that carries the build time runs again
        # (not even that when the second has not changed).
        assert len(steps) > 20
        assert all(i.startswith("LABEL org.opencontainers.image.created") for i in rebuilt), rebuilt
        assert len(rebuilt) <= 1
        assert result.seconds < 30
    finally:
        with contextlib.suppress(ImageNotFound):
            docker_client.images.remove(name)


@pytest.mark.docker
def test_a_failed_push_is_reported_and_leaves_no_registry_tag(
    worker_image: Any, docker_client: Any
) -> None:
    with pytest.raises(images.ImageBuildError, match=r"pushing localhost:5999/ttg-worker:v1\.1\.0"):
        images.push_image(worker_image.tags[0], "localhost:5999", "1.1.0")

    with pytest.raises(ImageNotFound):
        docker_client.images.get("localhost:5999/ttg-worker:v1.1.0")


@pytest.mark.docker
def test_making_the_base_again_is_skipped_when_it_exists(docker_client: Any) -> None:
    try:
        existing = docker_client.images.get(images.OFFLINE_BASE)
    except ImageNotFound:
        pytest.skip(f"{images.OFFLINE_BASE} does not exist here; `inv images.base` makes it")
    said: list[str] = []

    result = images.build_base(echo=said.append)

    assert result.created is False
    assert result.image_id == existing.id
    assert any("--force" in line for line in said)


@pytest.mark.docker
@pytest.mark.slow
def test_a_code_change_rebuilds_only_the_last_layer(
    worker_image: Any, docker_client: Any, tmp_path: Path
) -> None:
    root = images.project_root()
    copy = tmp_path / "checkout"
    shutil.copytree(
        root,
        copy,
        ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "runs", "__pycache__", "*.pyc"),
    )
    wheelhouse = root / ".cache" / "image" / "wheelhouse"
    if wheelhouse.is_dir():  # the downloaded dependency wheels: no need to fetch them again
        shutil.copytree(wheelhouse, copy / ".cache" / "image" / "wheelhouse")
    module = copy / "packages" / "ttg-worker" / "src" / "ttg_worker" / "__init__.py"
    # A change of TTG's code that no earlier build has seen.
    module.write_text(module.read_text() + f"\n# change {uuid.uuid4().hex}\n")
    name = "ttg-worker:test-code-change"
    try:
        changed, steps = _build_steps(copy, name)

        cached = {
            instruction.split()[0] + " " + instruction.split()[1]: hit for instruction, hit in steps
        }
        assert cached["COPY wheels/deps/"] and cached["COPY --from=runtime"]
        assert cached["COPY --from=deps"]
        assert not cached["COPY wheels/app/"]
        assert not cached["COPY --from=app"]
        new = docker_client.images.get(changed.image_id).history()
        sizes = [h["Size"] for h in new if h["Size"] > 0]
        assert len(sizes) == 3
        assert sizes[0] < 1_000_000, "the only new layer is TTG's code, well under 1 MB"
    finally:
        with contextlib.suppress(ImageNotFound):
            docker_client.images.remove(name)


def test_build_chain_collects_every_step_image_of_a_classic_build_log() -> None:
    log = [
        "Step 1/3 : FROM ttg-base:bookworm-python3.11 AS deps",
        " ---> 3f1c2a9b8d7e",
        "Step 2/3 : COPY requirements.txt /build/requirements.txt",
        " ---> Using cache",
        " ---> 0a1b2c3d4e5f",
        "Step 3/3 : RUN true",
        " ---> Running in 99aa88bb77cc",
        "Removing intermediate container 99aa88bb77cc",
        " ---> 5e6f7a8b9c0d",
        "Successfully built 5e6f7a8b9c0d",
    ]

    assert images.build_chain(log) == {"3f1c2a9b8d7e", "0a1b2c3d4e5f", "5e6f7a8b9c0d"}


def test_only_untagged_ttg_stage_images_count_as_build_stages() -> None:
    stage = {**labels.docker_labels(""), labels.DOCKER_COMPONENT: images.STAGE_COMPONENT}
    inherited = {**labels.docker_labels("bookworm"), labels.DOCKER_COMPONENT: "base"}

    assert images.is_build_stage(stage, [])
    assert images.is_build_stage(inherited, [])  # stages of builds made before the label
    assert not images.is_build_stage(inherited, [images.OFFLINE_BASE])  # the base itself
    assert not images.is_build_stage(labels.docker_labels("1.1.0"), [])  # a superseded worker
    assert not images.is_build_stage({**stage, labels.DOCKER_PROJECT: "someone-else"}, [])


def test_the_dockerfile_marks_its_stages_as_build_stages() -> None:
    dockerfile = (images.project_root() / "images" / "worker" / "Dockerfile").read_text()
    first_stage = dockerfile.split(" AS deps", 1)[1].split("\nFROM ", 1)[0]

    assert f'{labels.DOCKER_PROJECT}="{labels.PROJECT}"' in first_stage
    assert f'{labels.DOCKER_COMPONENT}="{images.STAGE_COMPONENT}"' in first_stage
    assert f'{labels.DOCKER_VERSION}=""' in first_stage


def _stage_images(client: Any) -> dict[str, dict[str, Any]]:
    """Dangling build-stage images by id: the leftovers a build can leave."""
    selector = {"dangling": True, "label": [f"{labels.DOCKER_PROJECT}={labels.PROJECT}"]}
    return {
        entry["Id"]: entry
        for entry in client.api.images(filters=selector)
        if images.is_build_stage(entry.get("Labels"), [])
    }


@pytest.mark.docker
@pytest.mark.slow
def test_builds_with_code_changes_leave_only_the_current_stage_images(
    worker_image: Any, docker_client: Any, tmp_path: Path
) -> None:
    root = images.project_root()
    copy = tmp_path / "checkout"
    shutil.copytree(
        root,
        copy,
        ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "runs", "__pycache__", "*.pyc"),
    )
    wheelhouse = root / ".cache" / "image" / "wheelhouse"
    if wheelhouse.is_dir():
        shutil.copytree(wheelhouse, copy / ".cache" / "image" / "wheelhouse")
    module = copy / "packages" / "ttg-worker" / "src" / "ttg_worker" / "__init__.py"
    name = "ttg-worker:test-stage-leftovers"
    seen = [set(_stage_images(docker_client))]
    try:
        for _ in range(3):
            module.write_text(module.read_text() + f"\n# change {uuid.uuid4().hex}\n")
            images.build_image("1.1.0", tags=[name], root=copy)
            seen.append(set(_stage_images(docker_client)))
        new = [after - before for before, after in itertools.pairwise(seen)]

        # Every build leaves its own new app stage; the next build removes it,
        # so at the end only the last build's stages (runtime and app) remain.
        assert all(new), new
        assert not (new[0] | new[1]) & seen[-1]
        assert len(seen[-1] - seen[0]) <= 2, seen[-1] - seen[0]
    finally:
        with contextlib.suppress(ImageNotFound):
            docker_client.images.remove(name)
