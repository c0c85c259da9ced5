"""What every backend provides to the runner, the live display and the report."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ttg_ops.spec import RunSpec

# Worker states, the same words for processes, containers and pods.
PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
MISSING = "missing"
STATES = (PENDING, RUNNING, SUCCEEDED, FAILED, MISSING)
# How many of each worker's last lines a backend keeps for its state and the report.
LAST_LINES = 50


@dataclass
class WorkerState:
    """Where and how one worker index ran, as its backend saw it.

    Times are UNIX timestamps (seconds); ``name`` is the process, container
    or pod name and ``node`` the host or Kubernetes node it ran on.
    """

    index: int
    state: str = PENDING
    name: str = ""
    node: str = ""
    exit_code: int | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    message: str = ""
    last_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backend(Protocol):
    """A place to run workers: local processes, Docker containers or pods."""

    name: str

    def launch(self, spec: RunSpec, run_dir: Path) -> None:
        """Start one worker per index; results go under ``run_dir / "results"``."""

    def lines(self) -> Iterator[tuple[int, str]]:
        """Yield ``(worker index, stdout line)`` as lines arrive; end when all workers ended."""

    def states(self) -> list[WorkerState]:
        """The current state of every worker index, ordered by index."""

    def stop(self) -> None:
        """Ask every worker to stop (SIGTERM), then remove what the backend started."""


class LineStreams:
    """The output lines of many workers, merged into one stream of ``(index, line)``.

    :meth:`follow` starts one daemon thread per worker that reads its lines,
    keeps the last ``last_lines`` of them and puts ``(index, line)`` on a
    queue; :meth:`lines` drains that queue until every followed stream has
    ended. Local processes and Docker containers share this machinery; each
    backend supplies how to read its lines and what to record when they end.
    """

    def __init__(self, last_lines: int = LAST_LINES) -> None:
        self.last_lines = last_lines
        self._tails: list[deque[str]] = []
        self._queue: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._open = 0
        self._lock = threading.Lock()

    def reset(self, workers: int) -> None:
        """Start empty last-lines buffers for worker indexes ``0 .. workers - 1``."""
        self._tails = [deque(maxlen=self.last_lines) for _ in range(workers)]

    def follow(
        self,
        index: int,
        name: str,
        lines: Iterable[str],
        on_end: Callable[[], None] | None = None,
    ) -> None:
        """Read worker ``index``'s ``lines`` on a daemon thread called ``name``.

        ``lines`` is iterated on that thread (a generator may open its stream
        there). When it is exhausted or raises, ``on_end`` records how the
        worker ended, and only then does the stream count as closed.
        """
        thread = threading.Thread(
            target=self._read, args=(index, lines, on_end), name=name, daemon=True
        )
        with self._lock:
            self._open += 1
            self._threads.append(thread)
        thread.start()

    def lines(self, timeout: float | None = None) -> Iterator[tuple[int, str]]:
        """Yield ``(index, line)`` as lines arrive; end when every followed stream has ended.

        With ``timeout``, give up waiting for the next line after that many
        seconds (the generator then ends although streams are still open).
        """
        while True:
            with self._lock:
                if self._open == 0 and self._queue.empty():
                    return
            try:
                index, line = self._queue.get(timeout=timeout if timeout is not None else 0.25)
            except queue.Empty:
                if timeout is not None:
                    return
                continue
            if line is not None:
                yield index, line

    def with_tails(self, states: list[WorkerState]) -> list[WorkerState]:
        """``states`` (one per index, in order) with their last lines filled in."""
        for state, tail in zip(states, self._tails, strict=True):
            state.last_lines = list(tail)
        return list(states)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for each reader thread to finish."""
        for thread in list(self._threads):
            thread.join(timeout=timeout)

    def _read(self, index: int, lines: Iterable[str], on_end: Callable[[], None] | None) -> None:
        tail = self._tails[index]
        try:
            for line in lines:
                tail.append(line)
                self._queue.put((index, line))
        finally:
            if on_end is not None:
                on_end()
            with self._lock:
                self._open -= 1
            self._queue.put((index, None))
