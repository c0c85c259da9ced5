"""The worker's run function in-process: outcomes that are hard to cause from outside."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from ttg_logging import configure
from ttg_logging.grammar import find_summary, parse_lines
from ttg_worker import runner
from ttg_worker.config import WorkerConfig


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root_handlers = logging.root.handlers[:]
    yield
    logger.remove()
    logging.root.handlers[:] = root_handlers


def _run(tmp_path: Path, **fields: Any) -> tuple[int, list[str]]:
    stream = io.StringIO()
    configure(0, "INFO", "text", stream=stream, intercept_stdlib=False)
    config = WorkerConfig(worker_id=0, output_dir=str(tmp_path / "out"), **fields)
    code = runner.run(config, install_signals=False)
    return code, stream.getvalue().splitlines()


def test_an_unexpected_error_while_preparing_still_ends_in_a_failed_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(path: str, total: int) -> None:
        raise RuntimeError("the space loader has a bug")

    monkeypatch.setattr(runner, "load_space", broken)
    code, lines = _run(tmp_path, params=10, task="noop")

    assert code == 1
    summary = find_summary(lines)
    assert summary is not None
    assert (summary["status"], summary["exit_code"], summary["range_start"]) == ("failed", 1, None)
    failed = [e for e in parse_lines(lines) if e.name == "FAILED"]
    assert failed[0].fields["message"] == (
        "Worker 0 failed: RuntimeError: the space loader has a bug"
    )
    assert any("Traceback" in line for line in lines)
    assert json.loads(lines[-1])["status"] == "failed"


def test_a_signal_after_the_last_parameter_does_not_mark_the_run_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_process = runner.process

    def process_then_signal(*args: Any) -> None:
        real_process(*args)
        stop = args[-1]
        stop.signum = signal.SIGTERM

    monkeypatch.setattr(runner, "process", process_then_signal)
    code, lines = _run(tmp_path, params=20, task="noop")
    assert code == 0
    summary = find_summary(lines)
    assert summary is not None and summary["status"] == "completed"


def test_a_signal_before_the_last_parameter_marks_the_run_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stop, real_progress = runner.StopRequest, runner.progress
    stops: list[runner.StopRequest] = []

    def stopping_progress(*args: Any, **kwargs: Any) -> None:
        real_progress(*args, **kwargs)
        stops[0].signum = signal.SIGINT

    def make_stop() -> runner.StopRequest:
        stops.append(real_stop())
        return stops[0]

    monkeypatch.setattr(runner, "StopRequest", make_stop)
    monkeypatch.setattr(runner, "progress", stopping_progress)
    code, lines = _run(tmp_path, params=20, task="noop", batch_size=5)
    assert code == 130
    summary = find_summary(lines)
    assert summary is not None
    assert (summary["status"], summary["processed_count"]) == ("interrupted", 5)
