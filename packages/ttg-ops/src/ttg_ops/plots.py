"""Pictures of a run: ``report.png`` (timeline + throughput) and a self-contained ``report.html``.

The timeline has one row per worker, grouped and coloured by node; each
batch is a bar ending at its PROGRESS event's timestamp and as long as its
batch time, over a light band for the worker's whole life (created ->
started -> finished). The x axis is seconds since the run's first worker
was created. The second panel shows each worker's throughput. The HTML page
embeds the PNG (base64) and the same tables ``inv run`` prints, so it can be
mailed or attached to a CI job as one file.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ttg_ops.report import (
    WORKER_COLUMNS,
    footnotes,
    load_report,
    metrics_rows,
    results_rows,
    results_title,
    worker_rows,
)

PNG_FILE = "report.png"
HTML_FILE = "report.html"
_STATE_COLOUR = {"succeeded": "#2e7d32", "failed": "#c62828", "missing": "#f9a825"}


def _t0(report: Mapping[str, Any]) -> float:
    """The run's time origin: the earliest worker creation, start or batch start."""
    candidates: list[float] = []
    for worker in report["workers"]:
        for key in ("created_at", "started_at"):
            if worker.get(key) is not None:
                candidates.append(float(worker[key]))
        for batch in worker.get("batches", []):
            if batch.get("end") is not None:
                candidates.append(float(batch["end"]) - float(batch.get("batch_time") or 0.0))
    if candidates:
        return min(candidates)
    created = report.get("created_at")
    if isinstance(created, str):
        return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    return 0.0


def _ordered(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Workers grouped by node, then by index."""
    return sorted(report["workers"], key=lambda w: (str(w.get("node") or ""), int(w["index"])))


def figure(report: Mapping[str, Any]) -> Any:
    """The matplotlib figure of ``report``: timeline above, throughput below."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    workers = _ordered(report)
    nodes = sorted({str(w.get("node") or "?") for w in workers})
    palette = plt.get_cmap("tab10")
    colour = {node: palette(i % 10) for i, node in enumerate(nodes)}
    t0 = _t0(report)

    height = 2.8 + 0.45 * len(workers)
    fig, (timeline, bars) = plt.subplots(
        2,
        1,
        figsize=(11, height + 2.6),
        gridspec_kw={"height_ratios": [height, 2.6]},
        layout="constrained",
    )
    fig.suptitle(
        f"TTG run {report['run_id']} ({report['backend']}, {report['status']}): "
        f"{report['aggregate']['total_parameters']:,} parameters, "
        f"{report['aggregate']['workers']} workers",
        fontsize=11,
    )

    labels = []
    latest, marked = 0.0, False
    for row, worker in enumerate(workers):
        node = str(worker.get("node") or "?")
        labels.append(f"worker-{worker['index']} ({worker.get('name') or '-'})\non {node}")
        created, started, finished = (
            worker.get("created_at"),
            worker.get("started_at"),
            worker.get("finished_at"),
        )
        if created is not None and started is not None and started > created:
            timeline.broken_barh(
                [(created - t0, started - created)],
                (row - 0.35, 0.7),
                facecolors="none",
                edgecolors="grey",
                hatch="///",
                linewidth=0.5,
            )
        if started is not None and finished is not None:
            timeline.broken_barh(
                [(started - t0, finished - started)],
                (row - 0.35, 0.7),
                facecolors=(*colour[node][:3], 0.15),
                edgecolors="none",
            )
        spans = [
            (float(b["end"]) - t0 - float(b["batch_time"]), float(b["batch_time"]))
            for b in worker.get("batches", [])
            if b.get("end") is not None and b.get("batch_time") is not None
        ]
        if spans:
            timeline.broken_barh(
                spans,
                (row - 0.3, 0.6),
                facecolors=colour[node],
                edgecolors="white",
                linewidth=0.6,
            )
        state = str(worker.get("state"))
        end = max((s + w for s, w in spans), default=0.0)
        if finished is not None:
            end = max(end, finished - t0)
        latest = max(latest, end)
        if state != "succeeded":
            # An interrupted worker is failed for the run, but say what happened to it.
            status = str((worker.get("summary") or {}).get("status") or "")
            marked = True
            timeline.text(
                end,
                row,
                f"  {status if status and status != 'completed' else state}",
                va="center",
                color=_STATE_COLOUR.get(state, "black"),
                fontsize=9,
                fontweight="bold",
            )

    timeline.set_yticks(range(len(workers)), labels, fontsize=8)
    timeline.set_ylim(len(workers) - 0.5, -0.5)
    timeline.set_xlabel("seconds since the first worker was created")
    timeline.set_title("Timeline: one bar per batch, band = worker lifetime", fontsize=10)
    timeline.grid(axis="x", alpha=0.3)
    # Leave room on the right for the state labels.
    timeline.set_xlim(0, latest * (1.15 if marked else 1.02) or 1.0)
    handles = [Patch(facecolor=colour[n], label=f"node {n}") for n in nodes]
    handles.append(Patch(facecolor="none", edgecolor="grey", hatch="///", label="scheduling delay"))
    timeline.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)

    _throughput(bars, report, workers, colour)
    return fig


def _throughput(
    bars: Any, report: Mapping[str, Any], workers: Sequence[Mapping[str, Any]], colour: Any
) -> None:
    """Draw each worker's throughput as a bar, with the mean as a dashed line."""
    rates = [float((w.get("summary") or {}).get("params_per_second") or 0.0) for w in workers]
    names = [f"worker-{w['index']}" for w in workers]
    bar_colours = [colour[str(w.get("node") or "?")] for w in workers]
    bars.bar(names, rates, color=bar_colours)
    for position, worker in enumerate(workers):
        if not worker.get("summary"):
            bars.text(
                position,
                0,
                f"{worker['state']}: no summary",
                ha="center",
                va="bottom",
                color=_STATE_COLOUR.get(str(worker["state"]), "black"),
                fontsize=8,
            )
    average = report["aggregate"].get("average_throughput_per_worker")
    if average:
        # The mean is named in a legend beside the axes, where it cannot hide a tick label.
        bars.axhline(
            average, color="black", linestyle="--", linewidth=1, label=f"mean {average:,.0f}/s"
        )
        bars.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        bars.set_ylim(top=max(max(rates, default=0.0), average) * 1.12)
    bars.set_ylabel("params/s")
    bars.set_title("Throughput per worker", fontsize=10)
    bars.tick_params(axis="x", labelsize=8)
    bars.grid(axis="y", alpha=0.3)


def render_png(report: Mapping[str, Any]) -> bytes:
    """``report``'s figure as PNG bytes."""
    from matplotlib import pyplot as plt

    fig = figure(report)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], caption: str) -> str:
    out = [f"<table><caption>{html.escape(caption)}</caption>"]
    if headers:
        out.append("<thead><tr>")
        out.extend(f"<th>{html.escape(h)}</th>" for h in headers)
        out.append("</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row)
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
caption { text-align: left; font-weight: bold; padding: .3em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; }
.succeeded { color: #2e7d32; } .failed, .interrupted { color: #c62828; }
"""


def render_html(report: Mapping[str, Any], png: bytes) -> str:
    """A self-contained HTML page: the figure (embedded) and the report's tables."""
    status = html.escape(str(report["status"]))
    encoded = base64.b64encode(png).decode("ascii")
    spec = report["spec"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>TTG run {html.escape(report['run_id'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>TTG run {html.escape(report['run_id'])}: <span class='{status}'>{status}</span></h1>",
        f"<p>Backend {html.escape(report['backend'])}, task {html.escape(str(spec['task']))}, "
        f"created {html.escape(str(report['created_at']))}, "
        f"finished {html.escape(str(report['finished_at']))}.</p>",
        f"<img alt='Timeline and throughput of run {html.escape(report['run_id'])}' "
        f"src='data:image/png;base64,{encoded}'>",
        _table(("Metric", "Value"), metrics_rows(report), "Performance Metrics"),
        _table(WORKER_COLUMNS, worker_rows(report), "Workers"),
        *(f"<p>{html.escape(note)}</p>" for note in footnotes(report)),
    ]
    results = results_rows(report)
    if results:
        parts.append(_table(None, results, results_title(report)))
    for worker in report["workers"]:
        if worker["state"] != "succeeded" or worker.get("parse_errors"):
            tail = "\n".join(worker.get("last_lines", [])[-20:])
            parts.append(
                f"<h3>worker {worker['index']} ({html.escape(worker.get('name') or '-')}): "
                f"{html.escape(str(worker['state']))}, exit code {worker.get('exit_code')}</h3>"
                f"<pre>{html.escape(tail)}</pre>"
            )
            for error in worker.get("parse_errors", []):
                parts.append(
                    f"<p>Line {error['line_no']} could not be parsed "
                    f"({html.escape(error['error'])}):</p><pre>{html.escape(error['text'])}</pre>"
                )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render(run_dir: Path) -> tuple[Path, Path]:
    """Write ``report.png`` and ``report.html`` next to the run's ``report.json``."""
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    png = render_png(report)
    png_path = run_dir / PNG_FILE
    png_path.write_bytes(png)
    html_path = run_dir / HTML_FILE
    html_path.write_text(render_html(report, png), encoding="utf-8")
    return png_path, html_path
