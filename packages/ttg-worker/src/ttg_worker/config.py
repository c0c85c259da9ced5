"""The worker's settings: environment variables, overridden by command-line flags.

The environment contract is the one in docs/ARCHITECTURE.md ("The worker
environment"); every variable has a flag of the same meaning. An empty
variable counts as unset. Every bad value raises :class:`WorkerConfigError`
naming the setting and what is allowed.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttg_worker import __version__
from ttg_worker.errors import WorkerConfigError

# (attribute, environment variable, flag, metavar, help)
SETTINGS: tuple[tuple[str, str, str, str, str], ...] = (
    ("worker_id", "JOB_COMPLETION_INDEX", "--worker-id", "N", "this worker's index, 0..workers-1"),
    ("workers", "TTG_TOTAL_WORKERS", "--workers", "N", "number of workers (default 1)"),
    ("params", "TTG_TOTAL_PARAMS", "--params", "N", "size of the integer range space (10000)"),
    ("space", "TTG_SPACE", "--space", "PATH", "grid (.yaml/.yml/.json), .jsonl or .csv file"),
    ("task", "TTG_TASK", "--task", "TASK", "built-in task or module:function (simulate)"),
    ("task_options", "TTG_TASK_OPTIONS", "--task-options", "JSON", "task keyword options"),
    ("batch_size", "TTG_BATCH_SIZE", "--batch-size", "N", "parameters per batch (500)"),
    ("output_dir", "TTG_OUTPUT_DIR", "--output-dir", "DIR", "results directory (./ttg-output)"),
    ("run_id", "TTG_RUN_ID", "--run-id", "ID", "run id echoed in the summary"),
    ("version", "TTG_VERSION", "--worker-version", "X.Y.Z", "version in logs and summary"),
    ("only", "TTG_ONLY", "--only", "A:B,C:D", "restrict to these global index ranges"),
    (
        "failure_threshold",
        "TTG_FAILURE_THRESHOLD",
        "--failure-threshold",
        "FRACTION",
        "fraction of failed parameters tolerated before exit code 1 (0.0)",
    ),
    ("log_level", "LOG_LEVEL", "--log-level", "LEVEL", "DEBUG, INFO, WARNING or ERROR (INFO)"),
    ("log_format", "LOG_FORMAT", "--log-format", "FORMAT", "text or json (text)"),
)
ENV_OF = {attr: env for attr, env, _, _, _ in SETTINGS}
# Larger batches gain nothing and hold a batch of results in memory.
MAX_BATCH_SIZE = 10_000_000


@dataclass(frozen=True)
class WorkerConfig:
    """Validated settings of one worker."""

    worker_id: int
    workers: int = 1
    params: int = 10_000
    params_explicit: bool = False
    space: str = ""
    task: str = "simulate"
    task_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 500
    output_dir: str = "./ttg-output"
    run_id: str = ""
    version: str = __version__
    only: str = ""
    failure_threshold: float = 0.0
    log_level: str = "INFO"
    log_format: str = "text"


def build_parser() -> argparse.ArgumentParser:
    """The ``ttg-worker`` argument parser; every flag defaults to its environment variable."""
    parser = argparse.ArgumentParser(
        prog="ttg-worker",
        description=(
            "Compute this worker's shard of a TTG parameter sweep in batches, write the "
            "results shard and print a JSON summary as the last stdout line. Settings come "
            "from the environment (docs/WORKER.md); flags override them."
        ),
    )
    for attr, env, flag, metavar, text in SETTINGS:
        parser.add_argument(
            flag, dest=attr, default=None, metavar=metavar, help=f"{text} [env {env}]"
        )
    parser.add_argument(
        "--list-tasks", action="store_true", help="print the built-in tasks and exit"
    )
    parser.add_argument("--version", action="version", version=f"ttg-worker {__version__}")
    return parser


def _int(name: str, raw: str, minimum: int, maximum: int | None = None) -> int:
    allowed = (
        f"an integer >= {minimum}"
        if maximum is None
        else f"an integer from {minimum} to {maximum:,}"
    )
    try:
        value = int(raw.strip())
    except ValueError:
        raise WorkerConfigError(f"{name}={raw!r} is not an integer; allowed: {allowed}") from None
    if value < minimum:
        raise WorkerConfigError(f"{name}={raw!r} is too small; allowed: {allowed}")
    if maximum is not None and value > maximum:
        raise WorkerConfigError(f"{name}={raw!r} is too large; allowed: {allowed}")
    return value


def load_config(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> WorkerConfig:
    """Merge flags over the environment and validate every setting."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    label = dict(ENV_OF)  # how messages name a setting: its flag when a flag set it
    for attr, name, flag, _, _ in SETTINGS:
        flag_value = getattr(args, attr, None) if args is not None else None
        if flag_value is not None:
            values[attr] = flag_value
            label[attr] = flag
        elif env.get(name, "").strip():
            values[attr] = env[name]

    workers = _int(label["workers"], values.get("workers", "1"), 1)
    if "worker_id" not in values:
        raise WorkerConfigError(
            "JOB_COMPLETION_INDEX is not set; set it (or pass --worker-id) to this worker's "
            f"index, an integer from 0 to {workers - 1}"
        )
    worker_id = _int(label["worker_id"], values["worker_id"], 0)
    if worker_id >= workers:
        raise WorkerConfigError(
            f"{label['worker_id']}={worker_id} is outside 0..{workers - 1} for "
            f"{label['workers']}={workers}"
        )

    options_text = values.get("task_options", "{}")
    try:
        options = json.loads(options_text)
    except ValueError as exc:
        raise WorkerConfigError(
            f"{label['task_options']}={options_text!r} is not valid JSON ({exc}); "
            'allowed: a JSON object such as {"cost_ms": 2.0}'
        ) from None
    if not isinstance(options, dict):
        raise WorkerConfigError(
            f"{label['task_options']}={options_text!r} must be a JSON object "
            'such as {"cost_ms": 2.0}'
        )

    threshold_text = values.get("failure_threshold", "0.0")
    try:
        threshold = float(threshold_text)
    except ValueError:
        threshold = -1.0
    if not 0.0 <= threshold <= 1.0:
        raise WorkerConfigError(
            f"{label['failure_threshold']}={threshold_text!r} is not allowed; "
            "allowed: a fraction from 0 to 1, such as 0.05"
        )

    from ttg_logging import LoggingConfigError, resolve_format, resolve_level

    try:
        level = resolve_level(values.get("log_level", "INFO"), label["log_level"])
        log_format = resolve_format(values.get("log_format", "text"), label["log_format"])
    except LoggingConfigError as exc:
        raise WorkerConfigError(str(exc)) from None

    task = values.get("task", "simulate").strip()
    # With a space file TTG_TOTAL_PARAMS is ignored; only the range space needs it >= 1.
    space_set = bool(values.get("space", "").strip())
    return WorkerConfig(
        worker_id=worker_id,
        workers=workers,
        params=_int(label["params"], values.get("params", "10000"), 0 if space_set else 1),
        params_explicit="params" in values,
        space=values.get("space", "").strip(),
        task=task,
        task_options=options,
        batch_size=_int(label["batch_size"], values.get("batch_size", "500"), 1, MAX_BATCH_SIZE),
        output_dir=values.get("output_dir", "./ttg-output"),
        run_id=values.get("run_id", "").strip(),
        version=values.get("version", __version__).strip(),
        only=values.get("only", "").strip(),
        failure_threshold=threshold,
        log_level=level,
        log_format=log_format,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)
