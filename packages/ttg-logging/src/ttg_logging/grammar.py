"""The one parser of worker output, used by every backend, the live display and the report.

:func:`parse_line` turns one stdout line of a worker, in the text or the JSON
log format, into an :class:`Event`, or ``None`` for a line that is not part
of the grammar (a blank line, a stray print). It copes with what log
transports do to lines on the way: CRLF endings, ANSI colour, a
``2026-01-27T05:16:19.993Z`` timestamp prefix (``kubectl logs
--timestamps``, ``docker logs -t``), a ``b'...'`` bytes repr and a Python
dict repr instead of JSON.

A line that looks like a summary (an object that starts with its
``worker_id`` key, as the text format's summary does, or that mentions
``SUMMARY``/``"summary"``, as the JSON format's does) but cannot be read is
returned as an Event of kind ``"invalid"`` with ``fields = {"line": ...,
"error": ...}``, so callers can report it by worker instead of silently
losing a summary. Other unreadable lines (a truncated JSON log line) give
``None``.

This module uses only the standard library; importing it does not configure
logging.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PROGRESS = "progress"
SUMMARY = "summary"
LIFECYCLE = "lifecycle"
METRIC = "metric"
LOG = "log"
INVALID = "invalid"
KINDS = (PROGRESS, SUMMARY, LIFECYCLE, METRIC, LOG, INVALID)

LIFECYCLE_NAMES = ("STARTING", "INITIALIZED", "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED")
# Keys that make a JSON object a worker summary (text format: the bare object).
SUMMARY_KEYS = frozenset({"worker_id", "status", "processed_count"})

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_TRANSPORT_STAMP = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}) "
)
TEXT_LINE = re.compile(
    r"^\[(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3})\] "
    r"\[(?P<level>[A-Z]+) *\] "
    r"\[(?P<worker>[^\]]*)\] "
    r"\[(?P<module>[^\]]*)\] ?"
    r"(?P<message>.*)$"
)
PROGRESS_TEXT = re.compile(
    r"(?P<processed>\d+)/(?P<total>\d+) \((?P<percent>\d+(?:\.\d+)?)%\) "
    r"batch_time=(?P<batch_time>\d+(?:\.\d+)?)s rate=(?P<rate>\d+(?:\.\d+)?) params/s"
)
_EVENT_TEXT = re.compile(
    r"^(?:\S{1,8} )?(?P<name>PROGRESS|" + "|".join(LIFECYCLE_NAMES) + r")(?:: ?(?P<rest>.*))?$"
)
METRIC_TEXT = re.compile(
    r"^(?:\S{1,8} )?METRIC: (?P<name>[A-Za-z_][\w.]*)=(?P<value>-?[\d.]+(?:[eE][-+]?\d+)?)"
    r"(?: (?P<unit>.*))?$"
)
_WORKER_LABEL = re.compile(r"WORKER-(\d+)$")


@dataclass(frozen=True)
class Event:
    """One recognised line of worker output.

    ``kind`` is one of :data:`KINDS`; ``name`` is the event name (PROGRESS,
    STARTING, SUMMARY, ...), the metric name, or the level for plain log
    lines; ``fields`` holds the parsed values (for a summary: the summary
    object itself); ``timestamp`` is a UNIX time when the line carries one.
    """

    kind: str
    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    timestamp: float | None = None
    worker_id: int | None = None


def clean_line(line: str | bytes) -> str:
    """Undo what transports do to a line: bytes, ``b'...'`` repr, CRLF, ANSI, timestamps."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    if text[:2] in ("b'", 'b"'):
        quote = text[1]
        text = text[2:]
        if text.endswith(quote):
            text = text[:-1]
        if "\\" in text:
            with contextlib.suppress(ValueError):
                text = codecs.escape_decode(text.encode("utf-8"))[0].decode("utf-8", "replace")
        text = text.rstrip("\r\n")
    text = _ANSI.sub("", text).replace("\r", "")
    return _TRANSPORT_STAMP.sub("", text, count=1).strip()


def split_lines(text: str | bytes) -> list[str]:
    """Split a whole log (possibly one ``b'...\\n...'`` repr of all of it) into lines."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    stripped = text.strip()
    if stripped[:2] in ("b'", 'b"') and "\\n" in stripped and "\n" not in stripped:
        stripped = clean_line(stripped)
        return stripped.splitlines()
    return text.splitlines()


def _to_number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _iso_to_unix(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _worker_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _WORKER_LABEL.search(value)
        if match:
            return int(match.group(1))
        if value.isdigit():
            return int(value)
    return None


def _load_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a JSON object, or a Python dict repr; return ``(object, error)``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        error = f"not JSON: {exc}"
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None, error
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, None


def _looks_like_summary(text: str) -> bool:
    """A bare summary starts with its worker_id; a JSON-format one names SUMMARY or summary."""
    return text.startswith(('{"worker_id"', "{'worker_id'")) or any(
        marker in text for marker in ("SUMMARY", '"summary"', "'summary'")
    )


def _from_record(obj: dict[str, Any], line: str) -> Event | None:  # noqa: PLR0911
    """An Event from a JSON-format log record or a bare summary object."""
    timestamp = _iso_to_unix(obj.get("timestamp"))
    worker = _worker_id(obj.get("worker_id"))
    name = obj.get("event")

    if name == "SUMMARY":
        data = obj.get("summary")
        if not isinstance(data, dict):
            fields = {"line": line, "error": "the SUMMARY record has no summary object"}
            return Event(INVALID, "SUMMARY", fields, timestamp, worker)
        if worker is None:
            worker = _worker_id(data.get("worker_id"))
        return Event(SUMMARY, "SUMMARY", data, timestamp, worker)
    if isinstance(name, str):
        fields = {k: v for k, v in obj.items() if k not in ("timestamp", "worker_id", "event")}
        kind = PROGRESS if name == "PROGRESS" else LIFECYCLE
        return Event(kind, name, fields, timestamp, worker)
    if "metric" in obj:
        metric = {"value": obj.get("value"), "unit": obj.get("unit", "")}
        return Event(METRIC, str(obj["metric"]), metric, timestamp, worker)
    if obj.keys() >= SUMMARY_KEYS:
        return Event(SUMMARY, "SUMMARY", obj, _iso_to_unix(obj.get("finished_at")), worker)
    if "level" in obj and "message" in obj:
        fields = {k: v for k, v in obj.items() if k not in ("timestamp", "worker_id")}
        return Event(LOG, str(obj["level"]), fields, timestamp, worker)
    return None


def _from_text(match: re.Match[str]) -> Event:
    timestamp = datetime.strptime(match["ts"], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    unix = timestamp.timestamp()
    worker = _worker_id(match["worker"])
    message = match["message"]

    metric_match = METRIC_TEXT.match(message)
    if metric_match:
        value = _to_number(metric_match["value"])
        metric = {"value": value, "unit": metric_match["unit"] or ""}
        return Event(METRIC, metric_match["name"], metric, unix, worker)

    event_match = _EVENT_TEXT.match(message)
    if event_match:
        name = event_match["name"]
        rest = event_match["rest"] or ""
        if name == "PROGRESS":
            progress = PROGRESS_TEXT.search(rest)
            if progress:
                fields: dict[str, Any] = {
                    "processed": int(progress["processed"]),
                    "total": int(progress["total"]),
                    "percent": float(progress["percent"]),
                    "batch_time": float(progress["batch_time"]),
                    "rate": float(progress["rate"]),
                    "message": rest,
                }
                return Event(PROGRESS, name, fields, unix, worker)
        else:
            return Event(LIFECYCLE, name, {"message": rest, "level": match["level"]}, unix, worker)

    log = {"level": match["level"], "module": match["module"].strip(), "message": message}
    return Event(LOG, match["level"], log, unix, worker)


def parse_line(line: str | bytes) -> Event | None:  # noqa: PLR0911
    """Parse one line of worker stdout in either format; ``None`` if it is not grammar."""
    text = clean_line(line)
    if not text:
        return None

    if text.startswith("{"):
        obj, error = _load_object(text)
        if obj is None:
            if _looks_like_summary(text):
                return Event(INVALID, "SUMMARY", {"line": text, "error": error or "unreadable"})
            return None
        event = _from_record(obj, text)
        if event is None and _looks_like_summary(text):
            missing = sorted(SUMMARY_KEYS - obj.keys())
            return Event(INVALID, "SUMMARY", {"line": text, "error": f"missing keys {missing}"})
        return event

    match = TEXT_LINE.match(text)
    if match:
        return _from_text(match)
    return None


def parse_lines(lines: Iterable[str | bytes]) -> list[Event]:
    """Every recognised event of ``lines``, in order."""
    events = []
    for line in lines:
        event = parse_line(line)
        if event is not None:
            events.append(event)
    return events


def find_summary(lines: Iterable[str | bytes]) -> dict[str, Any] | None:
    """The worker summary in ``lines`` (the last one wins), or ``None``."""
    found = None
    for line in lines:
        event = parse_line(line)
        if event is not None and event.kind == SUMMARY:
            found = event.fields
    return found


def invalid_lines(lines: Iterable[str | bytes]) -> list[Event]:
    """Lines that look like a summary but cannot be read (kind ``"invalid"``)."""
    return [e for e in parse_lines(lines) if e.kind == INVALID]
