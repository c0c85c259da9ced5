"""ttg_logging.grammar: one parser for both formats and for lines altered in transit."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger
from ttg_logging import configure, event, metric, progress, summary
from ttg_logging.grammar import (
    KINDS,
    Event,
    clean_line,
    find_summary,
    invalid_lines,
    parse_line,
    parse_lines,
    split_lines,
)

SEED_SUMMARY = {
    "worker_id": 0,
    "status": "completed",
    "version": "1.1.0",
    "hostname": "ttg-computation-0-7qkdq",
    "pod_name": "ttg-computation-0-7qkdq",
    "node_name": "ttg-cluster-worker2",
    "range_start": 0,
    "range_end": 3333,
    "processed_count": 3333,
    "duration_seconds": 6.68,
    "params_per_second": 498.81,
    "batch_stats": {
        "total_batches": 7,
        "avg_batch_time": 0.95,
        "min_batch_time": 0.67,
        "max_batch_time": 1.01,
    },
}
SEED_PROGRESS = (
    "[2026-01-27 05:16:20.943] [INFO ] [WORKER-0] [processor   ] "
    "📊 PROGRESS: 500/3333 (15.0%) batch_time=0.95s rate=498.81 params/s"
)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root_handlers = logging.root.handlers[:]
    yield
    logger.remove()
    logging.root.handlers[:] = root_handlers


def _emit(fmt: str) -> list[str]:
    """A worker-like sequence of lines, produced by the real formatter."""
    stream = io.StringIO()
    configure(0, "INFO", fmt, stream=stream)
    logger.bind(module="main").info("TTG Distributed Worker v1.1.0")
    event("STARTING", "Worker 0 of 3 is starting.", module="main", task="simulate")
    progress(500, 3333, 0.95, 498.81, module="processor")
    metric("processed_count", 3333, "params", module="main")
    metric("throughput", 498.81, "params/sec", module="main")
    event("COMPLETED", "Done.", module="main")
    summary(SEED_SUMMARY, module="main")
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_both_formats_parse_to_the_same_events(fmt: str) -> None:
    events = parse_lines(_emit(fmt))
    assert [(e.kind, e.name) for e in events] == [
        ("log", "INFO"),
        ("lifecycle", "STARTING"),
        ("progress", "PROGRESS"),
        ("metric", "processed_count"),
        ("metric", "throughput"),
        ("lifecycle", "COMPLETED"),
        ("summary", "SUMMARY"),
    ]
    progress_event = events[2]
    assert {k: progress_event.fields[k] for k in ("processed", "total", "percent", "rate")} == {
        "processed": 500,
        "total": 3333,
        "percent": 15.0,
        "rate": 498.81,
    }
    assert progress_event.fields["batch_time"] == pytest.approx(0.95)
    assert events[3].fields == {"value": 3333, "unit": "params"}
    assert events[-1].fields == SEED_SUMMARY
    assert all(e.worker_id == 0 for e in events)
    assert all(e.timestamp is not None for e in events[:-1])


def test_the_seed_progress_line_parses_with_its_timestamp() -> None:
    parsed = parse_line(SEED_PROGRESS)
    assert parsed is not None
    assert parsed.kind == "progress"
    assert parsed.timestamp == pytest.approx(1769490980.943)
    assert parsed.fields["processed"] == 500


def test_the_seed_metric_line_parses() -> None:
    line = (
        "[2026-01-27 05:16:26.673] [INFO ] [WORKER-0] [main        ] "
        "📈 METRIC: duration=6.68 seconds"
    )
    assert parse_line(line) == Event(
        "metric", "duration", {"value": 6.68, "unit": "seconds"}, 1769490986.673, 0
    )


@pytest.mark.parametrize(
    "altered",
    [
        pytest.param(lambda s: s + "\r\n", id="crlf"),
        pytest.param(lambda s: "\x1b[32m" + s + "\x1b[0m", id="ansi-colour"),
        pytest.param(lambda s: "2026-01-27T05:16:26.700123456Z " + s, id="kubectl-timestamps"),
        pytest.param(lambda s: "b'" + s + "'", id="bytes-prefix"),
        pytest.param(lambda s: repr((s + "\n").encode()), id="bytes-repr-escaped"),
        pytest.param(lambda s: str(json.loads(s)), id="python-dict-repr"),
        pytest.param(lambda s: s.encode(), id="raw-bytes"),
    ],
)
def test_altered_summary_lines_still_parse(altered: object) -> None:
    line = json.dumps(SEED_SUMMARY, separators=(",", ":"))
    changed = altered(line)  # type: ignore[operator]
    parsed = parse_line(changed)
    assert parsed is not None
    assert parsed.kind == "summary"
    assert parsed.fields == SEED_SUMMARY


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_altered_event_lines_still_parse(fmt: str) -> None:
    for line in _emit(fmt)[1:3]:
        original = parse_line(line)
        for changed in (
            repr(line.encode()),
            "\x1b[1m" + line + "\x1b[0m\r",
            str(json.loads(line)) if fmt == "json" else line,
        ):
            assert parse_line(changed) == original, changed


def test_a_json_record_turned_into_a_dict_repr_parses() -> None:
    line = _emit("json")[-1]
    parsed = parse_line(str(json.loads(line)))
    assert parsed is not None and parsed.kind == "summary"
    assert parsed.fields["range_end"] == 3333


def test_a_truncated_summary_is_reported_as_invalid_not_lost() -> None:
    line = json.dumps(SEED_SUMMARY)[:120]
    parsed = parse_line(line)
    assert parsed is not None
    assert parsed.kind == "invalid"
    assert parsed.fields["line"] == line
    assert "not JSON" in parsed.fields["error"]
    assert invalid_lines([line, SEED_PROGRESS]) == [parsed]
    assert find_summary([line]) is None


def test_a_truncated_json_summary_record_is_invalid() -> None:
    line = _emit("json")[-1][:-40]
    parsed = parse_line(line)
    assert parsed is not None and parsed.kind == "invalid"


def test_a_truncated_json_log_line_is_not_mistaken_for_a_summary() -> None:
    line = _emit("json")[2][:100]
    assert '"worker_id"' in line
    assert parse_line(line) is None


def test_a_summary_object_without_the_required_keys_is_invalid() -> None:
    parsed = parse_line('{"worker_id": 1, "hello": 2}')
    assert parsed is not None and parsed.kind == "invalid"
    assert "processed_count" in parsed.fields["error"]


def test_a_truncated_text_progress_line_degrades_to_a_log_line() -> None:
    parsed = parse_line(SEED_PROGRESS[:-20])
    assert parsed is not None
    assert parsed.kind == "log"


@pytest.mark.parametrize(
    "line",
    ["", "   ", "hello world", "Traceback (most recent call last):", "[not a log line", "[1, 2]"],
)
def test_lines_outside_the_grammar_give_none(line: str) -> None:
    assert parse_line(line) is None


def test_find_summary_takes_the_last_summary() -> None:
    first = dict(SEED_SUMMARY, status="interrupted")
    lines = [json.dumps(first), SEED_PROGRESS, json.dumps(SEED_SUMMARY), "trailing noise"]
    assert find_summary(lines) == SEED_SUMMARY
    assert find_summary([SEED_PROGRESS]) is None


def test_split_lines_unpacks_a_whole_log_sent_as_one_bytes_repr() -> None:
    text = "\n".join(_emit("text")) + "\n"
    blob = repr(text.encode())
    lines = split_lines(blob)
    assert find_summary(lines) == SEED_SUMMARY
    assert [e.kind for e in parse_lines(lines)].count("progress") == 1


def test_clean_line_strips_transport_artefacts() -> None:
    assert clean_line("\x1b[31m[x]\x1b[0m\r\n") == "[x]"
    assert clean_line("2026-01-27T05:16:19Z hello") == "hello"


@settings(deadline=None)  # the shared CI machine can stall any single example
@given(st.text() | st.binary())
def test_parse_line_never_raises(line: str | bytes) -> None:
    event = parse_line(line)
    assert event is None or event.kind in KINDS


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_truncation_of_a_summary_is_reported_as_invalid(fmt: str) -> None:
    line = _emit(fmt)[-1]
    assert parse_line(line) is not None
    for cut in range(1, len(line)):
        event = parse_line(line[:cut])
        if line[:cut].startswith('{"worker_id"') or "SUMMARY" in line[:cut]:
            assert event is not None and event.kind == "invalid", line[:cut]
        else:
            assert event is None or event.kind == "invalid", line[:cut]
