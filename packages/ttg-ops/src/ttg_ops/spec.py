"""The run spec and the one environment contract between tooling and worker.

Every backend (local processes, Docker containers, the Kubernetes Job) starts
workers with the environment rendered here, so a local run and a pod cannot
drift apart. Kubernetes injects ``JOB_COMPLETION_INDEX`` itself; the other
backends add it per worker through :func:`worker_env`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ttg_ops.errors import ConfigError

# Environment variable names: the contract the worker reads.
ENV_INDEX = "JOB_COMPLETION_INDEX"
ENV_WORKERS = "TTG_TOTAL_WORKERS"
ENV_PARAMS = "TTG_TOTAL_PARAMS"
ENV_SPACE = "TTG_SPACE"
ENV_TASK = "TTG_TASK"
ENV_TASK_OPTIONS = "TTG_TASK_OPTIONS"
ENV_BATCH_SIZE = "TTG_BATCH_SIZE"
ENV_OUTPUT_DIR = "TTG_OUTPUT_DIR"
ENV_RUN_ID = "TTG_RUN_ID"
ENV_VERSION = "TTG_VERSION"
ENV_ONLY = "TTG_ONLY"
ENV_FAILURE_THRESHOLD = "TTG_FAILURE_THRESHOLD"
ENV_LOG_LEVEL = "LOG_LEVEL"
ENV_LOG_FORMAT = "LOG_FORMAT"
ENV_POD_NAME = "POD_NAME"
ENV_NODE_NAME = "NODE_NAME"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
BACKENDS = ("process", "docker", "kubernetes")
DEFAULT_VERSION = "1.1.0"
# Kubernetes refuses an Indexed Job with more completions than this.
MAX_WORKERS = 100_000
# Local backends (processes, containers on one machine): see runner.check_spec.
MAX_LOCAL_WORKERS = 512
# The worker's own limit on TTG_BATCH_SIZE (ttg_worker.config.MAX_BATCH_SIZE).
MAX_BATCH_SIZE = 10_000_000
_VERSION = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")
_RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
# Names under runs/ that are not runs: ``latest`` is the symlink to the newest run.
RESERVED_RUN_IDS = frozenset({"latest"})


def validate_version(version: str) -> str:
    """Return ``version`` if it is MAJOR.MINOR.PATCH (optional suffix), else raise ConfigError."""
    if not _VERSION.match(version):
        raise ConfigError(
            f"version {version!r} is not a semantic version: expected MAJOR.MINOR.PATCH "
            "such as 1.1.0, optionally with a suffix such as 1.2.0-rc1 (no leading 'v')"
        )
    return version


def new_run_id() -> str:
    """A sortable, label-safe run id: UTC time plus a short random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run, whichever backend carries it out.

    ``space`` is empty for the default integer range ``0..params``, or the
    path of a grid (YAML or JSON), JSONL or CSV file as the worker sees it.
    ``only`` restricts the run to a subset of global parameter indexes,
    written as half-open ranges ``"start:end,start:end"`` (used by reruns).
    ``parent_run_id`` names the run a rerun completes (empty for a first run).
    """

    workers: int = 3
    params: int = 10_000
    task: str = "simulate"
    task_options: dict[str, Any] = field(default_factory=dict)
    space: str = ""
    batch_size: int = 500
    version: str = DEFAULT_VERSION
    log_level: str = "INFO"
    log_format: str = "text"
    failure_threshold: float = 0.0
    only: str = ""
    run_id: str = field(default_factory=new_run_id)
    parent_run_id: str = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad setting and what is allowed."""
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(
                f"workers must be from 1 to {MAX_WORKERS:,} (the Kubernetes Indexed Job "
                f"limit), got {self.workers:,}"
            )
        if self.params < (0 if self.space else 1):
            raise ConfigError(
                f"params must be at least 1, got {self.params}: an empty space has nothing to run"
                if not self.space
                else f"params must be 0 or more, got {self.params}"
            )
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(
                f"batch size must be from 1 to {MAX_BATCH_SIZE:,}, got {self.batch_size:,}"
            )
        if not self.task.strip():
            raise ConfigError("task must be a built-in task name or 'module:function'")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"log level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.log_format.lower() not in LOG_FORMATS:
            raise ConfigError(
                f"log format {self.log_format!r} is not one of {', '.join(LOG_FORMATS)}"
            )
        if not 0.0 <= self.failure_threshold <= 1.0:
            raise ConfigError(
                f"failure threshold must be a fraction from 0 to 1, got {self.failure_threshold}"
            )
        validate_version(self.version)
        if not _RUN_ID.match(self.run_id):
            raise ConfigError(
                f"run id {self.run_id!r} must be lowercase letters, digits and '-', "
                "at most 40 characters"
            )
        if self.run_id in RESERVED_RUN_IDS:
            raise ConfigError(
                f"run id {self.run_id!r} is reserved (runs/{self.run_id} points to the newest "
                "run); choose another name or omit --run-id"
            )
        if self.parent_run_id and not _RUN_ID.match(self.parent_run_id):
            raise ConfigError(
                f"parent run id {self.parent_run_id!r} must be lowercase letters, digits and "
                "'-', at most 40 characters"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view of the spec, as stored in ``report.json``."""
        return asdict(self)


def worker_env(spec: RunSpec, index: int | None = None) -> dict[str, str]:
    """The worker's environment for ``spec``; with ``index``, for that worker.

    Without ``index`` this is what the Job manifest carries: Kubernetes adds
    ``JOB_COMPLETION_INDEX``, and ``POD_NAME``/``NODE_NAME`` come from the
    downward API there. Backends that start workers themselves pass ``index``.
    """
    env = {
        ENV_WORKERS: str(spec.workers),
        ENV_PARAMS: str(spec.params),
        ENV_TASK: spec.task,
        ENV_BATCH_SIZE: str(spec.batch_size),
        ENV_RUN_ID: spec.run_id,
        ENV_VERSION: spec.version,
        ENV_LOG_LEVEL: spec.log_level.upper(),
        ENV_LOG_FORMAT: spec.log_format.lower(),
        ENV_FAILURE_THRESHOLD: repr(spec.failure_threshold),
    }
    if spec.task_options:
        env[ENV_TASK_OPTIONS] = json.dumps(spec.task_options, sort_keys=True)
    if spec.space:
        env[ENV_SPACE] = spec.space
    if spec.only:
        env[ENV_ONLY] = spec.only
    if index is not None:
        if not 0 <= index < spec.workers:
            raise ConfigError(f"worker index {index} is outside 0..{spec.workers - 1}")
        env[ENV_INDEX] = str(index)
    return env
