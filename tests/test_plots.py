"""report.png and report.html from real and hand-made reports."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from ttg_ops.backends.base import FAILED, SUCCEEDED, WorkerState
from ttg_ops.backends.process import ProcessBackend
from ttg_ops.plots import figure, render, render_html
from ttg_ops.report import build_report, write_report
from ttg_ops.runner import run
from ttg_ops.spec import RunSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    spec = RunSpec(workers=3, params=900, batch_size=100, task_options={"cost_ms": 0.5}, run_id="p")
    run(spec, ProcessBackend(), runs / "p", console=Console(file=io.StringIO()))
    return runs / "p"


def test_render_writes_a_png_and_a_self_contained_html(run_dir: Path) -> None:
    png_path, html_path = render(run_dir)
    png = png_path.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000
    page = html_path.read_text()
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert embedded is not None and base64.b64decode(embedded.group(1)) == png
    assert "Performance Metrics" in page and "ttg-p-2" in page
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_timeline_has_a_row_per_worker_with_batches_and_labelled_axes(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    fig = figure(report)
    timeline, bars = fig.axes
    labels = [t.get_text() for t in timeline.get_yticklabels()]
    assert len(labels) == 3 and labels[0].startswith("worker-0 (ttg-p-0)")
    assert "on " in labels[0]
    assert "seconds" in timeline.get_xlabel()
    # One bar collection per worker lifetime band and one per worker's batches.
    batch_bars = [c for c in timeline.collections if len(c.get_paths()) == 3]
    assert batch_bars, "each worker's three batches are drawn"
    assert [t.get_text() for t in bars.get_xticklabels()] == ["worker-0", "worker-1", "worker-2"]
    assert bars.get_ylabel() == "params/s"


def test_workers_are_grouped_by_node_and_failures_are_marked() -> None:
    spec = RunSpec(workers=3, params=30, run_id="nodes")
    summary = {
        "worker_id": 0,
        "status": "completed",
        "processed_count": 10,
        "range_start": 0,
        "range_end": 10,
        "duration_seconds": 1.0,
        "params_per_second": 10.0,
    }
    states = [
        WorkerState(0, SUCCEEDED, "pod-0", "node-b", 0, 10.0, 11.0, 12.0),
        WorkerState(1, FAILED, "pod-1", "node-a", 1, 10.0, 10.5, 11.0),
        WorkerState(2, SUCCEEDED, "pod-2", "node-b", 0, 10.0, 10.2, 12.0),
    ]
    lines = {0: [json.dumps(summary)], 2: [json.dumps({**summary, "worker_id": 2})]}
    report = build_report(spec, "kubernetes", states, lines)
    fig = figure(report)
    timeline = fig.axes[0]
    labels = [t.get_text() for t in timeline.get_yticklabels()]
    assert [label.split(" ")[0] for label in labels] == ["worker-1", "worker-0", "worker-2"]
    assert any(t.get_text().strip() == "missing" for t in timeline.texts)
    legend = [t.get_text() for t in timeline.get_legend().get_texts()]
    assert legend[:2] == ["node node-a", "node node-b"]


def test_html_escapes_names_and_shows_the_tail_of_a_failed_worker(tmp_path: Path) -> None:
    spec = RunSpec(workers=1, params=1, run_id="esc")
    state = WorkerState(0, FAILED, "<b>pod</b>", "node", 1, 1.0, 2.0, 3.0, "", ["<oops>"])
    report = build_report(spec, "process", [state], {})
    page = render_html(report, PNG_MAGIC)
    assert "<b>pod</b>" not in page and "&lt;b&gt;pod&lt;/b&gt;" in page
    assert "&lt;oops&gt;" in page
    write_report(report, tmp_path / "esc")
    png_path, _ = render(tmp_path / "esc")
    assert png_path.read_bytes().startswith(PNG_MAGIC)


def test_the_mean_throughput_label_hides_no_tick_label() -> None:
    spec = RunSpec(workers=2, params=1000, run_id="mean")
    lines = {}
    for index, rate in ((0, 490.0), (1, 500.0)):
        summary = {
            "worker_id": index,
            "status": "completed",
            "range_start": 500 * index,
            "range_end": 500 * (index + 1),
            "processed_count": 500,
            "failed_count": 0,
            "duration_seconds": 500 / rate,
            "params_per_second": rate,
            "batch_stats": {},
            "total_params": 1000,
        }
        lines[index] = [json.dumps(summary)]
    states = [
        WorkerState(index=i, state=SUCCEEDED, name=f"ttg-mean-{i}", node="n", exit_code=0,
                    created_at=0.0, started_at=0.1, finished_at=1.2)
        for i in range(2)
    ]  # fmt: skip
    report = build_report(spec, "process", states, lines)
    assert report["aggregate"]["average_throughput_per_worker"] == 495.0
    fig = figure(report)
    _, bars = fig.axes
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legend = bars.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["mean 495/s"]
    assert not [t for t in bars.texts if t.get_text().startswith("mean")]
    box = legend.get_window_extent(renderer)
    ticks = [t for t in bars.get_yticklabels() if t.get_text()]
    assert "500" in [t.get_text() for t in ticks]
    assert not any(box.overlaps(t.get_window_extent(renderer)) for t in ticks)
