"""The worker image, run in real containers: output, labels, tags, user, signals, read-only root."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ttg_logging import grammar

from tests.image_fixtures import WorkerRun

pytestmark = pytest.mark.docker

SHARD_ENV = {
    "JOB_COMPLETION_INDEX": "1",
    "TTG_TOTAL_WORKERS": "3",
    "TTG_TOTAL_PARAMS": "300",
    "TTG_BATCH_SIZE": "40",
}
HARDENED = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,size=16m"},
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
}


def _summary(run: WorkerRun) -> dict[str, Any]:
    summary = grammar.find_summary(run.lines)
    assert summary is not None, f"no summary in the worker output:\n{run.stdout}\n{run.stderr}"
    return summary


def _writable_dir(path: Path) -> Path:
    """A host directory the image's user (10001) can write to."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, 10001, 10001)
    else:
        path.chmod(0o777)
    return path


def test_worker_shard_logs_progress_and_a_summary_and_exits_zero(run_worker: Any) -> None:
    run = run_worker(SHARD_ENV)

    assert run.exit_code == 0, run.stdout + run.stderr
    events = grammar.parse_lines(run.lines)
    progress = [event for event in events if event.kind == grammar.PROGRESS]
    assert [event.fields["processed"] for event in progress] == [40, 80, 100]
    assert all(event.fields["total"] == 100 for event in progress)
    assert not grammar.invalid_lines(run.lines)
    summary = _summary(run)
    assert summary["worker_id"] == 1
    assert summary["status"] == "completed"
    assert (summary["range_start"], summary["range_end"]) == (100, 200)
    assert summary["processed_count"] == 100
    assert summary["hostname"] == run.attrs["Config"]["Hostname"]


def test_image_carries_the_oci_and_ttg_labels(worker_image: Any, docker_client: Any) -> None:
    from ttg_ops import images, labels

    found = docker_client.images.get(worker_image.tags[0]).labels
    assert found == worker_image.labels
    assert found["ttg.project"] == labels.PROJECT == "distributed-compute"
    assert found["ttg.component"] == "worker"
    assert found["ttg.version"] == found["org.opencontainers.image.version"] == "1.1.0"
    assert found["org.opencontainers.image.title"] == "TTG Distributed Worker"
    assert found["org.opencontainers.image.description"] == (
        "Distributed computation worker for the TTG project"
    )
    assert found["org.opencontainers.image.licenses"] == "MIT"
    assert found["org.opencontainers.image.vendor"] == "TTG Team"
    assert found["org.opencontainers.image.source"] == "https://github.com/ttg/distributed-compute"
    assert found["org.opencontainers.image.revision"] == images.git_revision(images.project_root())
    created = datetime.strptime(found["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ")
    age = datetime.now(UTC).replace(tzinfo=None) - created
    assert 0 <= age.total_seconds() < 24 * 3600


def test_version_and_latest_tags_point_at_one_image(worker_image: Any, docker_client: Any) -> None:
    assert worker_image.tags == ["ttg-worker:v1.1.0", "ttg-worker:latest"]
    ids = {docker_client.images.get(tag).id for tag in worker_image.tags}
    assert ids == {worker_image.image_id}


def test_image_is_at_most_50_mb(worker_image: Any) -> None:
    assert worker_image.size <= 50 * 1000 * 1000, f"{worker_image.size / 1e6:.1f} MB"


def test_image_runs_as_an_unprivileged_user(
    worker_image: Any, docker_client: Any, run_worker: Any
) -> None:
    config = docker_client.images.get(worker_image.image_id).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["ttg-worker"]

    script = "print(open('/proc/self/status').read())"
    run = run_worker({}, entrypoint=["python3", "-c", script])
    assert run.exit_code == 0, run.stderr
    status = dict(line.split(":", 1) for line in run.stdout.splitlines() if ":" in line)
    assert status["Uid"].split() == ["10001"] * 4
    assert status["Gid"].split() == ["10001"] * 4


def test_image_has_no_shell(run_worker: Any) -> None:
    from docker.errors import APIError

    with pytest.raises(APIError, match="/bin/sh"):
        run_worker({}, entrypoint=["/bin/sh", "-c", "true"])


def test_json_log_mode_prints_only_json_lines(run_worker: Any) -> None:
    run = run_worker({**SHARD_ENV, "LOG_FORMAT": "json"})

    assert run.exit_code == 0, run.stdout + run.stderr
    records = [json.loads(line) for line in run.lines]
    assert records[-1]["event"] == "SUMMARY"
    assert records[-1]["summary"]["processed_count"] == 100
    assert {"timestamp", "level", "message"} <= set(records[0])
    assert _summary(run)["status"] == "completed"


def test_sigterm_during_a_run_gives_an_interrupted_summary_and_exit_143(run_worker: Any) -> None:
    def terminate_after_first_progress(container: Any) -> None:
        deadline = time.monotonic() + 60
        while b"PROGRESS" not in container.logs(stdout=True, stderr=False):
            assert time.monotonic() < deadline, "no PROGRESS line within 60 s"
            time.sleep(0.1)
        container.kill(signal="SIGTERM")

    env = {**SHARD_ENV, "TTG_TOTAL_PARAMS": "1000000", "TTG_BATCH_SIZE": "50"}
    run = run_worker(env, while_running=terminate_after_first_progress)

    assert run.exit_code == 143, run.stdout[-2000:] + run.stderr
    summary = _summary(run)
    assert summary["status"] == "interrupted"
    assert 0 < summary["processed_count"] < 333_333


def test_bad_setting_exits_2_and_names_it(run_worker: Any) -> None:
    run = run_worker({**SHARD_ENV, "LOG_LEVEL": "LOUD"})

    assert run.exit_code == 2
    message = run.stdout + run.stderr
    assert "LOG_LEVEL" in message
    assert "LOUD" in message
    assert "DEBUG, INFO, WARNING, ERROR" in message
    assert "Traceback" not in message


def test_read_only_root_filesystem_run_writes_only_to_the_mounted_output(
    run_worker: Any, tmp_path: Path
) -> None:
    output = _writable_dir(tmp_path / "output")

    run = run_worker(SHARD_ENV, volumes={str(output): "/output"}, **HARDENED)

    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert sorted(p.name for p in output.iterdir()) == [
        "results-00001.jsonl",
        "results-00001.meta.json",
    ]
    rows = [json.loads(line) for line in (output / "results-00001.jsonl").read_text().splitlines()]
    assert sorted(row["index"] for row in rows) == list(range(100, 200))
    assert all(row["error"] is None for row in rows)


def test_read_only_root_filesystem_without_an_output_mount_fails_clearly(run_worker: Any) -> None:
    run = run_worker(SHARD_ENV, **HARDENED)

    assert run.exit_code != 0
    assert "/output" in run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
