"""Lifecycle events, metrics and the summary: the lines the tooling reads.

Each helper writes one log line through loguru with its payload bound to the
record, so the text format shows ``🚀 STARTING: message`` and the JSON format
carries ``"event"`` and the fields as top-level keys.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from ttg_logging._setup import (
    BASE_KEYS,
    EVENT_EMOJI,
    EXTRA_EVENT,
    EXTRA_FIELDS,
    EXTRA_METRIC,
    MODULE_WIDTH,
    STATE,
    utc_stamps,
)

LIFECYCLE_EVENTS = tuple(EVENT_EMOJI)
SUMMARY_EVENT = "SUMMARY"

# The level each event is logged at unless the caller says otherwise.
_EVENT_LEVEL = {"FAILED": "ERROR", "INTERRUPTED": "WARNING"}
_RESERVED = (*BASE_KEYS, "event", "metric", "value", "unit", "summary", "exception")


def format_metric_value(value: float | int) -> str:
    """Integers as they are, floats with two decimals (``498.81``), as in the seed."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.2f}"


def _bound(module: str | None) -> Any:
    """The logger for a helper's line: caller's frame, and ``module`` when given."""
    return logger.opt(depth=1).bind(module=module) if module else logger.opt(depth=1)


def event(
    name: str,
    message: str = "",
    *,
    level: str | None = None,
    module: str | None = None,
    **fields: Any,
) -> None:
    """Log the lifecycle event ``name`` (STARTING, PROGRESS, ...) with its fields.

    Field names must not collide with the keys every JSON line has
    (timestamp, level, worker_id, module, message, event, ...). ``module``
    is the short logical module shown in the line (default: the caller's).
    """
    clash = sorted(set(fields) & set(_RESERVED))
    if clash:
        raise ValueError(f"event field names {clash} are reserved; rename them")
    chosen = level or _EVENT_LEVEL.get(name, "INFO")
    _bound(module).bind(**{EXTRA_EVENT: name, EXTRA_FIELDS: fields}).log(chosen, message)


def progress(
    processed: int,
    total: int,
    batch_time: float,
    rate: float,
    *,
    module: str | None = None,
    **fields: Any,
) -> None:
    """Log a PROGRESS event after a batch.

    Text: ``📊 PROGRESS: 500/3333 (15.0%) batch_time=0.95s rate=498.81 params/s``.
    """
    percent = round(100.0 * processed / total, 1) if total else 100.0
    message = (
        f"{processed}/{total} ({percent:.1f}%) batch_time={batch_time:.2f}s "
        f"rate={rate:.2f} params/s"
    )
    _bound(module).bind(
        **{
            EXTRA_EVENT: "PROGRESS",
            EXTRA_FIELDS: {
                "processed": processed,
                "total": total,
                "percent": percent,
                "batch_time": round(batch_time, 4),
                "rate": round(rate, 2),
                **fields,
            },
        }
    ).info(message)


def metric(name: str, value: float | int, unit: str, *, module: str | None = None) -> None:
    """Log a metric line: ``📈 METRIC: throughput=498.81 params/sec``."""
    if isinstance(value, float):
        value = round(value, 4)
    message = f"{name}={format_metric_value(value)} {unit}".rstrip()
    _bound(module).bind(**{EXTRA_METRIC: (name, value, unit)}).info(message)


def summary(data: dict[str, Any], message: str | None = None, *, module: str | None = None) -> None:
    """Write the worker summary as the last stdout line, in the configured format.

    Text format: the summary alone as one compact JSON object. JSON format:
    a record with ``"event": "SUMMARY"`` and the object under ``"summary"``.
    The line is written whatever ``LOG_LEVEL`` is, since the tooling depends
    on it. Nothing may be logged after this call.
    """
    if STATE.fmt == "json":
        record = {
            "timestamp": utc_stamps(datetime.now(UTC))[1],
            "level": "INFO",
            "worker_id": STATE.worker_id,
            "module": (module or "main")[:MODULE_WIDTH],
            "message": message
            or f"Summary of worker {data.get('worker_id')}: {data.get('status')}.",
            "event": SUMMARY_EVENT,
            "summary": data,
        }
    else:
        record = data
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    STATE.stream.write(line + "\n")
    STATE.stream.flush()
