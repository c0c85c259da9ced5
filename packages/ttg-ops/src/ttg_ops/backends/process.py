"""Run workers as local processes, with exactly the environment a pod gets.

Each worker is ``<python> -m ttg_worker`` started from this interpreter, with
a minimal base environment (PATH, HOME, locale, temp dir, CA bundle) plus
:func:`ttg_ops.spec.worker_env` for its index, ``TTG_OUTPUT_DIR`` pointing at
``<run dir>/results``, ``POD_NAME=ttg-<run-id>-<index>`` and ``NODE_NAME``
set to this host. Nothing else of the caller's environment leaks in, so a
local run behaves like the Kubernetes Job. stdout and stderr are merged, as
in a container log; one reader thread per worker (see
:class:`ttg_ops.backends.base.LineStreams`) puts ``(index, line)`` on a
queue that :meth:`ProcessBackend.lines` drains.

Workers run in their own session, so Ctrl-C in the terminal reaches only the
runner, which then stops them with SIGTERM (they write an ``interrupted``
summary) and SIGKILL after a grace period.

TODO: a runner killed with SIGKILL leaves its workers running until their
shards are done; a parent-death signal would need ``preexec_fn``, which is
unsafe while the reader threads run. A supervisor process would remove this.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from loguru import logger

from ttg_ops.backends.base import (
    FAILED,
    LAST_LINES,
    RUNNING,
    SUCCEEDED,
    LineStreams,
    WorkerState,
)
from ttg_ops.errors import PreflightError
from ttg_ops.spec import ENV_NODE_NAME, ENV_OUTPUT_DIR, ENV_POD_NAME, RunSpec, worker_env

# Variables of the caller's environment a worker may see: what a container's
# image environment would provide anyway.
BASE_ENV_KEYS = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)
# What the worker image sets for Python, so output is unbuffered and UTF-8 here too. The
# image also sets PYTHONDONTWRITEBYTECODE, but it ships compiled bytecode; local workers
# may write theirs, or every start would compile the worker's imports again.
IMAGE_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
STOP_GRACE_SECONDS = 10.0


def base_env() -> dict[str, str]:
    """The minimal environment every worker starts from."""
    env = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(IMAGE_ENV)
    return env


def worker_command() -> list[str]:
    """How a worker is started: this interpreter running the ``ttg_worker`` module."""
    return [sys.executable, "-m", "ttg_worker"]


class ProcessBackend:
    """One local process per worker index (see the module docs)."""

    name = "process"

    def __init__(
        self,
        command: list[str] | None = None,
        last_lines: int = LAST_LINES,
        stop_grace: float = STOP_GRACE_SECONDS,
        cwd: Path | None = None,
    ) -> None:
        self.command = command or worker_command()
        self.stop_grace = stop_grace
        self.cwd = cwd
        self.node = socket.gethostname()
        self._procs: list[subprocess.Popen[bytes] | None] = []
        self._states: list[WorkerState] = []
        self._streams = LineStreams(last_lines)

    # -- Backend protocol ------------------------------------------------------

    def launch(self, spec: RunSpec, run_dir: Path) -> None:
        """Start one process per index; results go under ``run_dir / "results"``."""
        output = (Path(run_dir) / "results").resolve()
        output.mkdir(parents=True, exist_ok=True)
        self._procs = [None] * spec.workers
        self._states = [WorkerState(index=i) for i in range(spec.workers)]
        self._streams.reset(spec.workers)
        for index in range(spec.workers):
            name = f"ttg-{spec.run_id}-{index}"
            env = base_env()
            env.update(worker_env(spec, index))
            env[ENV_OUTPUT_DIR] = str(output)
            env[ENV_POD_NAME] = name
            env[ENV_NODE_NAME] = self.node
            state = self._states[index]
            state.name, state.node = name, self.node
            state.created_at = time.time()
            try:
                proc = subprocess.Popen(
                    self.command,
                    env=env,
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                self.stop()
                raise PreflightError(
                    f"cannot start worker {index} with {' '.join(self.command)}: {exc}",
                    hint="run `uv sync` so the ttg-worker package is installed",
                ) from exc
            state.started_at = time.time()
            state.state = RUNNING
            self._procs[index] = proc
            logger.debug(f"Started worker {index} as process {proc.pid} ({name}).")
            assert proc.stdout is not None
            self._streams.follow(
                index,
                f"ttg-reader-{index}",
                (raw.decode("utf-8", "replace").rstrip("\r\n") for raw in proc.stdout),
                on_end=functools.partial(self._record_end, index, proc),
            )

    def lines(self, timeout: float | None = None) -> Iterator[tuple[int, str]]:
        """Yield ``(index, line)`` as workers print; end when every worker has exited.

        With ``timeout``, give up waiting for the next line after that many
        seconds (the generator then ends although workers still run).
        """
        return self._streams.lines(timeout)

    def states(self) -> list[WorkerState]:
        """Each worker's state, with its last lines, ordered by index."""
        return self._streams.with_tails(self._states)

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM every running worker, wait up to ``grace`` seconds, then SIGKILL the rest."""
        grace = self.stop_grace if grace is None else grace
        running = [(i, p) for i, p in enumerate(self._procs) if p is not None and p.poll() is None]
        for index, proc in running:
            logger.info(f"Stopping worker {index} (process {proc.pid}) with SIGTERM.")
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for index, proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                logger.warning(
                    f"Worker {index} (process {proc.pid}) did not exit within {grace:.0f} s "
                    "of SIGTERM; killing it."
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        self._streams.join(timeout=5)

    # -- Extras -----------------------------------------------------------------

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to worker ``index`` (failure drills and tests)."""
        proc = self._procs[index]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def pids(self) -> list[int | None]:
        return [p.pid if p is not None else None for p in self._procs]

    # -- Internals --------------------------------------------------------------

    def _record_end(self, index: int, proc: subprocess.Popen[bytes]) -> None:
        """Close the worker's output, wait for it and record how it ended."""
        if proc.stdout is not None:
            proc.stdout.close()
        code = proc.wait()
        state = self._states[index]
        state.finished_at = time.time()
        state.exit_code = code
        state.state = SUCCEEDED if code == 0 else FAILED
        if code < 0:
            state.message = f"killed by signal {_signal_name(-code)}"
        elif code:
            state.message = f"exited with code {code}"
        logger.debug(f"Worker {index} (process {proc.pid}) exited with code {code}.")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
