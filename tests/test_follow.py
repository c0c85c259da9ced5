"""The live progress state (Tracker) and its two renderings."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console
from ttg_logging.grammar import Event, parse_line
from ttg_ops.follow import LiveView, PlainView, Tracker, make_view


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _progress(done: int, total: int) -> Event:
    return Event("progress", "PROGRESS", {"processed": done, "total": total, "rate": 50.0})


def _summary(done: int, status: str = "completed") -> Event:
    fields = {"worker_id": 0, "status": status, "processed_count": done}
    return Event("summary", "SUMMARY", {**fields, "range_start": 0, "range_end": done})


def test_tracker_rates_and_etas_follow_the_events() -> None:
    clock = Clock()
    tracker = Tracker(2, totals=[100, 100], clock=clock)
    assert tracker.total == 200 and tracker.processed == 0
    assert tracker.rate() is None and tracker.eta() is None

    tracker.seen(0)
    tracker.seen(1)
    clock.now = 102.0
    tracker.update(0, _progress(50, 100))
    tracker.update(1, _progress(20, 100))
    worker0, worker1 = tracker.workers
    assert worker0.rate(clock.now) == pytest.approx(25.0)
    assert worker0.eta(clock.now) == pytest.approx(2.0)
    assert worker1.eta(clock.now) == pytest.approx(8.0)
    assert tracker.processed == 70
    assert tracker.rate() == pytest.approx(35.0)
    assert tracker.eta() == pytest.approx(8.0)  # the slowest worker decides

    clock.now = 103.0  # no new event: the estimates count down
    assert worker1.eta(clock.now) == pytest.approx(7.0)

    clock.now = 104.0
    tracker.update(0, _summary(100))
    assert worker0.phase == "done" and worker0.eta(clock.now) == 0.0
    tracker.finish(1, ok=False)
    assert worker1.phase == "failed" and tracker.done


def test_tracker_learns_totals_from_events_and_grows_for_unknown_indexes() -> None:
    tracker = Tracker(1, clock=Clock())
    assert tracker.total is None
    tracker.update(0, _progress(5, 40))
    tracker.update(2, _progress(1, 10))
    assert [w.total for w in tracker.workers] == [40, None, 10]
    assert tracker.total is None  # worker 1 has not said anything yet


def test_tracker_reads_real_worker_lines() -> None:
    tracker = Tracker(1, clock=Clock())
    line = (
        "[2026-01-27 05:16:19.993] [INFO ] [WORKER-0] [main        ] "
        "📊 PROGRESS: 500/3333 (15.0%) batch_time=0.95s rate=498.81 params/s"
    )
    event = parse_line(line)
    assert event is not None
    tracker.update(0, event)
    assert (tracker.workers[0].processed, tracker.workers[0].total) == (500, 3333)


def test_interrupted_summary_marks_the_worker_failed() -> None:
    tracker = Tracker(1, clock=Clock())
    tracker.update(0, _summary(10, status="interrupted"))
    assert tracker.workers[0].phase == "failed"


def test_status_line_names_overall_and_each_worker() -> None:
    clock = Clock()
    tracker = Tracker(2, totals=[10, 10], clock=clock)
    tracker.seen(0)
    clock.now = 101.0
    tracker.update(0, _progress(10, 10))
    line = tracker.status_line()
    assert line.startswith("overall 10/20 (50.0%); 10 params/s, eta ")
    assert "worker-0 10/10 running" in line and "worker-1 0/10 waiting" in line


def test_live_view_draws_a_row_per_worker_and_overall() -> None:
    clock = Clock()
    tracker = Tracker(3, totals=[10, 10, 10], clock=clock)
    console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system="truecolor")
    view = make_view(tracker, console)
    assert isinstance(view, LiveView)
    with view:
        tracker.seen(1)
        clock.now = 101.0
        tracker.update(1, _progress(5, 10))
        view.log(1, "a worker line [with brackets]")
        view.refresh()
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for label in ("overall", "worker-0", "worker-1", "worker-2"):
        assert label in text
    assert "5/10" in text and "5/30" in text
    assert "[worker-1] a worker line [with brackets]" in text


def test_no_color_removes_colours_from_the_live_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    tracker = Tracker(1, totals=[4], clock=Clock())
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    with LiveView(tracker, console) as view:
        tracker.update(0, _summary(4))
        view.refresh()
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "done" in text
    colours = re.findall(r"\x1b\[[0-9;]*(?:3[0-9]|38;[0-9;]+)m", text)
    assert colours == []


def test_plain_view_prints_periodic_lines_off_a_terminal() -> None:
    tracker = Tracker(1, totals=[4], clock=Clock())
    console = Console(file=io.StringIO(), width=100)
    view = make_view(tracker, console, plain_interval=0.05)
    assert isinstance(view, PlainView)
    with view:
        tracker.update(0, _progress(2, 4))
        time.sleep(0.5)
        view.log(0, "[INFO] plain")
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert "[worker-0] [INFO] plain" in lines
    assert sum(line.startswith("overall 2/4 (50.0%)") for line in lines) >= 2
    assert "\x1b[" not in "".join(lines)
