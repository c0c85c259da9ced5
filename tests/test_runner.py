"""The local main job with real worker processes: run, kill, interrupt, rerun, tasks."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from ttg_ops.backends.base import Backend
from ttg_ops.backends.process import ProcessBackend
from ttg_ops.errors import ConfigError
from ttg_ops.results import merge_results, parse_ranges
from ttg_ops.runner import LineHook, check_spec, make_backend, parse_task_options, rerun_failed, run
from ttg_ops.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def _console() -> Console:
    return Console(file=io.StringIO(), width=120)


def _results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_accounts_for_every_parameter_once(tmp_path: Path) -> None:
    spec = RunSpec(
        workers=3, params=3000, batch_size=250, task_options={"cost_ms": 0.2}, run_id="three"
    )
    report = run(spec, ProcessBackend(), tmp_path / spec.run_id, console=_console())

    assert report["status"] == "succeeded"
    agg = report["aggregate"]
    assert agg["total_parameters"] == 3000 and agg["processed"] == 3000
    assert agg["succeeded_indexes"] == [0, 1, 2]
    assert agg["missing_indexes"] == [] and agg["failed_indexes"] == []
    assert agg["total_processing_time"] > 0 and agg["load_imbalance"] >= 1.0

    for worker in report["workers"]:
        assert worker["name"] == f"ttg-three-{worker['index']}"
        assert worker["node"] == socket.gethostname()
        assert worker["exit_code"] == 0
        assert worker["summary"]["processed_count"] == 1000
        assert len(worker["batches"]) == 4  # 1000 parameters in batches of 250
        assert worker["batches"][-1]["processed"] == 1000
        assert worker["scheduling_delay"] >= 0
        assert worker["parse_errors"] == []

    results = report["results"]
    assert results["complete"] and results["unique"] == 3000 and results["duplicates"] == 0
    merged = _results(Path(results["merged_path"]))
    assert [r["index"] for r in merged] == list(range(3000))
    on_disk = json.loads((tmp_path / "three" / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert (tmp_path / "latest").resolve() == (tmp_path / "three").resolve()


def test_worker_sees_exactly_the_pod_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task module in the workers' working directory reports their environment.
    (tmp_path / "envprobe.py").write_text(
        "import os\n\ndef probe(param):\n    return dict(os.environ)\n"
    )
    monkeypatch.setenv("TTG_SHOULD_NOT_LEAK", "secret")
    spec = RunSpec(workers=2, params=4, task="envprobe:probe", run_id="env")
    report = run(spec, ProcessBackend(cwd=tmp_path), tmp_path / "runs" / "env", console=_console())
    assert report["status"] == "succeeded", report["workers"][0]["last_lines"]

    envs = {r["index"]: r["value"] for r in _results(Path(report["results"]["merged_path"]))}
    worker1 = envs[3]  # parameter 3 is in worker 1's shard
    assert "TTG_SHOULD_NOT_LEAK" not in worker1
    assert "VIRTUAL_ENV" not in worker1 and "PYTEST_CURRENT_TEST" not in worker1
    assert worker1["JOB_COMPLETION_INDEX"] == "1"
    assert worker1["POD_NAME"] == "ttg-env-1"
    assert worker1["NODE_NAME"] == socket.gethostname()
    assert worker1["TTG_OUTPUT_DIR"] == str((tmp_path / "runs" / "env" / "results").resolve())
    assert worker1["TTG_TOTAL_WORKERS"] == "2" and worker1["TTG_RUN_ID"] == "env"
    allowed = {
        "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE", "PYTHONUNBUFFERED", "PYTHONIOENCODING",
        "TTG_OUTPUT_DIR", "POD_NAME", "NODE_NAME", "LC_CTYPE",
    }  # fmt: skip
    unexpected = {k for k in worker1 if k not in allowed and not k.startswith("TTG_")}
    assert unexpected <= {"JOB_COMPLETION_INDEX", "LOG_LEVEL", "LOG_FORMAT"}


def _kill_after_first_progress(victim: int) -> LineHook:
    killed: list[int] = []

    def hook(backend: Backend, index: int, line: str) -> None:
        if index == victim and "PROGRESS" in line and not killed:
            assert isinstance(backend, ProcessBackend)
            backend.kill(index, signal.SIGKILL)
            killed.append(index)

    return hook


def test_killed_worker_is_missing_and_rerun_completes_the_results(tmp_path: Path) -> None:
    spec = RunSpec(
        workers=3, params=3000, batch_size=100, task_options={"cost_ms": 2}, run_id="kill"
    )
    report = run(
        spec,
        ProcessBackend(),
        tmp_path / "kill",
        console=_console(),
        on_line=_kill_after_first_progress(1),
    )
    assert report["status"] == "failed"
    victim = report["workers"][1]
    assert victim["state"] == "missing"
    assert victim["exit_code"] == -signal.SIGKILL
    assert victim["summary"] is None
    assert any("PROGRESS" in line for line in victim["last_lines"])
    assert report["aggregate"]["missing_indexes"] == [1]
    assert report["aggregate"]["succeeded_indexes"] == [0, 2]
    results = report["results"]
    assert not results["complete"] and results["missing_count"] > 0
    # Only worker 1's shard (1000:2000) has holes, and it kept its first batch.
    holes = parse_ranges(results["missing_ranges"])
    assert all(start >= 1100 and end <= 2000 for start, end in holes)
    missing_before = results["missing_count"]

    follow_up, merge = rerun_failed(tmp_path / "kill", ProcessBackend(), console=_console())
    assert follow_up is not None
    assert follow_up["spec"]["parent_run_id"] == "kill"
    assert follow_up["spec"]["only"] == results["missing_ranges"]
    assert follow_up["aggregate"]["total_parameters"] == missing_before
    assert follow_up["status"] == "succeeded"
    assert merge.ok and merge.runs == ["kill", "kill-r1"]
    merged = _results(merge.merged_path)
    assert [r["index"] for r in merged] == list(range(3000))
    root = json.loads((tmp_path / "kill" / "report.json").read_text())
    assert root["results"]["complete"] and root["results"]["runs"] == ["kill", "kill-r1"]

    again, final = rerun_failed(tmp_path / "kill-r1", ProcessBackend(), console=_console())
    assert again is None and final.ok


def test_rerun_replaces_errored_results(tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=200, batch_size=50, task_options={"cost_ms": 0}, run_id="err")
    run(spec, ProcessBackend(), tmp_path / "err", console=_console())
    shard = tmp_path / "err" / "results" / "results-00000.jsonl"
    records = _results(shard)
    records[7]["value"], records[7]["error"] = None, "ValueError: injected"
    shard.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert merge_results(tmp_path / "err").error_ranges == [(7, 8)]

    follow_up, merge = rerun_failed(tmp_path / "err", ProcessBackend(), console=_console())
    assert follow_up is not None and follow_up["spec"]["only"] == "7:8"
    assert follow_up["spec"]["workers"] == 1
    assert merge.ok and merge.replaced == 1
    assert _results(merge.merged_path)[7]["error"] is None


def test_interrupt_stops_workers_and_still_writes_the_report(tmp_path: Path) -> None:
    progressed: set[int] = set()

    def interrupt(backend: Backend, index: int, line: str) -> None:
        # Once both workers are computing (their signal handlers are in place), press Ctrl-C.
        if "PROGRESS" in line:
            progressed.add(index)
        if progressed == {0, 1}:
            raise KeyboardInterrupt

    spec = RunSpec(
        workers=2, params=4000, batch_size=100, task_options={"cost_ms": 1}, run_id="stop"
    )
    report = run(spec, ProcessBackend(), tmp_path / "stop", console=_console(), on_line=interrupt)
    assert report["status"] == "interrupted"
    for worker in report["workers"]:
        assert worker["exit_code"] == 128 + signal.SIGTERM
        assert worker["summary"]["status"] == "interrupted"
        assert worker["state"] == "failed"
        assert worker["summary"]["processed_count"] < 2000
    assert (tmp_path / "stop" / "report.json").exists()
    assert report["results"]["missing_count"] > 0


def test_logs_flag_prefixes_worker_lines(tmp_path: Path) -> None:
    console = _console()
    spec = RunSpec(workers=2, params=20, batch_size=10, run_id="logs")
    run(spec, ProcessBackend(), tmp_path / "logs", console=console, show_logs=True)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "[worker-0] " in output and "[worker-1] " in output
    assert "PROGRESS: 10/10" in output
    # Not a terminal: plain status lines instead of a live display.
    assert "overall 20/20 (100.0%)" in output


def test_flags_are_validated_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match="not one of process, docker"):
        make_backend("podman")
    with pytest.raises(ConfigError, match="JSON object"):
        parse_task_options("[1, 2]")
    with pytest.raises(ConfigError, match="not JSON"):
        parse_task_options("{cost_ms: 2}")
    with pytest.raises(ConfigError, match=r"^--task-options .*cost"):
        check_spec(RunSpec(task_options={"cost": 2}, run_id="bad"), "process")
    with pytest.raises(ConfigError, match=r"^--task 'no_such_task' is not a built-in task"):
        check_spec(RunSpec(task="no_such_task", run_id="bad"), "process")
    with pytest.raises(ConfigError, match=r"^--space '/no/such\.csv': cannot read"):
        check_spec(RunSpec(space="/no/such.csv", run_id="bad"), "process")
    # Docker and pods see their own file system: a path there is not checked here.
    check_spec(RunSpec(space="/no/such.csv", run_id="bad"), "docker")


def _inv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_inv_run_report_results_end_to_end(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    done = _inv(
        "run", "--workers", "2", "--params", "400", "--batch-size", "100",
        "--task-options", '{"cost_ms": 0.1}', "--run-id", "cli", "--runs-dir", runs,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Performance Metrics" in done.stdout and "Total Throughput" in done.stdout
    assert "Run cli succeeded." in done.stdout
    assert "\x1b[" not in done.stdout  # NO_COLOR and not a terminal: plain text

    shown = _inv("report", "--runs-dir", runs)
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "runs" / "cli" / "report.png").stat().st_size > 10_000
    assert "data:image/png;base64," in (tmp_path / "runs" / "cli" / "report.html").read_text()

    checked = _inv("results", "--run-id", "cli", "--runs-dir", runs)
    assert checked.returncode == 0, checked.stderr
    assert "exactly one result" in checked.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--backend", "podman"), "backend 'podman' is not one of process, docker"),
        (("--task-options", "[1]"), "task options must be a JSON object"),
        (("--log-format", "xml"), "log format 'xml' is not one of text, json"),
        (("--workers", "0"), "workers must be from 1 to 100,000"),
        (("--run-id", "Bad_Id"), "run id 'Bad_Id' must be lowercase"),
        (("--params", "lots"), "--params must be a whole number such as 3, got 'lots'"),
        (("--failure-threshold", "x"), "--failure-threshold must be a number from 0 to 1"),
        (("--failure-threshold", "2"), "failure threshold must be a fraction from 0 to 1"),
        (("--task", "nope"), "nope"),
    ],
    ids=[
        "backend",
        "task-options",
        "log-format",
        "workers",
        "run-id",
        "params-text",
        "threshold-text",
        "threshold-range",
        "task",
    ],
)
def test_inv_run_rejects_bad_flags_without_a_traceback(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = _inv("run", *args, "--runs-dir", str(tmp_path))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_inv_rerun_requires_failed_and_reports_a_complete_run(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    assert _inv("rerun", "--runs-dir", runs).returncode == 2
    missing = _inv("rerun", "--failed", "--runs-dir", runs)
    assert missing.returncode == 2 and "no latest run" in missing.stderr
    _inv("run", "--workers", "1", "--params", "10", "--run-id", "tiny", "--runs-dir", runs)
    done = _inv("rerun", "--failed", "--runs-dir", runs)
    assert done.returncode == 0, done.stderr
    assert "nothing to rerun" in done.stdout


def test_json_log_format_is_followed_and_reported(tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=400, batch_size=100, log_format="json", run_id="json")
    console = _console()
    report = run(spec, ProcessBackend(), tmp_path / "json", console=console)
    assert report["status"] == "succeeded"
    for worker in report["workers"]:
        assert worker["summary"]["status"] == "completed"
        assert [b["processed"] for b in worker["batches"]] == [100, 200]
        assert all(b["end"] is not None for b in worker["batches"])
        assert worker["parse_errors"] == []
    assert "overall 400/400 (100.0%)" in console.file.getvalue()  # type: ignore[attr-defined]


def test_failed_parameters_fail_the_worker_and_the_run(tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=40, task="flaky", run_id="flaky")
    report = run(spec, ProcessBackend(), tmp_path / "flaky", console=_console())
    assert report["status"] == "failed"
    assert report["aggregate"]["failed_indexes"] == [0, 1]
    assert report["aggregate"]["failed_params"] == 4  # 0, 10, 20 and 30
    assert report["results"]["complete"] and report["results"]["error_ranges"] == (
        "0:1,10:11,20:21,30:31"
    )


@pytest.mark.slow
def test_inv_run_exits_1_and_names_the_rerun_when_workers_fail(tmp_path: Path) -> None:
    done = _inv(
        "run", "--workers", "2", "--params", "20", "--task", "flaky",
        "--run-id", "bad", "--runs-dir", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1
    assert "run bad failed: failed workers [0, 1]" in done.stderr
    assert "inv rerun --failed --run-id bad" in done.stderr
    assert "Traceback" not in done.stderr


def test_stop_kills_a_worker_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(60)\n"
    )
    backend = ProcessBackend(command=[sys.executable, "-c", stubborn], stop_grace=0.5)
    backend.launch(RunSpec(workers=2, params=2, run_id="stubborn"), tmp_path)
    seen = {index for index, _ in itertools.islice(backend.lines(), 2)}
    assert seen == {0, 1}
    started = time.monotonic()
    backend.stop()
    assert time.monotonic() - started < 5
    states = backend.states()
    assert [s.exit_code for s in states] == [-signal.SIGKILL, -signal.SIGKILL]
    assert [s.state for s in states] == ["failed", "failed"]
    assert states[0].message == "killed by signal SIGKILL"
    assert states[0].last_lines == ["ignoring SIGTERM"]
    assert list(backend.lines()) == []


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_ctrl_c_during_start_up_still_stops_the_workers_and_writes_the_report(
    tmp_path: Path, delay: float
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(NO_COLOR="1", COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "run", "--workers", "2", "--params", "20000",
         "--runs-dir", str(tmp_path), "--run-id", "early"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run_dir = tmp_path / "early"
    deadline = time.monotonic() + 60
    while not run_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert run_dir.exists(), "inv run did not create its run directory within 60 s"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "Run early was interrupted; the report is written." in err, out + err
    report = json.loads((run_dir / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert "Traceback" not in out + err


def test_a_worker_that_prints_nothing_is_reported_plainly(tmp_path: Path) -> None:
    from ttg_ops.report import print_report

    spec = RunSpec(workers=3, params=3, run_id="silent")
    code = (
        "import os, sys\n"
        "index = int(os.environ['JOB_COMPLETION_INDEX'])\n"
        "if index == 2:\n"
        "    print('boom', flush=True)\n"
        "sys.exit(index)"
    )
    command = [sys.executable, "-c", code]
    report = run(spec, ProcessBackend(command=command), tmp_path / "silent", console=_console())
    out = io.StringIO()
    print_report(report, Console(file=out, width=300))
    text = out.getvalue()
    assert (
        "worker 0 (ttg-silent-0) is missing (exit code 0); it printed nothing and no summary."
        in text
    )
    assert (
        "worker 1 (ttg-silent-1) is missing (exit code 1); it printed nothing and no summary."
        in text
    )
    assert "worker 2 (ttg-silent-2) is missing (exit code 2); last lines:\n  boom" in text
    assert "exited with code" not in text
