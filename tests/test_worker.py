"""The ttg-worker end to end: real subprocesses, real signals, real files."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ttg_logging.grammar import find_summary, parse_line, parse_lines
from ttg_worker.config import SETTINGS

SEED_KEYS = {
    "worker_id",
    "status",
    "version",
    "hostname",
    "pod_name",
    "node_name",
    "range_start",
    "range_end",
    "processed_count",
    "duration_seconds",
    "params_per_second",
    "batch_stats",
}
EXTRA_KEYS = {
    "run_id",
    "task",
    "failed_count",
    "resumed_failed_count",
    "skipped_count",
    "total_params",
    "space_size",
    "started_at",
    "finished_at",
    "results_path",
    "exit_code",
}
BATCH_KEYS = {"total_batches", "avg_batch_time", "min_batch_time", "max_batch_time"}
SEED_LINE = re.compile(
    r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\] \[(?:DEBUG|INFO |WARNING|ERROR)\] "
    r"\[WORKER-\d+\] \[[^\]]{12}\] .*$"
)
JSON_KEYS = {"timestamp", "level", "worker_id", "module", "message"}


def _collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def worker_env(out: Path, **settings: Any) -> dict[str, str]:
    """A clean environment for one worker: nothing inherited from the caller's TTG settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TTG_", "LOG_", "JOB_COMPLETION_INDEX", "POD_NAME", "NODE_NAME"))
    }
    env.pop("PYTHONUNBUFFERED", None)  # lines must arrive live without it
    env.update({"TTG_OUTPUT_DIR": str(out), "JOB_COMPLETION_INDEX": "0"})
    for key, value in settings.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_worker(
    out: Path, *args: str, timeout: float = 120, **settings: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ttg_worker", *args],
        env=worker_env(out, **settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def results(out: Path, index: int = 0) -> list[dict[str, Any]]:
    path = out / f"results-{index:05d}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def summary_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = proc.stdout.splitlines()
    assert lines, proc.stderr
    parsed = parse_line(lines[-1])
    assert parsed is not None and parsed.kind == "summary", lines[-1]
    return parsed.fields


def test_a_worker_computes_its_shard_and_prints_the_summary_last(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_worker(
        out,
        JOB_COMPLETION_INDEX="1",
        TTG_TOTAL_WORKERS="3",
        TTG_TOTAL_PARAMS="1000",
        TTG_TASK="collatz",
        TTG_BATCH_SIZE="100",
        TTG_RUN_ID="run-1",
        POD_NAME="ttg-computation-1-abcde",
        NODE_NAME="ttg-cluster-worker3",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""

    summary = summary_of(proc)
    assert summary.keys() == SEED_KEYS | EXTRA_KEYS
    assert summary["batch_stats"].keys() == BATCH_KEYS
    assert summary["status"] == "completed"
    assert (summary["range_start"], summary["range_end"]) == (333, 666)
    assert summary["processed_count"] == 333
    assert summary["batch_stats"]["total_batches"] == 4
    assert summary["pod_name"] == "ttg-computation-1-abcde"
    assert summary["node_name"] == "ttg-cluster-worker3"
    assert summary["run_id"] == "run-1"
    assert summary["version"] == "1.1.0"
    assert (summary["failed_count"], summary["skipped_count"], summary["exit_code"]) == (0, 0, 0)
    assert summary["total_params"] == 1000
    assert summary["results_path"] == str((out / "results-00001.jsonl").resolve())

    rows = results(out, 1)
    assert [row["index"] for row in rows] == list(range(333, 666))
    assert all(row["value"] == _collatz_steps(row["index"] + 1) for row in rows)
    assert all(row["error"] is None and row["params"] == row["index"] for row in rows)

    lines = proc.stdout.splitlines()
    for line in lines[:-1]:
        assert SEED_LINE.match(line), line
    assert "TTG Distributed Worker v1.1.0" in lines[1]
    assert lines[3].endswith("] Hostname: " + summary["hostname"])
    events = parse_lines(lines)
    names = [e.name for e in events if e.kind in ("lifecycle", "progress")]
    assert names == ["STARTING", "INITIALIZED", "RUNNING", *["PROGRESS"] * 4, "COMPLETED"]
    progress = [e.fields for e in events if e.kind == "progress"]
    assert [(p["processed"], p["total"]) for p in progress] == [
        (100, 333),
        (200, 333),
        (300, 333),
        (333, 333),
    ]
    metrics = {e.name: e.fields for e in events if e.kind == "metric"}
    assert metrics.keys() == {
        "processed_count",
        "failed_count",
        "duration",
        "throughput",
        "avg_batch_time",
    }
    assert metrics["processed_count"] == {"value": 333, "unit": "params"}
    assert metrics["throughput"]["unit"] == "params/sec"


def test_every_json_line_parses_and_carries_the_documented_keys(tmp_path: Path) -> None:
    proc = run_worker(
        tmp_path / "out",
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        TTG_TOTAL_PARAMS="50",
        TTG_TASK="flaky",
        TTG_TASK_OPTIONS={"every": 7},
        TTG_FAILURE_THRESHOLD="0.5",
        TTG_BATCH_SIZE="20",
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    for record in records:
        assert record.keys() >= JSON_KEYS, record
        assert record["worker_id"] == 0
        assert record["timestamp"].endswith("Z")
    kinds = [r.get("event") or r.get("metric") or "log" for r in records]
    assert kinds[-1] == "SUMMARY"
    assert kinds.count("PROGRESS") == 3
    assert {"STARTING", "INITIALIZED", "RUNNING", "COMPLETED", "throughput"} <= set(kinds)
    assert records[-1]["summary"]["failed_count"] == 8
    assert any(
        r["level"] == "WARNING" and "within the failure threshold" in r["message"] for r in records
    )
    assert find_summary(proc.stdout.splitlines()) == records[-1]["summary"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_summary_is_printed_even_when_the_level_hides_info(tmp_path: Path, fmt: str) -> None:
    proc = run_worker(tmp_path / "out", TTG_TOTAL_PARAMS="10", LOG_LEVEL="ERROR", LOG_FORMAT=fmt)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    assert summary_of(proc)["processed_count"] == 10


def test_log_timestamps_are_utc_whatever_the_local_zone(tmp_path: Path) -> None:
    proc = run_worker(
        tmp_path / "out", TTG_TOTAL_PARAMS="1", TTG_TASK="noop", TZ="America/New_York"
    )
    first = proc.stdout.splitlines()[0][1:24]
    stamp = datetime.strptime(first, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"LOG_LEVEL": "LOUD"}, ["LOG_LEVEL='LOUD'", "DEBUG, INFO, WARNING, ERROR"]),
        ({"LOG_FORMAT": "xml"}, ["LOG_FORMAT='xml'", "text, json"]),
        ({"TTG_TOTAL_WORKERS": "0"}, ["TTG_TOTAL_WORKERS='0'", "integer >= 1"]),
        ({"TTG_TOTAL_WORKERS": "three"}, ["TTG_TOTAL_WORKERS='three'", "integer >= 1"]),
        (
            {"TTG_TOTAL_WORKERS": "3", "JOB_COMPLETION_INDEX": "5"},
            ["JOB_COMPLETION_INDEX=5", "0..2"],
        ),
        ({"JOB_COMPLETION_INDEX": None}, ["JOB_COMPLETION_INDEX is not set", "--worker-id"]),
        ({"TTG_TOTAL_PARAMS": "-5"}, ["TTG_TOTAL_PARAMS='-5'", "integer >= 1"]),
        ({"TTG_TOTAL_PARAMS": "0"}, ["TTG_TOTAL_PARAMS='0'", "integer >= 1"]),
        ({"TTG_BATCH_SIZE": "0"}, ["TTG_BATCH_SIZE='0'", "integer from 1 to 10,000,000"]),
        (
            {"TTG_BATCH_SIZE": "99999999999999999999999"},
            ["TTG_BATCH_SIZE='99999999999999999999999' is too large", "from 1 to 10,000,000"],
        ),
        ({"TTG_TASK": "nope"}, ["TTG_TASK='nope'", "simulate, noop, collatz"]),
        ({"TTG_TASK": "no_such_mod:run"}, ["cannot import module 'no_such_mod'"]),
        ({"TTG_TASK_OPTIONS": "{bad"}, ["TTG_TASK_OPTIONS='{bad'", "JSON object"]),
        ({"TTG_TASK_OPTIONS": "[1]"}, ["TTG_TASK_OPTIONS='[1]'", "JSON object"]),
        ({"TTG_TASK_OPTIONS": '{"speed": 1}'}, ["accepted options: cost_ms"]),
        ({"TTG_SPACE": "/nonexistent/grid.yaml"}, ["TTG_SPACE='/nonexistent/grid.yaml'"]),
        ({"TTG_ONLY": "1-5"}, ["TTG_ONLY='1-5'", "half-open ranges"]),
        ({"TTG_ONLY": "0:20000"}, ["TTG_ONLY='0:20000'", "10000 parameters"]),
        ({"TTG_FAILURE_THRESHOLD": "2"}, ["TTG_FAILURE_THRESHOLD='2'", "fraction from 0 to 1"]),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else ""
    ),
)
def test_bad_settings_exit_2_with_a_message_and_no_traceback(
    tmp_path: Path, settings: dict[str, str | None], named: list[str]
) -> None:
    proc = run_worker(tmp_path / "out", **settings)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("ttg-worker: error: ")
    for text in named:
        assert text in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert find_summary(proc.stdout.splitlines()) is None


def test_an_unknown_flag_exits_2_with_usage(tmp_path: Path) -> None:
    proc = run_worker(tmp_path / "out", "--no-such-flag")
    assert proc.returncode == 2
    assert "usage: ttg-worker" in proc.stderr


def test_flags_override_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "flags"
    proc = run_worker(
        tmp_path / "env",
        "--worker-id=1",
        "--workers=2",
        "--params=10",
        "--task=collatz",
        '--task-options={"start": 100}',
        f"--output-dir={out}",
        "--log-format=json",
        "--batch-size=2",
        "--only=0:6",
        JOB_COMPLETION_INDEX="0",
        TTG_TOTAL_WORKERS="7",
        TTG_TOTAL_PARAMS="1000",
        LOG_FORMAT="text",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])["summary"]
    assert (summary["worker_id"], summary["range_start"], summary["range_end"]) == (1, 3, 6)
    assert [row["value"] for row in results(out, 1)] == [_collatz_steps(n) for n in (103, 104, 105)]
    assert not (tmp_path / "env").exists()


def test_list_tasks_prints_the_builtins(tmp_path: Path) -> None:
    proc = run_worker(tmp_path / "out", "--list-tasks")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"simulate", "noop", "collatz", "is_prime", "monte_carlo_pi", "flaky"} <= set(names)


def test_the_console_script_runs_the_worker(tmp_path: Path) -> None:
    script = shutil.which("ttg-worker", path=str(Path(sys.executable).parent))
    assert script, "the ttg-worker console script is not installed in the environment"
    proc = subprocess.run(
        [script, "--params=3", "--task=noop"],
        env=worker_env(tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert summary_of(proc)["processed_count"] == 3


def test_a_raising_task_is_recorded_and_fails_the_worker_over_the_threshold(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    proc = run_worker(out, TTG_TOTAL_PARAMS="100", TTG_TASK="flaky", TTG_BATCH_SIZE="30")
    assert proc.returncode == 1, proc.stderr
    summary = summary_of(proc)
    assert (summary["status"], summary["failed_count"], summary["exit_code"]) == ("failed", 10, 1)
    assert summary["processed_count"] == 100
    events = parse_lines(proc.stdout.splitlines())
    failed = [e for e in events if e.name == "FAILED"]
    assert len(failed) == 1 and "10 of 100 parameters failed" in failed[0].fields["message"]

    rows = results(out)
    assert len(rows) == 100
    errors = {row["index"]: row["error"] for row in rows if row["error"]}
    assert sorted(errors) == list(range(0, 100, 10))
    assert errors[20] == "ValueError: parameter 20 is a multiple of 10"
    assert all(row["value"] is None for row in rows if row["error"])
    assert rows[3]["value"] == 9


def test_a_retried_failed_worker_fails_again_counting_the_errors_it_resumes(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    settings = {"TTG_TOTAL_PARAMS": "30", "TTG_TASK_OPTIONS": '{"cost_ms": "x"}'}
    first = run_worker(out, **settings)
    assert first.returncode == 1, first.stderr
    assert summary_of(first)["failed_count"] == 30

    retry = run_worker(out, **settings)
    assert retry.returncode == 1, retry.stdout + retry.stderr
    summary = summary_of(retry)
    assert (summary["status"], summary["exit_code"]) == ("failed", 1)
    assert (summary["skipped_count"], summary["processed_count"]) == (30, 0)
    assert (summary["failed_count"], summary["resumed_failed_count"]) == (30, 30)
    failed = [e for e in parse_lines(retry.stdout.splitlines()) if e.name == "FAILED"]
    assert (
        "30 of 30 parameters failed (30 recorded by an earlier attempt)"
        in (failed[0].fields["message"])
    )
    assert len(results(out)) == 30  # nothing recomputed, nothing duplicated


def test_a_closed_stdout_ends_the_worker_quietly_with_141(tmp_path: Path) -> None:
    env = worker_env(tmp_path / "out", TTG_TOTAL_PARAMS="3000", TTG_TASK="noop")
    proc = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m ttg_worker | head -1; echo "rc=${{PIPESTATUS[0]}}"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.splitlines()[-1] == "rc=141", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr
    assert proc.stderr == ""


def test_failures_within_the_threshold_complete(tmp_path: Path) -> None:
    proc = run_worker(
        tmp_path / "out", TTG_TOTAL_PARAMS="100", TTG_TASK="flaky", TTG_FAILURE_THRESHOLD="0.1"
    )
    assert proc.returncode == 0, proc.stderr
    assert summary_of(proc)["status"] == "completed"
    assert summary_of(proc)["failed_count"] == 10


def test_a_user_task_gets_dict_parameters_and_options(tmp_path: Path) -> None:
    (tmp_path / "usertask.py").write_text(
        "def score(params, scale=1):\n"
        "    if params['x'] == 3:\n"
        "        raise ZeroDivisionError('x=3 is not allowed')\n"
        "    return {'y': params['x'] * scale, 'obj': None}\n"
        "\n"
        "def unserialisable(params):\n"
        "    return object()\n"
    )
    space = tmp_path / "space.jsonl"
    space.write_text("".join(json.dumps({"x": x}) + "\n" for x in range(5)))
    out = tmp_path / "out"
    proc = run_worker(
        out,
        PYTHONPATH=str(tmp_path),
        TTG_SPACE=str(space),
        TTG_TASK="usertask:score",
        TTG_TASK_OPTIONS={"scale": 10},
        TTG_FAILURE_THRESHOLD="0.5",
    )
    assert proc.returncode == 0, proc.stderr
    rows = results(out)
    assert [row["value"] for row in rows] == [
        {"y": 0, "obj": None},
        {"y": 10, "obj": None},
        {"y": 20, "obj": None},
        None,
        {"y": 40, "obj": None},
    ]
    assert rows[3]["error"] == "ZeroDivisionError: x=3 is not allowed"

    bad = run_worker(
        tmp_path / "out2",
        PYTHONPATH=str(tmp_path),
        TTG_SPACE=str(space),
        TTG_TASK="usertask:unserialisable",
    )
    assert bad.returncode == 1
    assert summary_of(bad)["failed_count"] == 5
    assert all("not JSON data" in row["error"] for row in results(tmp_path / "out2"))


def test_a_task_module_that_fails_to_import_names_the_error(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import json\nraise RuntimeError('half-written module')\n")
    proc = run_worker(tmp_path / "out", PYTHONPATH=str(tmp_path), TTG_TASK="broken:run")
    assert proc.returncode == 2
    assert "cannot import module 'broken' (RuntimeError: half-written module)" in proc.stderr


def test_more_workers_than_parameters_gives_an_empty_completed_shard(tmp_path: Path) -> None:
    proc = run_worker(
        tmp_path / "out", JOB_COMPLETION_INDEX="3", TTG_TOTAL_WORKERS="5", TTG_TOTAL_PARAMS="2"
    )
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc)
    assert (summary["status"], summary["processed_count"]) == ("completed", 0)
    assert summary["range_start"] == summary["range_end"] == 1
    assert summary["batch_stats"]["total_batches"] == 0


def test_a_torn_last_line_is_discarded_and_nothing_is_duplicated(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    shard = out / "results-00000.jsonl"
    good = [json.dumps({"index": i, "params": i, "value": 1, "error": None}) for i in range(5)]
    shard.write_text("\n".join(good) + '\n{"index": 5, "params": 5, "va')

    proc = run_worker(out, TTG_TOTAL_PARAMS="12", TTG_TASK="is_prime", TTG_BATCH_SIZE="4")
    assert proc.returncode == 0, proc.stderr
    summary = summary_of(proc)
    assert (summary["skipped_count"], summary["processed_count"]) == (5, 7)
    assert "Discarded a torn last line" in proc.stdout
    rows = results(out)
    assert [row["index"] for row in rows] == list(range(12))
    assert rows[5]["value"] is True and rows[4]["value"] == 1


def test_a_write_failure_is_an_unexpected_error_with_a_failed_summary(tmp_path: Path) -> None:
    def small_files() -> None:
        # Files may not grow beyond 2 KB; the write fails with EFBIG instead of a signal.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = subprocess.run(
        [sys.executable, "-m", "ttg_worker"],
        env=worker_env(tmp_path / "out", TTG_TOTAL_PARAMS="1000", TTG_TASK="noop"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=small_files,
    )
    assert proc.returncode == 1, proc.stderr
    summary = summary_of(proc)
    assert (summary["status"], summary["exit_code"]) == ("failed", 1)
    failed = [e for e in parse_lines(proc.stdout.splitlines()) if e.name == "FAILED"]
    assert failed and "File too large" in failed[0].fields["message"]


def _start(out: Path, **settings: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ttg_worker"],
        env=worker_env(out, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(
    proc: subprocess.Popen[str], accept: Callable[[str], bool], timeout: float
) -> list[str]:
    """Read stdout lines until one is accepted; fail naming what was awaited."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if accept(line):
            return seen
    pytest.fail(f"no accepted line within {timeout}s; last lines: {seen[-5:]}")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_gracefully_and_a_restart_resumes(
    tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "out"
    settings = {
        "TTG_TOTAL_PARAMS": "3000",
        "TTG_TASK": "simulate",
        "TTG_TASK_OPTIONS": {"cost_ms": 1.0},
        "TTG_BATCH_SIZE": "100",
        "JOB_COMPLETION_INDEX": "1",
        "TTG_TOTAL_WORKERS": "2",
    }
    proc = _start(out, **settings)
    _wait_for(proc, lambda line: "PROGRESS: 200/" in line, timeout=60)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr

    lines = stdout.splitlines()
    summary = summary_of(subprocess.CompletedProcess([], code, stdout, stderr))
    assert (summary["status"], summary["exit_code"]) == ("interrupted", code)
    assert any(e.name == "INTERRUPTED" for e in parse_lines(lines))
    first = results(out, 1)
    assert len(first) == summary["processed_count"]
    assert 200 <= len(first) < 1500

    again = run_worker(out, **settings)
    assert again.returncode == 0, again.stderr
    resumed = summary_of(again)
    assert resumed["skipped_count"] == len(first)
    assert resumed["processed_count"] == 1500 - len(first)
    indexes = [row["index"] for row in results(out, 1)]
    assert sorted(indexes) == list(range(1500, 3000))
    assert len(indexes) == len(set(indexes))


def test_a_bad_flag_value_is_named_by_its_flag(tmp_path: Path) -> None:
    proc = run_worker(tmp_path / "out", "--log-level=LOUD", LOG_LEVEL="INFO")
    assert proc.returncode == 2
    assert "--log-level='LOUD' is not a log level; allowed: DEBUG, INFO" in proc.stderr


def test_the_worker_docs_list_every_setting_and_flag() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "WORKER.md").read_text()
    for _, env, flag, _, _ in SETTINGS:
        assert f"| `{env}` | `{flag}` |" in docs, (env, flag)
    architecture = (Path(__file__).parents[1] / "docs" / "ARCHITECTURE.md").read_text()
    contract = set(re.findall(r"^\| `([A-Z_]+)`", architecture, flags=re.MULTILINE))
    assert contract - {"POD_NAME"} <= {env for _, env, _, _, _ in SETTINGS}


def test_total_params_of_zero_is_ignored_with_a_space_file(tmp_path: Path) -> None:
    space = tmp_path / "grid.yaml"
    space.write_text("a: [1, 2, 3]\n")
    proc = run_worker(tmp_path / "out", TTG_TOTAL_PARAMS="0", TTG_SPACE=str(space), TTG_TASK="noop")
    assert proc.returncode == 0, proc.stderr
    assert summary_of(proc)["processed_count"] == 3


def test_a_shard_written_for_another_task_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_worker(out, TTG_TOTAL_PARAMS="10")
    assert first.returncode == 0, first.stderr
    before = (out / "results-00000.jsonl").read_text()
    meta = json.loads((out / "results-00000.meta.json").read_text())
    assert (meta["task"], meta["total_params"], meta["index"]) == ("simulate", 10, 0)

    other = run_worker(out, TTG_TOTAL_PARAMS="10", TTG_TASK="collatz")
    assert other.returncode == 2, other.stdout + other.stderr
    assert "different settings" in other.stderr
    assert 'task: shard has "simulate", this worker "collatz"' in other.stderr
    assert "Traceback" not in other.stderr
    assert (out / "results-00000.jsonl").read_text() == before


def test_a_shard_written_from_another_space_file_is_not_resumed(tmp_path: Path) -> None:
    out, space = tmp_path / "out", tmp_path / "grid.yaml"
    space.write_text("a: [1, 2, 3]\n")
    assert run_worker(out, TTG_SPACE=str(space)).returncode == 0
    space.write_text("a: [4, 5, 6]\n")
    again = run_worker(out, TTG_SPACE=str(space))
    assert again.returncode == 2, again.stdout + again.stderr
    assert "space_digest" in again.stderr


def test_the_same_settings_resume_the_shard(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_worker(out, TTG_TOTAL_PARAMS="10", TTG_TASK="collatz").returncode == 0
    again = run_worker(out, TTG_TOTAL_PARAMS="10", TTG_TASK="collatz")
    assert again.returncode == 0, again.stderr
    assert summary_of(again)["skipped_count"] == 10
