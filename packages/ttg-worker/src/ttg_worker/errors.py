"""The worker's own error for a bad setting (the worker never imports ttg_ops)."""

from __future__ import annotations


class WorkerConfigError(ValueError):
    """A setting, flag, task or space file is invalid; exit code 2.

    The message names the setting and what is allowed.
    """

    exit_code = 2
