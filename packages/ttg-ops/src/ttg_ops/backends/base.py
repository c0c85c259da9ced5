"""What every backend provides to the runner, the live display and the report."""

from __future__ import annotations

from collections.abc import Iterator
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
