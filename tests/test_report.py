"""The one report shape: parsing worker lines, reconciling states, aggregate, schema, tables."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from ttg_logging.grammar import parse_line
from ttg_ops.backends.base import FAILED, SUCCEEDED, WorkerState
from ttg_ops.backends.process import ProcessBackend
from ttg_ops.errors import ConfigError
from ttg_ops.report import (
    build_report,
    load_report,
    mark_latest,
    metrics_rows,
    parse_worker_lines,
    print_report,
    report_needs,
    resolve_run_dir,
    worker_rows,
    write_report,
)
from ttg_ops.runner import run
from ttg_ops.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "schemas" / "report.schema.json").read_text())
STAMP = "[2026-01-27 05:16:19.993] [INFO ] [WORKER-{i}] [main        ] "


def _summary(index: int, start: int, end: int, duration: float, status: str = "completed") -> dict:
    return {
        "worker_id": index,
        "status": status,
        "version": "1.1.0",
        "range_start": start,
        "range_end": end,
        "processed_count": end - start,
        "failed_count": 0,
        "duration_seconds": duration,
        "params_per_second": round((end - start) / duration, 2),
        "batch_stats": {
            "total_batches": 2,
            "avg_batch_time": duration / 2,
            "min_batch_time": duration / 2,
            "max_batch_time": duration / 2,
        },
        "total_params": 100,
    }


def _progress(index: int, done: int, total: int) -> str:
    return (
        STAMP.format(i=index)
        + f"📊 PROGRESS: {done}/{total} ({100 * done / total:.1f}%) batch_time=0.50s "
        "rate=100.00 params/s"
    )


def _state(index: int, start: float, end: float, code: int = 0) -> WorkerState:
    return WorkerState(
        index=index,
        state=SUCCEEDED if code == 0 else FAILED,
        name=f"ttg-rep-{index}",
        node="node-a",
        exit_code=code,
        created_at=start - 0.25,
        started_at=start,
        finished_at=end,
    )


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A report written by a real two-worker run."""
    runs = tmp_path_factory.mktemp("runs")
    spec = RunSpec(workers=2, params=300, batch_size=100, run_id="real")
    console = Console(file=io.StringIO())
    return run(spec, ProcessBackend(), runs / "real", console=console)


def test_real_report_validates_against_the_schema(real_report: dict) -> None:
    jsonschema.validate(real_report, SCHEMA)


def test_schema_rejects_a_report_with_a_bad_status(real_report: dict) -> None:
    broken = json.loads(json.dumps(real_report))
    broken["status"] = "done"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    del broken["status"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_every_documented_key_is_in_the_schema() -> None:
    doc = (ROOT / "docs" / "REPORT.md").read_text()
    keys = set(SCHEMA["properties"])
    for name in ("worker", "aggregate", "results"):
        keys |= set(SCHEMA["$defs"][name]["properties"])
    missing = sorted(key for key in keys if f"`{key}`" not in doc)
    assert missing == []


def test_summary_alterations_are_read_or_reported_never_fatal() -> None:
    summary = _summary(0, 0, 50, 1.0)
    lines = [
        "b'" + STAMP.format(i=0) + "🚀 STARTING: worker 0'",
        _progress(0, 25, 50),
        str(summary),  # a Python dict repr, as some log clients return it
        json.dumps(summary)[:40],  # a truncated summary line
        "{not json, no keys}",
        STAMP.format(i=0) + "📊 PROGRESS: garbled",
    ]
    parsed, batches, errors = parse_worker_lines(lines)
    assert parsed == summary
    assert batches == [{"end": pytest.approx(1769490979.993), "processed": 25, "batch_time": 0.5}]
    assert [e["line_no"] for e in errors] == [4, 5, 6]
    assert "worker_id" in errors[0]["text"]

    bytes_repr = "b'" + json.dumps(_summary(1, 50, 100, 1.0)) + "\\n'"
    parsed, _, errors = parse_worker_lines([bytes_repr.encode()])
    assert parsed is not None and parsed["worker_id"] == 1 and errors == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=80), st.binary(max_size=80)), max_size=8))
def test_build_report_never_crashes_on_arbitrary_lines(lines: list) -> None:
    spec = RunSpec(workers=1, params=10, run_id="fuzz")
    report = build_report(spec, "process", [_state(0, 1.0, 2.0)], {0: lines})
    assert report["workers"][0]["state"] in ("missing", "succeeded", "failed")
    for error in report["workers"][0]["parse_errors"]:
        assert error["line_no"] >= 1


def test_states_are_reconciled_with_the_summaries() -> None:
    spec = RunSpec(workers=4, params=100, run_id="rec")
    now = time.time()
    lines = {
        0: [_progress(0, 25, 25), json.dumps(_summary(0, 0, 25, 1.0))],
        1: [json.dumps(_summary(1, 25, 50, 2.0, status="interrupted"))],
        2: [_progress(2, 10, 25), "Killed"],
        3: [json.dumps(_summary(3, 75, 100, 1.0))],
    }
    states = [_state(0, now, now + 1), _state(1, now, now + 2, code=143)]
    states += [_state(2, now, now + 0.5, code=-9), _state(3, now, now + 1.5, code=1)]
    report = build_report(spec, "process", states, lines)
    assert [w["state"] for w in report["workers"]] == ["succeeded", "failed", "missing", "failed"]
    assert report["status"] == "failed"
    agg = report["aggregate"]
    assert agg["succeeded_indexes"] == [0]
    assert agg["failed_indexes"] == [1, 3]
    assert agg["missing_indexes"] == [2]
    assert report["workers"][2]["last_lines"] == [_progress(2, 10, 25), "Killed"]
    assert report["workers"][0]["scheduling_delay"] == pytest.approx(0.25)


def test_aggregate_matches_the_seed_table_definitions() -> None:
    spec = RunSpec(workers=2, params=100, run_id="agg")
    lines = {
        0: [json.dumps(_summary(0, 0, 50, 1.0))],
        1: [json.dumps(_summary(1, 50, 100, 3.0))],
    }
    states = [_state(0, 100.0, 101.0), _state(1, 100.5, 104.0)]
    agg = build_report(spec, "docker", states, lines)["aggregate"]
    assert agg["total_parameters"] == 100
    assert agg["parameters_per_worker"] == 50
    assert agg["total_processing_time"] == pytest.approx(4.0)  # earliest start to latest end
    assert agg["processed"] == 100
    assert agg["total_throughput"] == pytest.approx(25.0)
    assert agg["average_throughput_per_worker"] == pytest.approx((50.0 + 16.67) / 2, abs=0.01)
    assert agg["load_imbalance"] == pytest.approx(3.0 / 2.0)


def test_worker_without_state_or_lines_is_missing() -> None:
    spec = RunSpec(workers=3, params=30, run_id="gone")
    report = build_report(spec, "kubernetes", [_state(0, 1.0, 2.0)], {})
    assert [w["state"] for w in report["workers"]] == ["missing"] * 3
    assert report["aggregate"]["missing_indexes"] == [0, 1, 2]


def test_tables_show_the_seed_metrics_and_each_worker(real_report: dict) -> None:
    names = [name for name, _ in metrics_rows(real_report)]
    assert names == [
        "Total Parameters",
        "Workers",
        "Parameters per Worker",
        "Total Processing Time",
        "Average Throughput",
        "Total Throughput",
    ]
    assert dict(metrics_rows(real_report))["Total Parameters"] == "300"
    assert dict(metrics_rows(real_report))["Average Throughput"].endswith("params/sec/worker")
    rows = worker_rows(real_report)
    assert [row[3] for row in rows] == ["0:150", "150:300"]
    assert all(row[-1] == "succeeded" for row in rows)

    console = Console(file=io.StringIO(), width=160)
    print_report(real_report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Performance Metrics" in text and "ttg-real-1" in text and "Run real succeeded." in text
    assert "Batch s avg/min/max" in text

    narrow = Console(file=io.StringIO(), width=80)
    print_report(real_report, narrow)
    text = narrow.file.getvalue()  # type: ignore[attr-defined]
    assert "ttg-…-1" in text and "Batch s" not in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_write_load_and_latest_round_trip(tmp_path: Path, real_report: dict) -> None:
    path = write_report(real_report, tmp_path / "real")
    assert load_report(path) == json.loads(json.dumps(real_report))
    assert load_report(tmp_path / "real") == load_report(path)
    mark_latest(tmp_path / "real")
    assert resolve_run_dir(tmp_path) == tmp_path / "real"
    with pytest.raises(ConfigError, match="recent runs: real"):
        resolve_run_dir(tmp_path, "other")


def test_load_report_rejects_other_schemas_and_broken_files(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text('{"schema": 2}')
    with pytest.raises(ConfigError, match="schema 2"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_report(tmp_path / "report.json")


def test_resolve_latest_without_runs_names_the_next_step(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no latest run") as caught:
        resolve_run_dir(tmp_path)
    assert "inv run" in str(caught.value)


def test_a_whole_log_as_one_bytes_repr_is_split_into_lines() -> None:
    summary = _summary(0, 0, 100, 1.0)
    log = "\n".join([_progress(0, 50, 100), _progress(0, 100, 100), json.dumps(summary)]) + "\n"
    altered = repr(log.encode("utf-8"))  # one b'...' string with escaped newlines
    spec = RunSpec(workers=1, params=100, run_id="whole")
    report = build_report(spec, "kubernetes", [_state(0, 1.0, 2.0)], {0: altered})
    worker = report["workers"][0]
    assert worker["state"] == "succeeded" and worker["summary"] == summary
    assert [b["processed"] for b in worker["batches"]] == [50, 100]
    assert worker["parse_errors"] == []


@pytest.mark.docker
def test_a_docker_run_report_has_the_same_shape(
    worker_image: Any, docker_client: Any, tmp_path: Path
) -> None:
    from ttg_ops.backends.docker import DockerBackend

    spec = RunSpec(workers=2, params=120, batch_size=40, run_id="shape-docker")
    backend = DockerBackend(image=worker_image.tags[0])
    report = run(spec, backend, tmp_path / spec.run_id, console=Console(file=io.StringIO()))
    jsonschema.validate(report, SCHEMA)
    assert report["backend"] == "docker" and report["status"] == "succeeded"
    assert [len(w["batches"]) for w in report["workers"]] == [2, 2]
    assert all(w["scheduling_delay"] is not None for w in report["workers"])


worker_lines = st.one_of(
    st.text(max_size=60),
    st.builds(_progress, st.just(0), st.integers(1, 50), st.just(50)),
    st.builds(lambda n: json.dumps(_summary(0, 0, n, 1.0)), st.integers(1, 50)),
    st.builds(lambda n: json.dumps(_summary(0, 0, n, 1.0))[:n], st.integers(1, 80)),
    st.sampled_from(
        [
            STAMP.format(i=0) + "🚀 STARTING: worker 0",
            STAMP.format(i=0) + "📈 METRIC: duration=1.00 seconds",
            STAMP.format(i=0) + "📊 PROGRESS: garbled",
            "{'worker_id': 0, 'status': 'completed', 'processed_count': 3}",
        ]
    ),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(worker_lines, max_size=12))
def test_dropping_lines_the_report_does_not_need_changes_nothing(lines: list[str]) -> None:
    kept = [line if report_needs(line, parse_line(line)) else "" for line in lines]
    assert parse_worker_lines(kept) == parse_worker_lines(lines)


def _long_run_report(tmp_path: Path) -> dict:
    run_id = "20261203-175512-ab12"
    spec = RunSpec(workers=3, params=9000, run_id=run_id)
    states = [
        WorkerState(
            index=i,
            state=SUCCEEDED,
            name=f"ttg-{run_id}-{i}",
            node="a-rather-long-node-name.example.internal",
            exit_code=0,
            created_at=1.0,
            started_at=1.5,
            finished_at=4.0,
        )
        for i in range(3)
    ]
    lines = {i: [json.dumps(_summary(i, 3000 * i, 3000 * (i + 1), 2.5))] for i in range(3)}
    return build_report(spec, "process", states, lines)


def test_worker_names_stay_on_one_line_in_an_80_column_pipe(tmp_path: Path) -> None:
    report = _long_run_report(tmp_path)
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    print_report(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    rows = [line for line in text.splitlines() if "ttg-" in line]
    assert [row.split()[1] for row in rows] == ["ttg-…-0", "ttg-…-1", "ttg-…-2"]
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_rerun_table_shows_the_global_indexes_it_computed() -> None:
    spec = RunSpec(workers=2, params=10_000, only="4833:5000,6000:6666", run_id="again")
    lines = {
        0: [json.dumps(_summary(0, 0, 417, 1.0) | {"total_params": 833})],
        1: [json.dumps(_summary(1, 417, 833, 1.0) | {"total_params": 833})],
    }
    states = [_state(0, 1.0, 2.0), _state(1, 1.0, 2.0)]
    report = build_report(spec, "process", states, lines)
    assert [row[3] for row in worker_rows(report)] == ["4833:5000,6000:6250", "6250:6666"]


def test_a_killed_worker_counts_what_its_progress_events_reported() -> None:
    spec = RunSpec(workers=2, params=100, run_id="killed")
    lines = {
        0: [_progress(0, 50, 50), json.dumps(_summary(0, 0, 50, 1.0))],
        1: [_progress(1, 20, 50), _progress(1, 30, 50), "Killed"],
    }
    states = [_state(0, 100.0, 101.0), _state(1, 100.0, 102.0, code=-9)]
    report = build_report(spec, "process", states, lines)
    jsonschema.validate(report, SCHEMA)
    agg = report["aggregate"]
    assert (agg["processed"], agg["processed_from_progress"]) == (80, 30)
    assert agg["total_throughput"] == pytest.approx(80 / 2.0)
    assert [row[4] for row in worker_rows(report)] == ["50", "30*"]
    assert dict(metrics_rows(report))["Total Throughput"] == "40.00 params/sec*"

    console = Console(file=io.StringIO(), width=160)
    print_report(report, console)
    assert "* from progress events" in console.file.getvalue()  # type: ignore[attr-defined]
