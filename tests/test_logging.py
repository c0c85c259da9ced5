"""ttg_logging: the text and JSON line formats, events, metrics and stdlib interception."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import ttg_logging
from loguru import logger
from ttg_logging import LoggingConfigError, configure, event, metric, progress, summary

# The seed's line: [2026-01-27 05:16:19.993] [INFO ] [WORKER-0] [main        ] message
SEED_LINE = re.compile(
    r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\] "
    r"\[(?:DEBUG|INFO |WARNING|ERROR)\] "
    r"\[WORKER-\d+\] "
    r"\[[^\]]{12}\] "
    r".*$"
)
JSON_KEYS = {"timestamp", "level", "worker_id", "module", "message"}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Give every test a fresh loguru and put pytest's stdlib handlers back afterwards."""
    root_handlers = logging.root.handlers[:]
    root_level = logging.root.level
    yield
    logger.remove()
    logging.root.handlers[:] = root_handlers
    logging.root.setLevel(root_level)


def _configure(fmt: str, level: str = "DEBUG", worker: int | str = 0) -> io.StringIO:
    stream = io.StringIO()
    configure(worker, level, fmt, stream=stream)
    return stream


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize(
    ("level", "fmt", "named"),
    [
        ("LOUD", "text", "DEBUG, INFO, WARNING, ERROR"),
        ("INFO", "xml", "text, json"),
        ("TRACE", "text", "DEBUG, INFO, WARNING, ERROR"),
    ],
    ids=["unknown-level", "unknown-format", "level-not-offered"],
)
def test_configure_rejects_unknown_values_naming_the_allowed_ones(
    level: str, fmt: str, named: str
) -> None:
    with pytest.raises(LoggingConfigError, match=re.escape(named)):
        configure(0, level, fmt, stream=io.StringIO())
    assert issubclass(LoggingConfigError, ValueError)


def test_configure_reads_log_level_and_log_format_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    stream = io.StringIO()
    configure(3, stream=stream)
    logger.info("This line is below the level and must not appear.")
    logger.warning("This line must appear.")
    lines = _lines(stream)
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "This line must appear."

    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(LoggingConfigError, match="LOG_LEVEL='LOUD'"):
        configure(3, stream=io.StringIO())


def test_text_lines_have_the_seed_shape_with_padded_level_and_module() -> None:
    stream = _configure("text")
    logger.bind(module="main").info("TTG Distributed Worker v1.1.0")
    logger.bind(module="a-very-long-module-name").warning("Truncated module.")
    logger.bind(module="shard").debug("Debug line.")
    lines = _lines(stream)

    assert len(lines) == 3
    for line in lines:
        assert SEED_LINE.match(line), line
    assert "] [INFO ] [WORKER-0] [main        ] TTG Distributed Worker v1.1.0" in lines[0]
    assert "[WARNING] [WORKER-0] [a-very-long-] Truncated module." in lines[1]
    assert "[DEBUG] [WORKER-0] [shard       ] Debug line." in lines[2]


def test_text_timestamps_are_utc_with_milliseconds() -> None:
    stream = _configure("text")
    before = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    logger.info("Now.")
    stamp = _lines(stream)[0][1:24]
    parsed = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
    assert 0 <= (parsed - before).total_seconds() < 5


def test_events_and_metrics_read_like_the_seed_in_text() -> None:
    stream = _configure("text")
    event("STARTING", "Worker 0 is starting.", module="main", task="simulate")
    progress(500, 3333, 0.95, 498.81, module="processor")
    metric("processed_count", 3333, "params", module="main")
    metric("throughput", 498.8123, "params/sec", module="main")
    event("FAILED", "It broke.", module="main")
    lines = _lines(stream)

    assert lines[0].endswith("[main        ] 🚀 STARTING: Worker 0 is starting.")
    assert lines[1].endswith(
        "[processor   ] 📊 PROGRESS: 500/3333 (15.0%) batch_time=0.95s rate=498.81 params/s"
    )
    assert lines[2].endswith("📈 METRIC: processed_count=3333 params")
    assert lines[3].endswith("📈 METRIC: throughput=498.81 params/sec")
    assert "[ERROR] [WORKER-0] [main        ] ❌ FAILED: It broke." in lines[4]


def test_every_json_line_is_one_flat_object_with_the_documented_keys() -> None:
    stream = _configure("json", worker=2)
    logger.bind(module="main").info('A message with {braces} and "quotes" and {0} {x}.')
    logger.info("Unbound module and unicode: é 🚀.")
    event("INITIALIZED", "Ready.", module="main", range_start=0, range_end=3333)
    progress(500, 3333, 0.95, 498.81, module="processor")
    metric("duration", 6.68, "seconds", module="main")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("Caught an error.")
    summary({"worker_id": 2, "status": "completed", "processed_count": 1}, module="main")

    records = [json.loads(line) for line in _lines(stream)]
    assert len(records) == 7
    for record in records:
        assert record.keys() >= JSON_KEYS
        assert record["worker_id"] == 2
        assert isinstance(record["level"], str)
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", record["timestamp"])
        assert all(not isinstance(v, dict) for k, v in record.items() if k != "summary")

    assert records[0]["message"] == 'A message with {braces} and "quotes" and {0} {x}.'
    assert records[1]["module"] == "test_logging"
    assert records[2]["event"] == "INITIALIZED"
    assert records[2]["range_end"] == 3333
    assert {k: records[3][k] for k in ("event", "processed", "total", "percent")} == {
        "event": "PROGRESS",
        "processed": 500,
        "total": 3333,
        "percent": 15.0,
    }
    assert (records[4]["metric"], records[4]["value"], records[4]["unit"]) == (
        "duration",
        6.68,
        "seconds",
    )
    assert records[5]["level"] == "ERROR"
    assert "RuntimeError: boom" in records[5]["exception"]
    assert records[6]["event"] == "SUMMARY"
    assert records[6]["summary"]["status"] == "completed"


def test_text_summary_is_one_compact_json_line() -> None:
    stream = _configure("text")
    logger.info("Before the summary.")
    summary({"worker_id": 0, "status": "completed", "note": "é"})
    last = _lines(stream)[-1]
    assert json.loads(last) == {"worker_id": 0, "status": "completed", "note": "é"}
    assert " " not in last.replace("é", "")


def test_event_fields_cannot_overwrite_the_base_keys() -> None:
    _configure("json")
    with pytest.raises(ValueError, match="reserved"):
        event("RUNNING", "Go.", level_name="x", timestamp="now")


def test_stdlib_logging_goes_through_loguru_once_with_the_real_caller() -> None:
    stream = _configure("json")
    seen: list[dict[str, object]] = []
    logger.add(lambda message: seen.append(dict(message.record)), level="DEBUG")

    logging.getLogger("urllib3.connectionpool").warning("Retrying the connection to %s.", "x")

    lines = [json.loads(line) for line in _lines(stream)]
    assert [line["message"] for line in lines] == ["Retrying the connection to x."]
    assert lines[0]["module"] == "urllib3.conn"
    assert lines[0]["level"] == "WARNING"
    assert (
        seen[0]["function"] == "test_stdlib_logging_goes_through_loguru_once_with_the_real_caller"
    )
    assert logging.root.handlers and len(logging.root.handlers) == 1


def test_configure_twice_does_not_duplicate_lines() -> None:
    _configure("text")
    stream = _configure("text", worker=1)
    logger.info("Once.")
    logging.getLogger("dep").info("Also once.")
    lines = _lines(stream)
    assert len(lines) == 2
    assert "[WORKER-1]" in lines[0]


def test_a_tooling_label_replaces_the_worker_number() -> None:
    stream = _configure("text", worker="TOOLS")
    logger.info("From the tasks.")
    assert "] [TOOLS] [" in _lines(stream)[0]


def test_public_names_are_exported() -> None:
    assert set(ttg_logging.LIFECYCLE_EVENTS) == {
        "STARTING",
        "INITIALIZED",
        "RUNNING",
        "PROGRESS",
        "COMPLETED",
        "FAILED",
        "INTERRUPTED",
    }
    assert ttg_logging.LEVELS == ("DEBUG", "INFO", "WARNING", "ERROR")


def test_an_event_message_with_newlines_stays_on_one_text_line() -> None:
    stream = _configure("text")
    event("FAILED", "ValueError: first line\nsecond line", module="main")
    lines = _lines(stream)
    assert len(lines) == 1
    assert lines[0].endswith("❌ FAILED: ValueError: first line second line")


def test_the_logging_docs_list_every_event_with_its_emoji() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "LOGGING.md").read_text()
    for name, emoji in ttg_logging.EVENT_EMOJI.items():
        assert f"| `{name}` | {emoji} |" in docs, name
