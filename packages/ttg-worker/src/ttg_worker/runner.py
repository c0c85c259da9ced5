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
from pathlib import Path
from types import FrameType
from typing import Any

from loguru import logger
from ttg_logging import event, metric, progress, summary

from ttg_worker.config import WorkerConfig
from ttg_worker.errors import WorkerConfigError
from ttg_worker.results import (
    ResultsWriter,
    check_fingerprint,
    encode,
    encode_unserialisable,
    file_digest,
    meta_path,
    scan,
    shard_path,
)
from ttg_worker.sharding import Selection, parse_only, shard_bounds
from ttg_worker.spaces import Space, load_space
from ttg_worker.tasks import Task, check_options, resolve_task

BANNER_RULE = "=" * 70
_event = partial(event, module="main")
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"


def _describe(exc: BaseException) -> str:
    """``ExcType: message``, or just ``ExcType`` when the message is empty."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    resumed_failed: int = 0  # skipped parameters whose recorded result is an error
    batch_times: list[float] = field(default_factory=list)
    duration: float = 0.0
    signum: int = 0
    error: str | None = None

    def batch_stats(self) -> dict[str, Any]:
        times = self.batch_times
        return {
            "total_batches": len(times),
            "avg_batch_time": round(sum(times) / len(times), 3) if times else 0.0,
            "min_batch_time": round(min(times), 3) if times else 0.0,
            "max_batch_time": round(max(times), 3) if times else 0.0,
        }

    @property
    def total_failed(self) -> int:
        """Failed parameters of the shard: computed now plus those found errored on resume."""
        return self.failed + self.resumed_failed

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


@dataclass
class Shard:
    """What one worker computes: the prepared space, task, selection slice and output."""

    space: Space
    task: Task
    selection: Selection
    start: int
    end: int
    writer: ResultsWriter
    done: set[int]

    def todo(self) -> Iterator[int]:
        """Global indexes of the shard not yet in the results shard, in order."""
        indexes = self.selection.indexes(self.start, self.end)
        if not self.done:
            return indexes
        done = self.done
        return (index for index in indexes if index not in done)


def prepare(config: WorkerConfig) -> tuple[Shard, Tally]:
    """Load the space, resolve the task, cut the shard and open its results file.

    Raises WorkerConfigError for a bad space file, task, task options,
    TTG_ONLY or output directory, before anything is computed.
    """
    log = logger.bind(module="shard")
    task = resolve_task(config.task)
    check_options(task, config.task, config.task_options)
    space = load_space(config.space, config.params)
    if config.space and config.params_explicit:
        log.info(
            f"TTG_TOTAL_PARAMS={config.params} is ignored: the {space.kind} space "
            f"{config.space} defines {len(space)} parameters."
        )
    selection = parse_only(config.only, len(space))

    start, end = shard_bounds(config.worker_id, config.workers, len(selection))
    path = shard_path(config.output_dir, config.worker_id)
    try:
        done, errored, cut = scan(path)
    except OSError as exc:
        raise WorkerConfigError(
            f"TTG_OUTPUT_DIR={config.output_dir!r}: cannot read the existing results shard "
            f"{path} ({type(exc).__name__}: {exc})"
        ) from None
    fingerprint = _fingerprint(config, len(space), len(selection))
    writer = ResultsWriter(path)
    try:
        check_fingerprint(meta_path(config.output_dir, config.worker_id), path, fingerprint)
    except BaseException:
        writer.close()
        raise
    shard = Shard(space, task, selection, start, end, writer, done)
    tally = Tally(shard_size=end - start)

    if cut:
        log.warning(f"Discarded a torn last line ({cut} bytes) of the results shard {path}.")
    if done:
        tally.skipped = sum(1 for index in selection.indexes(start, end) if index in done)
        if errored:
            tally.resumed_failed = sum(
                1 for index in selection.indexes(start, end) if index in errored
            )
        log.info(
            f"Resuming from {path}: {tally.skipped} of {tally.shard_size} parameters are "
            f"already done and will be skipped ({tally.resumed_failed} of them recorded an "
            "error and count as failed)."
        )
        stray = len(done) - tally.skipped
        if stray:
            log.warning(
                f"The results shard {path} holds {stray} indexes outside this worker's shard; "
                "they are kept and ignored."
            )
    return shard, tally


def _fingerprint(config: WorkerConfig, space_size: int, total_params: int) -> dict[str, Any]:
    """What decides the values in this worker's shard: a resume must compute the same."""
    try:
        space_digest = file_digest(config.space) if config.space else None
    except OSError as exc:
        raise WorkerConfigError(
            f"TTG_SPACE={config.space!r}: cannot read the space file ({type(exc).__name__}: {exc})"
        ) from None
    return {
        "task": config.task,
        "task_options": config.task_options,
        "space": config.space,
        "space_digest": space_digest,
        "space_size": space_size,
        "only": config.only,
        "workers": config.workers,
        "total_params": total_params,
        "index": config.worker_id,
    }


def process(
    shard: Shard, tally: Tally, batch_size: int, options: dict[str, Any], stop: StopRequest
) -> None:
    """The batch loop: compute a batch, write and flush it, then report PROGRESS.

    A task that raises records ``"ExcType: message"`` for that parameter and
    the loop goes on. The stop flag is checked after every parameter.
    """
    log = logger.bind(module="processor")
    space, task, writer = shard.space, shard.task, shard.writer
    todo = shard.todo()
    started = time.perf_counter()
    try:
        while not stop.signum:
            batch = list(islice(todo, batch_size))
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
                    error = _describe(exc)
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

    Logging must already be configured. A bad setting found while preparing
    (space file, task, TTG_ONLY, output directory) raises WorkerConfigError
    before any parameter is computed; everything after ends in a summary.
    """
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
            task=config.task,
            workers=config.workers,
            run_id=config.run_id,
        )
        try:
            shard, tally = prepare(config)
        except WorkerConfigError:
            raise
        except Exception as exc:  # a bug or an environment failure: still end with a summary
            tally = Tally(error=_unexpected(config, exc, "while preparing its shard"))
            return _finish(config, placement, started_at, None, tally)
        try:
            _announce(config, shard, tally)
            tally.error = _guarded_process(config, shard, tally, stop)
        finally:
            shard.writer.close()
        # A signal that arrives once every parameter is done interrupts nothing.
        if tally.skipped + tally.processed < tally.shard_size:
            tally.signum = stop.signum
        return _finish(config, placement, started_at, shard, tally)
    finally:
        stop.restore()


def _announce(config: WorkerConfig, shard: Shard, tally: Tally) -> None:
    space_text = f"{shard.space.kind} space" + (f" {config.space}" if config.space else "")
    only_text = f" restricted by TTG_ONLY={config.only}" if config.only else ""
    _event(
        "INITIALIZED",
        f"Worker {config.worker_id} owns positions {shard.start}..{shard.end} "
        f"({tally.shard_size} parameters) of {len(shard.selection)} selected from the "
        f"{space_text} of {len(shard.space)} parameters{only_text}; results go to "
        f"{shard.writer.path}.",
        range_start=shard.start,
        range_end=shard.end,
        shard_size=tally.shard_size,
        total_params=len(shard.selection),
        space=shard.space.kind,
        batch_size=config.batch_size,
        skipped=tally.skipped,
    )
    _event(
        "RUNNING",
        f"Processing {tally.shard_size - tally.skipped} parameters in batches of "
        f"{config.batch_size} with task {config.task!r}.",
    )


def _guarded_process(
    config: WorkerConfig, shard: Shard, tally: Tally, stop: StopRequest
) -> str | None:
    """Run the batch loop; return the unexpected error that stopped it, if any."""
    try:
        process(shard, tally, config.batch_size, config.task_options, stop)
    except Exception as exc:  # a bug or an environment failure (disk full): report it
        return _unexpected(
            config, exc, f"; the results written so far in {shard.writer.path} are kept"
        )
    return None


def _unexpected(config: WorkerConfig, exc: Exception, context: str) -> str:
    """Log an unexpected error with its traceback; return its one-line description."""
    separator = "" if context.startswith(";") else " "
    logger.bind(module="main").opt(exception=exc).error(
        f"Worker {config.worker_id} stopped on an unexpected error{separator}{context}."
    )
    return _describe(exc)


def _finish(
    config: WorkerConfig,
    placement: Placement,
    started_at: str,
    shard: Shard | None,
    tally: Tally,
) -> int:
    """Log the metrics and the final event, print the summary; return the exit code.

    ``shard`` is None when preparing it failed; its fields are then null.
    """
    path = shard_path(config.output_dir, config.worker_id)
    for name, value, unit in (
        ("processed_count", tally.processed, "params"),
        ("failed_count", tally.total_failed, "params"),
        ("duration", tally.duration, "seconds"),
        ("throughput", tally.rate, "params/sec"),
        ("avg_batch_time", tally.batch_stats()["avg_batch_time"], "seconds"),
    ):
        metric(name, value, unit, module="main")

    status, exit_code = _outcome(config, path, tally)
    summary(
        {
            "worker_id": config.worker_id,
            "status": status,
            "version": config.version,
            "hostname": placement.hostname,
            "pod_name": placement.pod_name,
            "node_name": placement.node_name,
            "range_start": shard.start if shard else None,
            "range_end": shard.end if shard else None,
            "processed_count": tally.processed,
            "duration_seconds": round(tally.duration, 3),
            "params_per_second": round(tally.rate, 2),
            "batch_stats": tally.batch_stats(),
            "run_id": config.run_id,
            "task": config.task,
            "failed_count": tally.total_failed,
            "resumed_failed_count": tally.resumed_failed,
            "skipped_count": tally.skipped,
            "total_params": len(shard.selection) if shard else None,
            "space_size": len(shard.space) if shard else None,
            "started_at": started_at,
            "finished_at": utc_now(),
            "results_path": str(path.resolve()),
            "exit_code": exit_code,
        },
        module="main",
    )
    return exit_code


def _outcome(config: WorkerConfig, path: Path, tally: Tally) -> tuple[str, int]:
    """Log the final lifecycle event; return the summary status and the exit code."""
    worker = f"Worker {config.worker_id}"
    signum, error = tally.signum, tally.error
    if signum:
        name = signal.Signals(signum).name
        _event(
            "INTERRUPTED",
            f"{worker} stopped on {name} after {tally.processed} parameters; the results are "
            "flushed, restart it with the same output directory to resume.",
            signal=name,
        )
        return STATUS_INTERRUPTED, 128 + signum
    if error is not None:
        _event("FAILED", f"{worker} failed: {error}", error=error)
        return STATUS_FAILED, 1

    # Errors found on resume count: a retried worker must not turn failures into success.
    failed = tally.total_failed
    accounted = tally.processed + tally.skipped
    ratio = failed / accounted if accounted else 0.0
    threshold = f"{100.0 * config.failure_threshold:.1f}%"
    resumed = (
        f" ({tally.resumed_failed} recorded by an earlier attempt)" if tally.resumed_failed else ""
    )
    if ratio > config.failure_threshold:
        _event(
            "FAILED",
            f"{failed} of {accounted} parameters failed{resumed} ({100.0 * ratio:.1f}%), "
            f"above the failure threshold of {threshold}; the errors are in "
            f"{path}.",
            error="failure threshold exceeded",
        )
        return STATUS_FAILED, 1
    if failed:
        logger.bind(module="main").warning(
            f"{failed} of {accounted} parameters failed{resumed}, within the failure "
            f"threshold of {threshold}; the errors are in {path}."
        )
    _event(
        "COMPLETED",
        f"{worker} finished {tally.skipped + tally.processed} of {tally.shard_size} "
        f"parameters in {tally.duration:.2f}s.",
    )
    return STATUS_COMPLETED, 0
