"""Loguru set-up for TTG entry points: the text and JSON line formats.

Only entry points (the worker's ``main``, the invoke tasks) call
:func:`configure`; library code logs through ``from loguru import logger``
and never adds sinks. Both formats are built here by hand from the record,
so a message that contains braces or JSON is written verbatim and the JSON
format stays one flat object per line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from loguru import logger

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
ENV_LEVEL = "LOG_LEVEL"
ENV_FORMAT = "LOG_FORMAT"
MODULE_WIDTH = 12

# Keys of ``record["extra"]`` that carry TTG's structured payloads.
EXTRA_MODULE = "module"
EXTRA_EVENT = "ttg_event"
EXTRA_FIELDS = "ttg_fields"
EXTRA_METRIC = "ttg_metric"
_EXTRA_LINE = "_ttg_line"

EVENT_EMOJI: dict[str, str] = {
    "STARTING": "🚀",
    "INITIALIZED": "✅",
    "RUNNING": "▶️",
    "PROGRESS": "📊",
    "COMPLETED": "🎉",
    "FAILED": "❌",
    "INTERRUPTED": "⚠️",
}
METRIC_EMOJI = "📈"

# The keys every JSON line starts with; event and metric fields may not reuse them.
BASE_KEYS = ("timestamp", "level", "worker_id", "module", "message")


class LoggingConfigError(ValueError):
    """LOG_LEVEL or LOG_FORMAT (or the matching argument) has a value TTG does not know."""


@dataclass
class _State:
    """What :func:`configure` chose, for the event helpers and the summary."""

    fmt: str = "text"
    level: str = "INFO"
    worker_id: int | str | None = None
    stream: TextIO = field(default_factory=lambda: sys.stdout)
    handler_id: int | None = None


STATE = _State()


def _worker_label(worker_id: int | str | None) -> str:
    if worker_id is None:
        return "WORKER-?"
    if isinstance(worker_id, int):
        return f"WORKER-{worker_id}"
    return str(worker_id)


def _module_name(record: Any) -> str:
    """The short logical module: bound ``module`` or the last part of the logger name."""
    module = record["extra"].get(EXTRA_MODULE)
    if not module:
        module = (record["name"] or "main").rsplit(".", 1)[-1]
    return str(module).replace("]", ")").replace("\n", " ")[:MODULE_WIDTH]


def utc_stamps(moment: datetime) -> tuple[str, str]:
    """``moment`` in UTC: the text form (``2026-01-27 05:16:19.993``) and ISO 8601 with ``Z``."""
    moment = moment.astimezone(UTC)
    millis = f"{moment.microsecond // 1000:03d}"
    base = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{base}.{millis}", f"{base.replace(' ', 'T')}.{millis}Z"


def render_event_text(name: str, message: str) -> str:
    """``🚀 STARTING: message``: how an event reads in the text format."""
    emoji = EVENT_EMOJI.get(name, "•")
    return f"{emoji} {name}: {message}" if message else f"{emoji} {name}"


def _text_format(record: Any) -> str:
    extra = record["extra"]
    stamp, _ = utc_stamps(record["time"])
    message = record["message"]
    if EXTRA_EVENT in extra:
        # An event stays on one line, whatever its message holds, so the grammar sees it whole.
        message = render_event_text(extra[EXTRA_EVENT], " ".join(message.splitlines()))
    elif EXTRA_METRIC in extra:
        message = f"{METRIC_EMOJI} METRIC: {message}"
    level = record["level"].name
    worker = _worker_label(STATE.worker_id)
    module = _module_name(record)
    extra[_EXTRA_LINE] = f"[{stamp}] [{level:<5}] [{worker}] [{module:<{MODULE_WIDTH}}] {message}"
    return "{extra[" + _EXTRA_LINE + "]}\n{exception}"


def json_record(record: Any) -> dict[str, Any]:
    """The flat JSON object for one loguru record (see docs/LOGGING.md for the keys)."""
    extra = record["extra"]
    _, iso = utc_stamps(record["time"])
    out: dict[str, Any] = {
        "timestamp": iso,
        "level": record["level"].name,
        "worker_id": STATE.worker_id,
        "module": _module_name(record),
        "message": record["message"],
    }
    if EXTRA_EVENT in extra:
        out["event"] = extra[EXTRA_EVENT]
        for key, value in (extra.get(EXTRA_FIELDS) or {}).items():
            out.setdefault(key, value)
    if EXTRA_METRIC in extra:
        name, value, unit = extra[EXTRA_METRIC]
        out["metric"], out["value"], out["unit"] = name, value, unit
    if record["exception"] is not None:
        import traceback

        exc_type, exc_value, exc_tb = record["exception"]
        out["exception"] = "".join(traceback.format_exception(exc_type, exc_value, exc_tb))
    return out


def _json_format(record: Any) -> str:
    record["extra"][_EXTRA_LINE] = json.dumps(
        json_record(record), ensure_ascii=False, default=str, separators=(",", ":")
    )
    return "{extra[" + _EXTRA_LINE + "]}\n"


class InterceptHandler(logging.Handler):
    """Send standard-library log records to loguru, attributed to their real caller."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno

        # Walk out of the logging package so loguru reports the caller of logger.info().
        frame = sys._getframe(0)
        depth = 0
        while frame is not None and (
            depth == 0 or frame.f_code.co_filename in (logging.__file__, __file__)
        ):
            frame = frame.f_back  # type: ignore[assignment]
            depth += 1

        logger.opt(depth=depth, exception=record.exc_info).bind(module=record.name).log(
            level, record.getMessage()
        )


def resolve_level(level: str | None, setting: str = ENV_LEVEL) -> str:
    """The level to use: the argument, else ``LOG_LEVEL``, else INFO; validated.

    ``setting`` is how an error message names the value (a flag, say).
    """
    raw = level if level is not None else os.environ.get(ENV_LEVEL) or "INFO"
    value = raw.strip().upper()
    if value not in LEVELS:
        raise LoggingConfigError(
            f"{setting}={raw!r} is not a log level; allowed: {', '.join(LEVELS)}"
        )
    return value


def resolve_format(fmt: str | None, setting: str = ENV_FORMAT) -> str:
    """The format to use: the argument, else ``LOG_FORMAT``, else text; validated."""
    raw = fmt if fmt is not None else os.environ.get(ENV_FORMAT) or "text"
    value = raw.strip().lower()
    if value not in FORMATS:
        raise LoggingConfigError(
            f"{setting}={raw!r} is not a log format; allowed: {', '.join(FORMATS)}"
        )
    return value


def configure(
    worker_id: int | str | None,
    level: str | None = None,
    fmt: str | None = None,
    *,
    stream: TextIO | None = None,
    intercept_stdlib: bool = True,
) -> None:
    """Send every log line to ``stream`` (stdout) in TTG's text or JSON format.

    ``level`` and ``fmt`` default to ``LOG_LEVEL`` and ``LOG_FORMAT``. An
    unknown value raises :class:`LoggingConfigError` naming the allowed
    values, before anything is changed. ``worker_id`` is an int for workers
    (shown as ``WORKER-<n>``) or a short label for tooling. Standard-library
    logging is routed through loguru, replacing the root handlers, so that
    a dependency's log line appears once and in the same format.
    """
    chosen_level = resolve_level(level)
    chosen_format = resolve_format(fmt)

    STATE.fmt = chosen_format
    STATE.level = chosen_level
    STATE.worker_id = worker_id
    STATE.stream = stream if stream is not None else sys.stdout

    logger.remove()
    STATE.handler_id = logger.add(
        STATE.stream,
        level=chosen_level,
        format=_json_format if chosen_format == "json" else _text_format,
        colorize=False,
        backtrace=False,
        diagnose=False,
        catch=False,
    )

    if intercept_stdlib:
        logging.basicConfig(
            handlers=[InterceptHandler()],
            level=logging.getLevelName(chosen_level),
            force=True,
        )
