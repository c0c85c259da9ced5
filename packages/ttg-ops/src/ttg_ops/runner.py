"""Carry out one run on any backend: launch, follow live, report, merge the results.

:func:`run` works with every :class:`ttg_ops.backends.base.Backend`: it
launches the workers, parses each stdout line with the shared grammar into a
:class:`ttg_ops.follow.Tracker` behind a live display, and when the workers
have ended (or the user pressed Ctrl-C) it writes ``report.json``, merges
the results shards of the run's lineage and writes the report again with
the merge accounting. :func:`rerun_failed` builds the follow-up spec of a
finished run and carries it out the same way.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger
from ttg_logging.grammar import parse_line

from ttg_ops.backends.base import FAILED, MISSING, PENDING, RUNNING, Backend
from ttg_ops.errors import ConfigError
from ttg_ops.report import (
    attach_results,
    build_report,
    load_report,
    mark_latest,
    report_needs,
    write_report,
)
from ttg_ops.results import (
    MergeResult,
    count_ranges,
    merge_results,
    parse_ranges,
    rerun_spec,
    selected_ranges,
    shard_bounds,
    spec_space_size,
)
from ttg_ops.spec import MAX_LOCAL_WORKERS, RunSpec

if TYPE_CHECKING:
    from rich.console import Console

    from ttg_ops.follow import Tracker

# Called with (backend, index, line) for every worker line: failure drills and tests.
LineHook = Callable[[Backend, int, str], None]
STATE_POLL_SECONDS = 0.5


def shard_totals(spec: RunSpec) -> list[int] | None:
    """Each worker's expected shard size, or ``None`` when the space size is unknown."""
    size = spec_space_size(spec)
    if size is None:
        return None
    total = count_ranges(selected_ranges(spec, size))
    return [
        end - start
        for start, end in (shard_bounds(total, spec.workers, i) for i in range(spec.workers))
    ]


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM to the runner like Ctrl-C, so the workers are stopped and reported."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class _Follower:
    """What the runner keeps while it reads a backend's lines."""

    backend: Backend
    tracker: Tracker
    view: Any
    show_logs: bool
    lines: dict[int, list[str]]

    def consume(self, on_line: LineHook | None) -> None:
        """Read every line until the backend has no more; feed the tracker and the view."""
        next_poll = 0.0
        for index, line in self.backend.lines():
            event = parse_line(line)
            # Only the lines the report reads are kept whole (a DEBUG run can print millions).
            self.lines.setdefault(index, []).append(line if report_needs(line, event) else "")
            if event is not None:
                self.tracker.update(index, event)
            else:
                self.tracker.seen(index)
            if self.show_logs:
                self.view.log(index, line)
            if on_line is not None:
                on_line(self.backend, index, line)
            now = time.monotonic()
            if now >= next_poll:
                _sync_states(self.backend, self.tracker)
                next_poll = now + STATE_POLL_SECONDS
            self.view.refresh()
        _sync_states(self.backend, self.tracker)
        self.view.refresh()


def _sync_states(backend: Backend, tracker: Tracker) -> None:
    for state in backend.states():
        if state.state not in (PENDING, RUNNING):
            tracker.finish(state.index, ok=state.state not in (FAILED, MISSING))


def run(
    spec: RunSpec,
    backend: Backend,
    run_dir: Path,
    *,
    show_logs: bool = False,
    console: Console | None = None,
    on_line: LineHook | None = None,
    refresh_per_second: float = 4,
    plain_interval: float = 5.0,
) -> dict[str, Any]:
    """Carry out ``spec`` on ``backend``; write and return the report.

    The live display goes to ``console`` (a rich ``Console``; a terminal gets
    a live progress view, anything else plain status lines every
    ``plain_interval`` seconds). With ``show_logs`` every worker line is
    printed, prefixed ``[worker-i]``. Ctrl-C (or SIGTERM) stops the workers
    gracefully, and the report is still written with status
    ``interrupted``. The caller decides the exit code from
    ``report["status"]``.
    """
    run_dir = Path(run_dir)
    created = _make_run_dir(run_dir)
    lines_by_index: dict[int, list[str]] = {i: [] for i in range(spec.workers)}
    interrupted = False
    created_at = time.time()
    with _sigterm_as_interrupt():
        try:
            # Start the workers first: their interpreters start while the display (and
            # rich, imported only now) is set up.
            interrupted = _launch(backend, spec, run_dir, created)
            try:
                console, tracker = _start_display(spec, backend, run_dir, console)
            except KeyboardInterrupt:
                # Ctrl-C while the display was set up: set it up again (a second
                # Ctrl-C ends the run without a report), then stop gracefully.
                interrupted = True
                console, tracker = _start_display(spec, backend, run_dir, console)
            from ttg_ops.follow import make_view

            try:
                with make_view(tracker, console, refresh_per_second, plain_interval) as view:
                    follower = _Follower(backend, tracker, view, show_logs, lines_by_index)
                    try:
                        if not interrupted:
                            follower.consume(on_line)
                    except KeyboardInterrupt:
                        interrupted = True
                    if interrupted:
                        console.print("Interrupted: stopping the workers, then writing the report.")
                        try:
                            backend.stop()
                            follower.consume(None)
                        except KeyboardInterrupt:
                            console.print("Interrupted again: killing the workers.")
                            _stop_now(backend)
            except KeyboardInterrupt:
                # Ctrl-C while the live display started or stopped: stop without it.
                interrupted = True
                console.print("Interrupted: stopping the workers, then writing the report.")
                _stop(backend)
        finally:
            _stop(backend)

    report = build_report(
        spec,
        backend.name,
        backend.states(),
        lines_by_index,
        created_at=created_at,
        finished_at=time.time(),
        interrupted=interrupted,
    )
    write_report(report, run_dir)
    mark_latest(run_dir)
    merge = merge_results(run_dir)
    attach_results(report, merge)
    write_report(report, run_dir)
    _update_root_report(run_dir, merge)
    return report


def _start_display(
    spec: RunSpec, backend: Backend, run_dir: Path, console: Console | None
) -> tuple[Console, Tracker]:
    """Import rich, make the console and tracker, and print the run's opening lines."""
    from rich.console import Console

    from ttg_ops.follow import Tracker

    console = console or Console()
    tracker = Tracker(spec.workers, shard_totals(spec))
    console.print(
        f"Run {spec.run_id}: {spec.workers} {backend.name} workers, task {spec.task}, "
        f"results in {run_dir}.",
        highlight=False,
    )
    if spec.log_level.upper() in ("WARNING", "ERROR"):
        console.print(
            f"Workers log at {spec.log_level.upper()}, without PROGRESS events: "
            "progress shows as each worker finishes.",
            highlight=False,
        )
    return console, tracker


def _launch(backend: Backend, spec: RunSpec, run_dir: Path, created: bool) -> bool:
    """Start the workers; return True when Ctrl-C interrupted the launch.

    When the launch fails (a missing image, a refused container), nothing
    ran: a run directory created for it is removed again.
    """
    try:
        backend.launch(spec, run_dir)
    except KeyboardInterrupt:
        return True
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return False


def _make_run_dir(run_dir: Path) -> bool:
    """Create the run directory; return whether it is new. ConfigError if it cannot be made."""
    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the run directory {run_dir} ({type(exc).__name__}: "
            f"{exc.strerror or exc})",
            hint="pass --runs-dir a writable directory",
        ) from None
    return not existed


def _stop(backend: Backend) -> None:
    """Stop the workers gracefully; a Ctrl-C meanwhile kills them at once."""
    try:
        backend.stop()
    except KeyboardInterrupt:
        _stop_now(backend)


def _stop_now(backend: Backend) -> None:
    stop: Any = backend.stop
    try:
        stop(grace=0)
    except TypeError:
        stop()


def _update_root_report(run_dir: Path, merge: MergeResult) -> None:
    """After a rerun, record the lineage accounting in the root run's report too."""
    if merge.run_id == run_dir.name:
        return
    root_dir = run_dir.parent / merge.run_id
    root = load_report(root_dir)
    attach_results(root, merge)
    write_report(root, root_dir)


def merge_run(run_dir: Path) -> tuple[dict[str, Any], MergeResult]:
    """Merge the lineage of the run at ``run_dir``; store the accounting in its root report."""
    run_dir = Path(run_dir)
    merge = merge_results(run_dir)
    root_dir = run_dir.parent / merge.run_id
    root = load_report(root_dir)
    attach_results(root, merge)
    write_report(root, root_dir)
    return root, merge


def rerun_failed(
    run_dir: Path,
    backend: Backend,
    *,
    whole_shards: bool = False,
    workers: int | None = None,
    show_logs: bool = False,
    console: Console | None = None,
) -> tuple[dict[str, Any] | None, MergeResult]:
    """Complete the run at ``run_dir``: rerun what is missing or errored on ``backend``.

    Returns the follow-up run's report (``None`` when nothing was left to do)
    and the lineage accounting after it. Any backend works: local processes,
    Docker, or the Kubernetes Job.
    """
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    merge = merge_results(run_dir)
    spec = rerun_spec(report, merge, whole_shards=whole_shards, workers=workers)
    if spec is None:
        from rich.console import Console

        console = console or Console()
        console.print(f"Run {merge.run_id} is complete: nothing to rerun.", highlight=False)
        return None, merge
    logger.info(
        f"Rerunning {count_ranges(parse_ranges(spec.only))} parameters of run "
        f"{report['run_id']} as run {spec.run_id}."
    )
    follow_up = run(
        spec, backend, run_dir.parent / spec.run_id, show_logs=show_logs, console=console
    )
    _, merged = merge_run(run_dir.parent / spec.run_id)
    return follow_up, merged


LOCAL_BACKENDS = ("process", "docker")


def make_backend(name: str, image: str = "") -> Backend:
    """The backend called ``name`` for ``inv run``: ``process`` or ``docker``.

    ``image`` is the worker image for Docker (default: the image of the run's
    version). The Kubernetes Job has its own tasks (``inv deploy``).
    """
    if name == "process":
        from ttg_ops.backends.process import ProcessBackend

        return ProcessBackend()
    if name == "docker":
        from ttg_ops.backends.docker import DockerBackend

        return DockerBackend(image=image or None)
    raise ConfigError(
        f"backend {name!r} is not one of {', '.join(LOCAL_BACKENDS)}",
        hint="for the Kubernetes Job use `inv deploy`",
    )


# Worker settings as `inv run` spells them (longest names first, so prefixes do not clash).
_FLAG_OF = {
    "TTG_TASK_OPTIONS": "task-options",
    "TTG_SPACE": "space",
    "TTG_TASK": "task",
}


def check_spec(spec: RunSpec, backend_name: str) -> None:
    """Check what the worker would reject, before starting anything.

    The task must resolve and accept ``spec.task_options``; for local
    processes the space file must exist and load. Raises :class:`ConfigError`
    with the worker's own message.
    """
    from ttg_worker.errors import WorkerConfigError
    from ttg_worker.tasks import check_options, resolve_task

    if backend_name in LOCAL_BACKENDS:
        _check_local_workers(spec, backend_name)
    try:
        # A 'module:function' task may exist only inside the worker image.
        if ":" not in spec.task or backend_name == "process":
            chosen = resolve_task(spec.task)
            check_options(chosen, spec.task, dict(spec.task_options))
        if spec.space and backend_name == "process":
            from ttg_worker.spaces import load_space

            load_space(spec.space, spec.params)
    except WorkerConfigError as exc:
        # The worker names its environment variables; the user typed flags.
        message = str(exc)
        for variable, flag in _FLAG_OF.items():
            message = message.replace(f"{variable}=", f"--{flag} ")
        raise ConfigError(message) from None
    if spec.only:
        parse_ranges(spec.only)


def _check_local_workers(spec: RunSpec, backend_name: str) -> None:
    """Refuse more local workers than the machine sensibly runs, or than there are parameters.

    The worker itself accepts more workers than parameters (the extra ones get
    an empty shard), but locally every worker is a process or container that
    would only start and stop idle.
    """
    if spec.workers > MAX_LOCAL_WORKERS:
        raise ConfigError(
            f"--workers {spec.workers:,} is more than the {MAX_LOCAL_WORKERS} workers the "
            f"{backend_name} backend runs on one machine; allowed: 1 to {MAX_LOCAL_WORKERS}",
            hint="use `inv deploy` for a larger Kubernetes run",
        )
    size = spec_space_size(spec)
    if size is None:
        return
    selected = count_ranges(selected_ranges(spec, size))
    if spec.workers > selected:
        raise ConfigError(
            f"--workers {spec.workers} is more than the {selected} parameters to compute: "
            f"{spec.workers - selected} workers would have nothing to do; allowed: 1 to "
            f"{selected} workers"
        )


def parse_task_options(text: str) -> dict[str, Any]:
    """``--task-options`` as a dict: a JSON object, or an empty string for none."""
    import json

    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"task options {text!r} are not JSON ({exc}); pass an object like '{{\"cost_ms\": 2}}'"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(
            f"task options must be a JSON object like '{{\"cost_ms\": 2}}', "
            f"got a {type(value).__name__}"
        )
    return value


def parse_whole(flag: str, text: str | int) -> int:
    """A whole-number flag given as text (``--workers 3``); :class:`ConfigError` otherwise."""
    try:
        return int(str(text).strip().replace("_", ""))
    except ValueError:
        raise ConfigError(f"--{flag} must be a whole number such as 3, got {text!r}") from None


def parse_fraction(flag: str, text: str | float) -> float:
    """A fraction flag given as text (``--failure-threshold 0.05``), else :class:`ConfigError`."""
    try:
        return float(str(text).strip())
    except ValueError:
        raise ConfigError(
            f"--{flag} must be a number from 0 to 1 such as 0.05, got {text!r}"
        ) from None
