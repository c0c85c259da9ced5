"""`inv run` input validation: limits, empty spaces, run directories, failed launches."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ttg_ops.backends.base import Backend, WorkerState
from ttg_ops.errors import ConfigError, TTGError
from ttg_ops.runner import check_spec, run
from ttg_ops.spec import MAX_BATCH_SIZE, MAX_LOCAL_WORKERS, MAX_WORKERS, RunSpec

ROOT = Path(__file__).resolve().parents[1]


def _inv(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_workers_above_the_kubernetes_indexed_job_limit_are_refused() -> None:
    RunSpec(workers=MAX_WORKERS, params=MAX_WORKERS, run_id="max")
    with pytest.raises(ConfigError, match=r"workers must be from 1 to 100,000 .*got 99,999,999"):
        RunSpec(workers=99_999_999, run_id="huge")


def test_a_batch_size_above_the_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"batch size must be from 1 to 10,000,000"):
        RunSpec(batch_size=MAX_BATCH_SIZE + 1, run_id="big")


def test_an_empty_range_space_is_refused() -> None:
    with pytest.raises(ConfigError, match="params must be at least 1, got 0"):
        RunSpec(params=0, run_id="empty")


def test_local_runs_refuse_more_workers_than_parameters() -> None:
    check_spec(RunSpec(workers=10, params=10, run_id="even"), "process")
    with pytest.raises(ConfigError, match=r"--workers 50 is more than the 10 parameters.*1 to 10"):
        check_spec(RunSpec(workers=50, params=10, run_id="idle"), "process")


def test_local_runs_refuse_more_workers_than_one_machine_runs() -> None:
    spec = RunSpec(workers=MAX_LOCAL_WORKERS + 1, params=10**6, run_id="many")
    with pytest.raises(ConfigError, match=rf"allowed: 1 to {MAX_LOCAL_WORKERS}"):
        check_spec(spec, "docker")


@pytest.mark.parametrize(("name", "content"), [("p.jsonl", ""), ("p.csv", "a,b\n")])
def test_an_empty_space_file_is_refused_before_anything_starts(
    tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match="defines no parameters"):
        check_spec(RunSpec(workers=1, space=str(path), run_id="empty"), "process")


class _BrokenLaunch(Backend):
    """A backend whose launch fails before any worker starts."""

    name = "broken"

    def launch(self, spec: RunSpec, run_dir: Path) -> None:
        raise TTGError("the worker image is not there")

    def lines(self) -> Iterator[tuple[int, str]]:
        return iter(())

    def states(self) -> list[WorkerState]:
        return []

    def stop(self) -> None:
        pass


def test_a_failed_launch_leaves_no_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "nolaunch"
    with pytest.raises(TTGError, match="image is not there"):
        run(RunSpec(workers=1, params=5, run_id="nolaunch"), _BrokenLaunch(), run_dir)
    assert not run_dir.exists()


def test_an_uncreatable_run_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot create the run directory /proc/nope/x"):
        run(RunSpec(workers=1, params=5, run_id="x"), _BrokenLaunch(), Path("/proc/nope/x"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", "0"], "params must be at least 1"),
        (["--workers", "99999999"], "workers must be from 1 to 100,000"),
        (["--workers", "50", "--params", "10"], "--workers 50 is more than the 10 parameters"),
        (
            ["--workers", "1", "--batch-size", "99999999999999999999999"],
            "batch size must be from 1 to 10,000,000",
        ),
        (["--workers", "1", "--runs-dir", "/proc/nope"], "cannot create the run directory /proc/"),
    ],
)
def test_inv_run_refuses_bad_input_with_one_message(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = _inv("run", *args)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_params_may_be_zero_when_a_space_file_defines_the_parameters(tmp_path: Path) -> None:
    space = tmp_path / "grid.yaml"
    space.write_text("a: [1, 2]\n")
    check_spec(RunSpec(workers=2, params=0, space=str(space), run_id="grid"), "process")


def test_the_reserved_run_id_latest_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"run id 'latest' is reserved"):
        RunSpec(run_id="latest")


def test_inv_run_refuses_a_run_id_whose_directory_exists(tmp_path: Path) -> None:
    (tmp_path / "myrun").mkdir()
    (tmp_path / "myrun" / "results-00000.jsonl").write_text("")
    done = _inv(
        "run", "--run-id", "myrun", "--params", "10", "--workers", "1", "--task", "collatz",
        "--runs-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "run id 'myrun' is taken" in done.stderr
    assert "inv rerun --failed --run-id myrun" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert (tmp_path / "myrun" / "results-00000.jsonl").read_text() == ""


def test_inv_run_refuses_the_run_id_latest(tmp_path: Path) -> None:
    done = _inv("run", "--run-id", "latest", "--params", "10", "--runs-dir", str(tmp_path))
    assert done.returncode == 2
    assert "run id 'latest' is reserved" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_inv_run_notes_that_params_is_ignored_with_a_space_file(tmp_path: Path) -> None:
    space = tmp_path / "g.json"
    space.write_text('{"a": [1, 2]}')
    runs = tmp_path / "runs"
    done = _inv("run", "--space", str(space), "--params", "999", "--workers", "1",
                "--runs-dir", str(runs))  # fmt: skip
    assert done.returncode == 0, done.stderr
    note = f"Note: --params 999 is ignored: the space file {space} defines the parameters."
    assert note in done.stderr
    quiet = _inv("run", "--space", str(space), "--workers", "1", "--runs-dir", str(runs))
    assert quiet.returncode == 0, quiet.stderr
    assert "is ignored" not in quiet.stderr
