"""Small domain errors that tasks turn into a clear message and an exit code."""

from __future__ import annotations


class TTGError(Exception):
    """Base class: a failure to report to the user without a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigError(TTGError):
    """A setting or flag is invalid; the message names it and what is allowed."""

    exit_code = 2


class PreflightError(TTGError):
    """Something the task needs (a tool, a daemon, a context) is missing."""

    exit_code = 3


class RunFailed(TTGError):
    """The run finished, but some workers failed or are missing."""

    exit_code = 1
