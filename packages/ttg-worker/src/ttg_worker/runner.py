"""One worker run: shard -> batches -> task -> results shard, events and the summary.

:func:`run` is the whole life of a worker after its settings are read and
logging is configured. The benchmark calls it in-process, so what it
measures is exactly the worker's code path.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from types import FrameType
from typing import Any

from loguru import logger
from ttg_logging import event, metric, progress, summary

from ttg_worker.config import WorkerConfig
from ttg_worker.errors import WorkerConfigError
from ttg_worker.results import ResultsWriter, encode, encode_unserialisable, recover, shard_path
from ttg_worker.sharding import parse_only, shard_bounds
from ttg_worker.spaces import load_space
from ttg_worker.tasks import check_options, resolve_task

BANNER_RULE = "=" * 70
_event = partial(event, module="main")
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds (``...T05:16:19.993+00:00``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Placement:
    """Where this worker runs: from the downward API on Kubernetes, else the hostname."""

    hostname: str
    pod_name: str
    node_name: str

    @classmethod
    def detect(cls) -> Placement:
        host = socket.gethostname()
        return cls(
            hostname=host,
            pod_name=os.environ.get("POD_NAME") or host,
            node_name=os.environ.get("NODE_NAME") or host,
        )


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the batch loop checks after every parameter.

    The first signal asks for a graceful stop; the handler then falls back to
    the default action, so a second signal ends the process at once. The
    handler only sets a number: logging from a signal handler could deadlock.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        signal.signal(signum, signal.SIG_DFL)


@dataclass
class Tally:
    """Counts and timings of the batch loop."""

    shard_size: int = 0
    skipped: int = 0
    processed: int = 0
    failed: int = 0
    batch_times: list[float] = field(default_factory=list)
    duration: float = 0.0

    def batch_stats(self) -> dict[str, Any]:
        times = self.batch_times
        return {
            "total_batches": len(times),
            "avg_batch_time": round(sum(times) / len(times), 3) if times else 0.0,
            "min_batch_time": round(min(times), 3) if times else 0.0,
            "max_batch_time": round(max(times), 3) if times else 0.0,
        }

    @property
    def rate(self) -> float:
        return self.processed / self.duration if self.duration > 0 else 0.0


def _banner(config: WorkerConfig, placement: Placement) -> None:
    log = logger.bind(module="main")
    log.info(BANNER_RULE)
    log.info(f"TTG Distributed Worker v{config.version}")
    log.info(f"Timestamp: {datetime.now(UTC).isoformat()}")
    log.info(f"Hostname: {placement.hostname}")
    log.info(f"Pod: {placement.pod_name}")
    log.info(f"Node: {placement.node_name}")
    log.info(BANNER_RULE)


def _process(
    config: WorkerConfig,
    todo: Iterator[int],
    space: Any,
    task: Any,
    writer: ResultsWriter,
    stop: StopRequest,
    tally: Tally,
) -> None:
    """The batch loop: compute, write and fsync a batch, then report PROGRESS."""
    options = config.task_options
    log = logger.bind(module="processor")
    started = time.perf_counter()
    try:
        while not stop.signum:
            batch = list(islice(todo, config.batch_size))
            if not batch:
                break
            batch_start = time.perf_counter()
            lines: list[str] = []
            failed = 0
            for index in batch:
                param = space[index]
                error = None
                try:
                    value = task(param, **options) if options else task(param)
                except Exception as exc:  # a failing parameter is recorded, not fatal
                    value = None
                    error = f"{type(exc).__name__}: {exc}"
                    failed += 1
                try:
                    lines.append(encode(index, param, value, error))
                except (TypeError, ValueError) as exc:
                    lines.append(encode_unserialisable(index, param, value, exc))
                    failed += error is None
                if stop.signum:
                    break
            writer.write_batch(lines)
            batch_time = time.perf_counter() - batch_start
            tally.processed += len(lines)
            tally.failed += failed
            tally.batch_times.append(batch_time)
            if failed:
                log.debug(f"Batch {len(tally.batch_times)} recorded {failed} failed parameters.")
            progress(
                tally.skipped + tally.processed,
                tally.shard_size,
                batch_time,
                len(lines) / batch_time if batch_time > 0 else 0.0,
                module="processor",
            )
    finally:
        tally.duration = time.perf_counter() - started


def run(config: WorkerConfig, *, install_signals: bool = True) -> int:
    """Run the worker described by ``config``; return its exit code.

    Logging must already be configured. A bad setting found here (space
    file, task, TTG_ONLY, output directory) raises WorkerConfigError before
    any parameter is computed.
    """
    log = logger.bind(module="main")
    started_at = utc_now()
    placement = Placement.detect()
    stop = StopRequest()
    if install_signals:
        stop.install()

    try:
        _banner(config, placement)
        _event(
            "STARTING",
            f"Worker {config.worker_id} of {config.workers} is starting task {config.task!r}.",
            module="main",
            task=config.task,
            workers=config.workers,
            run_id=config.run_id,
        )
        return _run(config, placement, started_at, stop)
    finally:
        stop.restore()


def _run(config: WorkerConfig, placement: Placement, started_at: str, stop: StopRequest) -> int:
    log = logger.bind(module="main")
    shard_log = logger.bind(module="shard")

    space = load_space(config.space, config.params)
    if config.space and config.params_explicit:
        log.info(
            f"TTG_TOTAL_PARAMS={config.params} is ignored: the {space.kind} space "
            f"{config.space} defines {len(space)} parameters."
        )
    selection = parse_only(config.only, len(space))
    task = resolve_task(config.task)
    check_options(task, config.task, config.task_options)

    start, end = shard_bounds(config.worker_id, config.workers, len(selection))
    path = shard_path(config.output_dir, config.worker_id)
    try:
        done, cut = recover(path)
    except OSError as exc:
        raise WorkerConfigError(
            f"TTG_OUTPUT_DIR={config.output_dir!r}: cannot read the existing results shard "
            f"{path} ({type(exc).__name__}: {exc})"
        ) from None
    writer = ResultsWriter(path)

    tally = Tally(shard_size=end - start)
    if cut:
        shard_log.warning(f"Discarded a torn last line ({cut} bytes) of the results shard {path}.")
    if done:
        tally.skipped = sum(1 for index in selection.indexes(start, end) if index in done)
        stray = len(done) - tally.skipped
        shard_log.info(
            f"Resuming from {path}: {tally.skipped} of {tally.shard_size} parameters are "
            "already done and will be skipped."
        )
        if stray:
            shard_log.warning(
                f"The results shard {path} holds {stray} indexes outside this worker's shard; "
                "they are kept but ignored."
            )

    space_text = f"{space.kind} space" + (f" {config.space}" if config.space else "")
    only_text = f" restricted by TTG_ONLY={config.only}" if config.only else ""
    _event(
        "INITIALIZED",
        f"Worker {config.worker_id} owns positions {start}..{end} ({tally.shard_size} "
        f"parameters) of {len(selection)} selected from the {space_text} of {len(space)} "
        f"parameters{only_text}; results go to {path}.",
        range_start=start,
        range_end=end,
        shard_size=tally.shard_size,
        total_params=len(selection),
        space=space.kind,
        batch_size=config.batch_size,
        skipped=tally.skipped,
    )

    indexes = selection.indexes(start, end)
    todo = (index for index in indexes if index not in done) if done else indexes
    _event(
        "RUNNING",
        f"Processing {tally.shard_size - tally.skipped} parameters in batches of "
        f"{config.batch_size} with task {config.task!r}.",
    )

    error: str | None = None
    try:
        _process(config, todo, space, task, writer, stop, tally)
    except Exception as exc:  # anything else is a bug or an environment failure: report it
        error = f"{type(exc).__name__}: {exc}"
        log.opt(exception=exc).error(f"Worker {config.worker_id} stopped on an unexpected error.")
    finally:
        writer.close()

    for name, value, unit in (
        ("processed_count", tally.processed, "params"),
        ("failed_count", tally.failed, "params"),
        ("duration", tally.duration, "seconds"),
        ("throughput", tally.rate, "params/sec"),
        ("avg_batch_time", tally.batch_stats()["avg_batch_time"], "seconds"),
    ):
        metric(name, value, unit, module="main")

    status, exit_code = STATUS_COMPLETED, 0
    if stop.signum:
        status, exit_code = STATUS_INTERRUPTED, 128 + stop.signum
        _event(
            "INTERRUPTED",
            f"Worker {config.worker_id} stopped on {signal.Signals(stop.signum).name} after "
            f"{tally.processed} parameters; restart it with the same output to resume.",
            signal=signal.Signals(stop.signum).name,
        )
    elif error is not None:
        status, exit_code = STATUS_FAILED, 1
        _event("FAILED", f"Worker {config.worker_id} failed: {error}", error=error)
    elif tally.processed and tally.failed / tally.processed > config.failure_threshold:
        status, exit_code = STATUS_FAILED, 1
        _event(
            "FAILED",
            f"{tally.failed} of {tally.processed} parameters failed "
            f"({100.0 * tally.failed / tally.processed:.1f}%), above the failure threshold "
            f"of {100.0 * config.failure_threshold:.1f}%; see the errors in {path}.",
            error="failure threshold exceeded",
        )
    else:
        if tally.failed:
            log.warning(
                f"{tally.failed} of {tally.processed} parameters failed, within the failure "
                f"threshold of {100.0 * config.failure_threshold:.1f}%."
            )
        _event(
            "COMPLETED",
            f"Worker {config.worker_id} finished {tally.skipped + tally.processed} of "
            f"{tally.shard_size} parameters in {tally.duration:.2f}s.",
        )

    summary(
        {
            "worker_id": config.worker_id,
            "status": status,
            "version": config.version,
            "hostname": placement.hostname,
            "pod_name": placement.pod_name,
            "node_name": placement.node_name,
            "range_start": start,
            "range_end": end,
            "processed_count": tally.processed,
            "duration_seconds": round(tally.duration, 3),
            "params_per_second": round(tally.rate, 2),
            "batch_stats": tally.batch_stats(),
            "run_id": config.run_id,
            "task": config.task,
            "failed_count": tally.failed,
            "skipped_count": tally.skipped,
            "total_params": len(selection),
            "started_at": started_at,
            "finished_at": utc_now(),
            "results_path": str(path.resolve()),
            "exit_code": exit_code,
        },
        module="main",
    )
    return exit_code
