"""Shared structured logging for TTG.

Entry points call :func:`configure` once; everything else logs through
``from loguru import logger`` and the helpers :func:`event`,
:func:`progress`, :func:`metric` and :func:`summary`. The one parser of
what a worker prints is :mod:`ttg_logging.grammar`.
"""

from ttg_logging._setup import (
    EVENT_EMOJI,
    FORMATS,
    LEVELS,
    METRIC_EMOJI,
    LoggingConfigError,
    configure,
    resolve_format,
    resolve_level,
)
from ttg_logging.events import (
    LIFECYCLE_EVENTS,
    event,
    metric,
    progress,
    summary,
)

__all__ = [
    "EVENT_EMOJI",
    "FORMATS",
    "LEVELS",
    "LIFECYCLE_EVENTS",
    "METRIC_EMOJI",
    "LoggingConfigError",
    "configure",
    "event",
    "metric",
    "progress",
    "resolve_format",
    "resolve_level",
    "summary",
]
