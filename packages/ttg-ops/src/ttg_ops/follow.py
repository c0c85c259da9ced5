"""Live progress from parsed worker events, for every backend.

:class:`Tracker` holds the state: it consumes ``(index, Event)`` pairs (from
:func:`ttg_logging.grammar.parse_line`) and exposes per-worker and overall
processed/total, rate and ETA. It never renders anything, so the Kubernetes
follower and the local runner share it. Rendering lives apart:
:class:`LiveView` drives a rich ``Progress`` (a row per worker and an overall
row) on a terminal, and :class:`PlainView` prints one plain status line at
a fixed interval when the output is not a terminal (CI logs, pipes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text
from ttg_logging.grammar import PROGRESS, SUMMARY, Event

# Worker phases shown in the display.
WAITING = "waiting"
ACTIVE = "running"
DONE = "done"
FAILED = "failed"


@dataclass
class WorkerProgress:
    """What the display knows about one worker."""

    index: int
    processed: int = 0
    total: int | None = None
    phase: str = WAITING
    first_seen: float | None = None
    updated: float | None = None
    finished: float | None = None
    last_rate: float | None = None

    def rate(self, now: float) -> float | None:
        """Parameters per second since the worker's first line (``None`` before any progress)."""
        if self.first_seen is None or self.processed == 0:
            return None
        end = self.finished if self.finished is not None else (self.updated or now)
        elapsed = end - self.first_seen
        if elapsed <= 0:
            return self.last_rate
        return self.processed / elapsed

    def eta(self, now: float) -> float | None:
        """Seconds left at the current rate (0 when done, ``None`` when unknown)."""
        if self.phase in (DONE, FAILED):
            return 0.0
        rate = self.rate(now)
        if self.total is None or not rate:
            return None
        # Count down between events: the estimate was made at the last update.
        since = now - self.updated if self.updated is not None else 0.0
        return max(max(self.total - self.processed, 0) / rate - since, 0.0)


class Tracker:
    """Per-worker and overall progress, fed with ``(index, Event)`` pairs.

    ``totals`` are the expected shard sizes (known before any event arrives
    from the spec); a PROGRESS event's ``total`` replaces them. ``clock``
    returns seconds (monotonic by default); ``update`` takes ``at`` to replay
    events with their own timestamps (for logs read after the fact).
    """

    def __init__(
        self,
        workers: int,
        totals: list[int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.started = clock()
        self.workers = [WorkerProgress(index=i) for i in range(workers)]
        if totals is not None:
            for worker, total in zip(self.workers, totals, strict=False):
                worker.total = total

    def _worker(self, index: int) -> WorkerProgress:
        while index >= len(self.workers):
            self.workers.append(WorkerProgress(index=len(self.workers)))
        return self.workers[index]

    def seen(self, index: int, at: float | None = None) -> None:
        """Note that worker ``index`` printed something (it is alive)."""
        now = self.clock() if at is None else at
        worker = self._worker(index)
        if worker.first_seen is None:
            worker.first_seen = now
        if worker.phase == WAITING:
            worker.phase = ACTIVE

    def update(self, index: int, event: Event, at: float | None = None) -> None:
        """Fold one parsed event of worker ``index`` into the state."""
        now = self.clock() if at is None else at
        self.seen(index, now)
        worker = self._worker(index)
        fields = event.fields
        if event.kind == PROGRESS:
            processed = fields.get("processed")
            total = fields.get("total")
            if isinstance(processed, int):
                worker.processed = max(worker.processed, processed)
            if isinstance(total, int):
                worker.total = total
            rate = fields.get("rate")
            if isinstance(rate, int | float):
                worker.last_rate = float(rate)
            worker.updated = now
        elif event.kind == SUMMARY:
            processed = fields.get("processed_count")
            if isinstance(processed, int):
                worker.processed = processed
            start, end = fields.get("range_start"), fields.get("range_end")
            if isinstance(start, int) and isinstance(end, int):
                worker.total = end - start
            worker.phase = DONE if fields.get("status") == "completed" else FAILED
            worker.finished = now
            worker.updated = now

    def finish(self, index: int, ok: bool, at: float | None = None) -> None:
        """Mark worker ``index`` as ended (its process, container or pod exited)."""
        now = self.clock() if at is None else at
        worker = self._worker(index)
        if worker.phase not in (DONE, FAILED):
            worker.phase = DONE if ok else FAILED
        if worker.finished is None:
            worker.finished = now
        if not ok:
            worker.phase = FAILED

    @property
    def processed(self) -> int:
        return sum(w.processed for w in self.workers)

    @property
    def total(self) -> int | None:
        totals = [w.total for w in self.workers]
        if any(t is None for t in totals):
            return None
        return sum(t for t in totals if t is not None)

    @property
    def done(self) -> bool:
        return all(w.phase in (DONE, FAILED) for w in self.workers)

    def rate(self, now: float | None = None) -> float | None:
        """Overall parameters per second since the tracker started."""
        now = self.clock() if now is None else now
        ends = [w.finished for w in self.workers]
        end = max(e for e in ends if e is not None) if self.done and any(ends) else now
        elapsed = (end or now) - self.started
        if self.processed == 0 or elapsed <= 0:
            return None
        return self.processed / elapsed

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until the slowest running worker is done, at each worker's rate."""
        now = self.clock() if now is None else now
        etas = [w.eta(now) for w in self.workers]
        if any(e is None for e in etas):
            rate, total = self.rate(now), self.total
            if not rate or total is None:
                return None
            return max(total - self.processed, 0) / rate
        return max((e for e in etas if e is not None), default=0.0)

    def status_line(self, now: float | None = None) -> str:
        """One plain line: overall counts, rate and ETA, then each worker's percent."""
        now = self.clock() if now is None else now
        total = self.total
        parts = [f"overall {self.processed:,}/{_count(total)}{_percent(self.processed, total)}"]
        parts.append(f"{_rate(self.rate(now))}, eta {_eta(self.eta(now))}")
        for worker in self.workers:
            parts.append(
                f"worker-{worker.index} {worker.processed:,}/{_count(worker.total)} {worker.phase}"
            )
        return "; ".join(parts)


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _percent(done: int, total: int | None) -> str:
    return f" ({100.0 * done / total:.1f}%)" if total else ""


def _rate(value: float | None) -> str:
    return "- params/s" if value is None else f"{value:,.0f} params/s"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}:{secs:02d}" if minutes else f"{secs}s"


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


class TrackerColumn(ProgressColumn):
    """A progress column that reads ``rate``, ``eta`` or ``phase`` from the Tracker when drawn.

    A task's ``worker`` field is its worker index, or ``None`` for the overall row.
    """

    def __init__(self, tracker: Tracker, what: str) -> None:
        super().__init__()
        self.tracker = tracker
        self.what = what

    def render(self, task: Task) -> Text:
        index = task.fields.get("worker")
        now = self.tracker.clock()
        if index is None:
            rate, eta = self.tracker.rate(now), self.tracker.eta(now)
            phase = DONE if self.tracker.done else ""
        else:
            worker = self.tracker.workers[index]
            rate, eta, phase = worker.rate(now), worker.eta(now), worker.phase
        if self.what == "rate":
            return Text(_rate(rate), justify="right")
        if self.what == "eta":
            return Text(f"eta {_eta(eta)}", justify="right")
        return Text(phase, style={DONE: "green", FAILED: "red"}.get(phase, ""))


class LiveView:
    """A rich ``Progress`` with a row per worker and an overall row, fed from a Tracker.

    Use as a context manager; call :meth:`refresh` after updating the
    tracker. Rate, ETA and phase are read from the tracker each time rich
    redraws (``refresh_per_second``), so they stay current between events.
    :meth:`log` prints a line above the display.
    """

    def __init__(self, tracker: Tracker, console: Any, refresh_per_second: float = 4) -> None:
        self.tracker = tracker
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TrackerColumn(tracker, "rate"),
            TrackerColumn(tracker, "eta"),
            TrackerColumn(tracker, "phase"),
            console=console,
            refresh_per_second=refresh_per_second,
            expand=True,
        )
        self.rows: list[Any] = []
        self.overall = self.progress.add_task("overall", total=tracker.total, worker=None)

    def __enter__(self) -> LiveView:
        self.refresh()
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.refresh()
        self.progress.stop()

    def log(self, index: int, line: str) -> None:
        """Print a worker's line, prefixed ``[worker-i]``, above the display."""
        self.progress.console.print(Text(f"[worker-{index}] {line}"), highlight=False)

    def refresh(self) -> None:
        """Copy the tracker's counts into the progress rows."""
        for worker in self.tracker.workers[len(self.rows) :]:
            self.rows.append(
                self.progress.add_task(
                    f"worker-{worker.index}", total=worker.total, worker=worker.index
                )
            )
        for task_id, worker in zip(self.rows, self.tracker.workers, strict=False):
            self.progress.update(task_id, completed=worker.processed, total=worker.total)
        self.progress.update(
            self.overall, completed=self.tracker.processed, total=self.tracker.total
        )


class PlainView:
    """Plain status lines every ``interval`` seconds, for output that is not a terminal.

    A daemon thread prints :meth:`Tracker.status_line` at the interval, so a
    quiet phase (long batches) still shows that the run is alive.
    """

    def __init__(self, tracker: Tracker, console: Any, interval: float = 5.0) -> None:
        self.tracker = tracker
        self.console = console
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="ttg-status", daemon=True)

    def __enter__(self) -> PlainView:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)
        self._print()

    def _print(self) -> None:
        self.console.print(self.tracker.status_line(), highlight=False, markup=False)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._print()

    def log(self, index: int, line: str) -> None:
        """Print a worker's line, prefixed ``[worker-i]``."""
        self.console.print(f"[worker-{index}] {line}", highlight=False, markup=False)

    def refresh(self) -> None:
        """Nothing to do: the status thread reads the tracker itself."""


def make_view(
    tracker: Tracker, console: Any, refresh_per_second: float = 4, plain_interval: float = 5.0
) -> LiveView | PlainView:
    """A live rich display on an interactive terminal, plain periodic lines otherwise."""
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveView(tracker, console, refresh_per_second)
    return PlainView(tracker, console, plain_interval)
