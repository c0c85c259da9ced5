"""The Docker backend on a real daemon: runs, labels, lock-down, space files, stop, failures."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from ttg_logging import grammar
from ttg_ops import labels, runner
from ttg_ops.backends.base import FAILED, SUCCEEDED
from ttg_ops.backends.docker import DockerBackend
from ttg_ops.errors import ConfigError, PreflightError
from ttg_ops.spec import RunSpec

from tests.image_fixtures import SESSION

pytestmark = pytest.mark.docker


@pytest.fixture
def run_ids(docker_client: Any) -> Iterator[list[str]]:
    """Run ids used by a test; their containers are removed afterwards whatever happened."""
    used: list[str] = []
    yield used
    for run_id in used:
        selector = {"label": [f"{labels.DOCKER_RUN_ID}={run_id}"]}
        for container in docker_client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)


def _spec(run_ids: list[str], **overrides: Any) -> RunSpec:
    run_id = f"t{SESSION}-{len(run_ids)}"
    run_ids.append(run_id)
    settings: dict[str, Any] = {"workers": 2, "params": 200, "batch_size": 50, "run_id": run_id}
    settings.update(overrides)
    return RunSpec(**settings)


def _containers(docker_client: Any, run_id: str) -> list[Any]:
    selector = {"label": [f"{labels.DOCKER_RUN_ID}={run_id}"]}
    return docker_client.containers.list(all=True, filters=selector)


def test_a_docker_run_covers_every_parameter_and_removes_its_containers(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    spec = _spec(run_ids)
    backend = DockerBackend(image=worker_image.tags[0])

    report = runner.run(spec, backend, tmp_path / spec.run_id, console=Console(file=io.StringIO()))

    assert report["status"] == "succeeded", json.dumps(report["workers"], indent=1)[:3000]
    assert report["backend"] == "docker"
    assert report["results"]["unique"] == 200
    assert report["results"]["missing_count"] == 0
    assert report["results"]["complete"] is True
    for worker in report["workers"]:
        assert worker["state"] == SUCCEEDED
        assert worker["name"] == f"ttg-{spec.run_id}-{worker['index']}"
        assert worker["summary"]["pod_name"] == worker["name"]
        assert worker["started_at"] <= worker["finished_at"]
    assert _containers(docker_client, spec.run_id) == []


def test_containers_are_labelled_placed_and_locked_down(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    spec = _spec(run_ids, workers=1, params=10)
    backend = DockerBackend(image=worker_image.tags[0], keep=True)

    backend.launch(spec, tmp_path)
    lines = list(backend.lines())
    backend.stop()

    (container,) = _containers(docker_client, spec.run_id)
    attrs = container.attrs
    assert container.name == f"ttg-{spec.run_id}-0"
    expected = {**labels.docker_labels(spec.version, spec.run_id), "ttg.worker-index": "0"}
    assert expected.items() <= container.labels.items()
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "none"
    assert host["Memory"] == 512 * 1024 * 1024
    assert "/tmp" in host["Tmpfs"]
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["TTG_OUTPUT_DIR"] == "/output"
    assert env["POD_NAME"] == container.name
    assert env["NODE_NAME"] == docker_client.info()["Name"]
    assert env["JOB_COMPLETION_INDEX"] == "0"
    assert env["TTG_RUN_ID"] == spec.run_id
    expected_user = "10001:10001" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert attrs["Config"]["User"] == expected_user
    summary = grammar.find_summary(line for _, line in lines)
    assert summary is not None
    assert summary["node_name"] == env["NODE_NAME"]
    assert (tmp_path / "results" / "results-00000.jsonl").is_file()


def test_a_host_space_file_is_mounted_read_only_and_covered(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    space = tmp_path / "points.jsonl"
    space.write_text("".join(json.dumps({"x": i, "y": -i}) + "\n" for i in range(7)))
    spec = _spec(run_ids, space=str(space), params=0)
    backend = DockerBackend(image=worker_image.tags[0], keep=True)

    backend.launch(spec, tmp_path / "run")
    list(backend.lines())
    backend.stop()

    assert [s.state for s in backend.states()] == [SUCCEEDED, SUCCEEDED]
    container = _containers(docker_client, spec.run_id)[0]
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/input/points.jsonl"]["RW"] is False
    assert mounts["/output"]["RW"] is True
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert env["TTG_SPACE"] == "/input/points.jsonl"
    rows = [
        json.loads(line)
        for shard in sorted((tmp_path / "run" / "results").glob("results-*.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    assert sorted(row["params"]["x"] for row in rows) == list(range(7))


def test_stop_sends_sigterm_and_workers_end_interrupted(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    spec = _spec(run_ids, params=1_000_000, batch_size=50)
    backend = DockerBackend(image=worker_image.tags[0])
    backend.launch(spec, tmp_path)

    seen: set[int] = set()
    deadline = time.monotonic() + 60
    for index, line in backend.lines(timeout=60):
        if "PROGRESS" in line:
            seen.add(index)
        if seen == {0, 1} or time.monotonic() > deadline:
            break
    assert seen == {0, 1}, "both workers should report progress within 60 s"
    backend.stop(grace=20)

    states = backend.states()
    assert [s.exit_code for s in states] == [143, 143]
    for state in states:
        summary = grammar.find_summary(state.last_lines)
        assert summary is not None, state.last_lines
        assert summary["status"] == "interrupted"
    assert _containers(docker_client, spec.run_id) == []


def test_a_failing_worker_is_reported_with_its_exit_code(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    spec = _spec(run_ids, workers=1, task="no_such_task")
    backend = DockerBackend(image=worker_image.tags[0])

    backend.launch(spec, tmp_path)
    text = "\n".join(line for _, line in backend.lines())
    backend.stop()

    (state,) = backend.states()
    assert state.state == FAILED
    assert state.exit_code == 2
    assert state.message == "exited with code 2"
    assert "no_such_task" in text
    assert _containers(docker_client, spec.run_id) == []


def test_a_missing_image_fails_before_starting_anything(
    docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    spec = _spec(run_ids, version="9.9.9-missing")
    backend = DockerBackend()

    with pytest.raises(
        PreflightError, match=r"(?s)ttg-worker:v9\.9\.9-missing.*inv build --version"
    ):
        backend.launch(spec, tmp_path)
    assert _containers(docker_client, spec.run_id) == []


@pytest.mark.parametrize("image", ["BAD IMAGE", "team/Upper:1", "name:", "a::b", "-x"])
def test_a_malformed_image_reference_is_refused_naming_it(image: str) -> None:
    with pytest.raises(ConfigError, match=r"is not a valid image reference; allowed: "):
        DockerBackend(image=image)


def test_a_docker_api_error_for_the_image_is_a_preflight_error(
    docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    # Well-formed for TTG, but the daemon refuses the digest length: a 400 API error.
    spec = _spec(run_ids)
    backend = DockerBackend(image="ttg-worker@sha256:" + "0" * 32)
    with pytest.raises(PreflightError, match=r"refused to look up the worker image.*digest"):
        backend.launch(spec, tmp_path)
    assert _containers(docker_client, spec.run_id) == []


def test_inv_run_with_a_bad_image_exits_2_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "invoke", "run", "--backend", "docker", "--image", "BAD IMAGE",
         "--workers", "1", "--params", "5", "--runs-dir", str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "image 'BAD IMAGE' is not a valid image reference" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands files to the image's user")
def test_a_space_file_the_container_user_cannot_read_is_refused(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    space = tmp_path / "private.jsonl"
    space.write_text('{"x": 1}\n')
    space.chmod(0o600)
    spec = _spec(run_ids, space=str(space), params=0)

    with pytest.raises(ConfigError, match=r"(?s)not readable by the container user 10001.*chmod"):
        DockerBackend(image=worker_image.tags[0]).launch(spec, tmp_path / "run")
    assert _containers(docker_client, spec.run_id) == []


def test_a_killed_container_is_missing_and_a_docker_rerun_completes_the_results(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    spec = _spec(run_ids, workers=2, params=2000, batch_size=100)
    killed: list[int] = []

    def kill_worker_1(backend: Any, index: int, line: str) -> None:
        if index == 1 and "PROGRESS" in line and not killed:
            backend.kill(index, signal.SIGKILL)
            killed.append(index)

    console = Console(file=io.StringIO())
    image = worker_image.tags[0]
    report = runner.run(
        spec, DockerBackend(image=image), tmp_path / spec.run_id, console=console,
        on_line=kill_worker_1,
    )  # fmt: skip

    assert killed == [1]
    assert report["status"] == "failed"
    victim = report["workers"][1]
    assert victim["state"] == "missing"
    assert victim["exit_code"] == 137
    assert report["results"]["complete"] is False

    follow_up, merged = runner.rerun_failed(
        tmp_path / spec.run_id, DockerBackend(image=image), console=console
    )
    assert follow_up is not None
    run_ids.append(follow_up["run_id"])
    assert follow_up["status"] == "succeeded"
    assert merged.complete
    assert merged.unique == 2000


def test_a_missing_image_hint_takes_the_version_from_the_image_tag(
    docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    spec = _spec(run_ids)
    backend = DockerBackend(image="ttg-worker:v9.9.9")
    with pytest.raises(PreflightError, match=r"inv build --version=9\.9\.9`"):
        backend.launch(spec, tmp_path)
    assert _containers(docker_client, spec.run_id) == []


def test_an_image_that_is_not_a_worker_image_is_named_in_the_report(
    docker_client: Any, run_ids: list[str], tmp_path: Path
) -> None:
    from docker.errors import ImageNotFound
    from ttg_ops.report import print_report

    image = "ttg-base:bookworm-python3.11"
    try:
        docker_client.images.get(image)
    except ImageNotFound:
        pytest.skip(f"the image {image} (made by `inv build`) is not in the Docker daemon")
    spec = _spec(run_ids, workers=1, params=10)
    report = runner.run(
        spec,
        DockerBackend(image=image),
        tmp_path / spec.run_id,
        console=Console(file=io.StringIO()),
    )
    out = io.StringIO()
    print_report(report, Console(file=out, width=300))
    assert report["status"] == "failed"
    assert (
        f"it printed nothing and no summary: is {image} a TTG worker image (entrypoint ttg-worker)?"
        in out.getvalue()
    )


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_ctrl_c_while_containers_start_still_writes_the_report(
    worker_image: Any, docker_client: Any, run_ids: list[str], tmp_path: Path, delay: float
) -> None:
    import subprocess
    import sys

    spec = _spec(run_ids)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(NO_COLOR="1", COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "run", "--backend", "docker",
         "--image", worker_image.tags[0], "--workers", "2", "--params", "20000",
         "--runs-dir", str(tmp_path), "--run-id", spec.run_id],
        cwd=Path(__file__).resolve().parents[1], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = tmp_path / spec.run_id
    deadline = time.monotonic() + 60
    while not run_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert run_dir.exists(), "inv run did not create its run directory within 60 s"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert f"Run {spec.run_id} was interrupted; the report is written." in err, out + err
    assert json.loads((run_dir / "report.json").read_text())["status"] == "interrupted"
    assert _containers(docker_client, spec.run_id) == []
