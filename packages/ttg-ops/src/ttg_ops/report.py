"""One report shape for every backend: ``runs/<run-id>/report.json`` and its tables.

:func:`build_report` folds what a backend saw (one :class:`WorkerState` per
index) and what each worker printed (its stdout lines) into one JSON-ready
dict; the lines are parsed here with :mod:`ttg_logging.grammar`, so a local
run, a Docker run and a Kubernetes run are read by the same code. A line
that looks like an event or a summary but cannot be read is kept in the
worker's ``parse_errors``, never dropped. docs/REPORT.md documents every key
and docs/schemas/report.schema.json is its JSON schema.

The tables (the Performance Metrics table users know from the v1.1.0 test
results, and a per-worker table) are built from row functions shared with
the HTML report in :mod:`ttg_ops.plots`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ttg_logging import grammar

from ttg_ops.backends.base import FAILED, MISSING, PENDING, RUNNING, SUCCEEDED, WorkerState
from ttg_ops.errors import ConfigError
from ttg_ops.results import (
    REPORT_FILE,
    MergeResult,
    count_ranges,
    format_ranges,
    load_json,
    selected_ranges,
    shard_bounds,
    slice_ranges,
    space_size,
    spec_from_dict,
    spec_space_size,
)
from ttg_ops.spec import RunSpec

SCHEMA_VERSION = 1
LAST_LINES = 50
LATEST = "latest"
RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"
RUN_INTERRUPTED = "interrupted"
RUN_STATUSES = (RUN_SUCCEEDED, RUN_FAILED, RUN_INTERRUPTED)
# The summary status a worker reports when it finished its whole shard.
COMPLETED = "completed"


def iso(timestamp: float | None) -> str | None:
    """A UNIX time as an ISO 8601 UTC string with milliseconds, or ``None``."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


# ---------------------------------------------------------------------------
# Parsing one worker's lines
# ---------------------------------------------------------------------------


def _looks_like_grammar(text: str) -> bool:
    """A line the grammar should have read: an object, a PROGRESS or SUMMARY mention."""
    return text.startswith("{") or "PROGRESS" in text or "SUMMARY" in text


def report_needs(line: str | bytes, event: grammar.Event | None) -> bool:
    """Whether :func:`parse_worker_lines` uses ``line`` (parsed as ``event``).

    A follower that keeps a long run's output in memory may store an empty
    string in place of every other line: line numbers stay right and the
    report is the same.
    """
    if event is None:
        text = grammar.clean_line(line)
        return bool(text) and _looks_like_grammar(text)
    if event.kind in (grammar.SUMMARY, grammar.PROGRESS, grammar.INVALID):
        return True
    return event.kind == grammar.LOG and "PROGRESS" in str(event.fields.get("message", ""))


def parse_worker_lines(
    lines: Iterable[str | bytes],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """Parse one worker's stdout: ``(summary or None, batches, parse_errors)``.

    ``batches`` has one ``{"end", "processed", "batch_time"}`` per PROGRESS
    event; ``parse_errors`` one ``{"line_no", "text", "error"}`` per line that
    looks like an event or a summary but does not parse (line numbers count
    from 1). The last summary wins.
    """
    summary: dict[str, Any] | None = None
    batches: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for line_no, raw in enumerate(lines, start=1):
        try:
            event = grammar.parse_line(raw)
        except Exception as exc:  # a parser bug must not lose the report
            event = None
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            errors.append({"line_no": line_no, "text": text[:500], "error": repr(exc)})
            continue
        if event is None:
            text = grammar.clean_line(raw)
            if text and _looks_like_grammar(text):
                problem = (
                    "an object that is not a readable log record (torn or altered line)"
                    if text.startswith("{")
                    else "mentions PROGRESS or SUMMARY but is not an event line"
                )
                errors.append({"line_no": line_no, "text": text[:500], "error": problem})
            continue
        if event.kind == grammar.SUMMARY:
            summary = dict(event.fields)
        elif event.kind == grammar.PROGRESS:
            batches.append(
                {
                    "end": event.timestamp,
                    "processed": _int(event.fields.get("processed")),
                    "batch_time": _number(event.fields.get("batch_time")),
                }
            )
        elif event.kind == grammar.INVALID:
            text = str(event.fields.get("line", ""))
            errors.append(
                {
                    "line_no": line_no,
                    "text": text[:500],
                    "error": str(event.fields.get("error", "unreadable")),
                }
            )
        elif event.kind == grammar.LOG and "PROGRESS" in str(event.fields.get("message", "")):
            errors.append(
                {
                    "line_no": line_no,
                    "text": grammar.clean_line(raw)[:500],
                    "error": "a PROGRESS line without its counts",
                }
            )
    return summary, batches, errors


def _worker_state(state: WorkerState, summary: dict[str, Any] | None) -> str:
    """Reconcile the backend's view with the summary.

    No summary from an ended worker -> ``missing`` (its results are not
    accounted for); a summary that is not ``completed`` or a non-zero exit
    code -> ``failed``; otherwise ``succeeded``. Pending or running workers
    without a summary keep their state.
    """
    if summary is None:
        return state.state if state.state in (PENDING, RUNNING) else MISSING
    if summary.get("status") != COMPLETED:
        return FAILED
    if state.exit_code not in (None, 0) or state.state == FAILED:
        return FAILED
    return SUCCEEDED


# ---------------------------------------------------------------------------
# Building the report
# ---------------------------------------------------------------------------


def _worker_entry(
    spec: RunSpec, state: WorkerState, lines: Sequence[str | bytes]
) -> dict[str, Any]:
    summary, batches, parse_errors = parse_worker_lines(lines)
    delay = None
    if state.created_at is not None and state.started_at is not None:
        delay = round(state.started_at - state.created_at, 3)
    kept = [line for line in lines[-LAST_LINES * 4 :] if line]  # "" stands for a dropped line
    last = list(state.last_lines) or [grammar.clean_line(line) for line in kept]
    return {
        "index": state.index,
        "state": _worker_state(state, summary),
        "name": state.name,
        "node": state.node or str((summary or {}).get("node_name") or ""),
        "exit_code": state.exit_code,
        "message": state.message,
        "created_at": state.created_at,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "scheduling_delay": delay,
        "summary": summary,
        "batches": batches,
        "last_lines": last[-LAST_LINES:],
        "parse_errors": parse_errors,
    }


def _duration(worker: Mapping[str, Any]) -> float | None:
    summary = worker.get("summary") or {}
    value = _number(summary.get("duration_seconds"))
    if value is not None:
        return value
    if worker.get("started_at") is not None and worker.get("finished_at") is not None:
        return float(worker["finished_at"]) - float(worker["started_at"])
    return None


def progress_processed(worker: Mapping[str, Any]) -> int | None:
    """For a worker without a summary, the ``processed`` count of its last PROGRESS event.

    That count includes any parameters the worker skipped on resume. A worker
    with a summary, or without any PROGRESS event, gives ``None``.
    """
    if worker.get("summary"):
        return None
    counts = [b["processed"] for b in worker.get("batches", []) if b.get("processed") is not None]
    return int(counts[-1]) if counts else None


def aggregate(spec: RunSpec, workers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run-wide figures of the report (the ``aggregate`` section)."""
    summaries = [w.get("summary") for w in workers]
    # Every worker states the size of the selection it was sharded from.
    stated = [_int((s or {}).get("total_params")) for s in summaries]
    size = spec_space_size(spec, summaries)
    if any(v is not None for v in stated):
        total = max(v for v in stated if v is not None)
    elif size is not None:
        total = count_ranges(selected_ranges(spec, size))
    else:
        total = sum(
            (_int(s.get("range_end")) or 0) - (_int(s.get("range_start")) or 0)
            for s in summaries
            if s
        )

    starts = [w["started_at"] for w in workers if w.get("started_at") is not None]
    ends = [w["finished_at"] for w in workers if w.get("finished_at") is not None]
    wall = max(ends) - min(starts) if starts and ends else None
    if wall is None:
        durations_known = [d for d in (_duration(w) for w in workers) if d is not None]
        wall = max(durations_known) if durations_known else None

    # A worker killed before its summary still wrote what its PROGRESS events counted.
    from_progress = sum(progress_processed(w) or 0 for w in workers)
    processed = sum(_int((s or {}).get("processed_count")) or 0 for s in summaries)
    processed += from_progress
    failed = sum(_int((s or {}).get("failed_count")) or 0 for s in summaries)
    rates = [
        r for r in (_number((s or {}).get("params_per_second")) for s in summaries) if r is not None
    ]
    durations = [d for d in (_duration(w) for w in workers if w.get("summary")) if d is not None]
    mean_duration = statistics.fmean(durations) if durations else 0.0
    by_state: dict[str, list[int]] = {SUCCEEDED: [], FAILED: [], MISSING: []}
    for w in workers:
        by_state.setdefault(str(w["state"]), []).append(int(w["index"]))

    return {
        "total_parameters": total,
        "workers": spec.workers,
        "parameters_per_worker": round(total / spec.workers, 2) if spec.workers else 0.0,
        "total_processing_time": round(wall, 3) if wall is not None else None,
        "average_throughput_per_worker": round(statistics.fmean(rates), 2) if rates else None,
        "total_throughput": round(processed / wall, 2) if wall else None,
        "processed": processed,
        "processed_from_progress": from_progress,
        "failed_params": failed,
        "load_imbalance": round(max(durations) / mean_duration, 3) if mean_duration else None,
        "missing_indexes": by_state[MISSING],
        "failed_indexes": by_state[FAILED],
        "succeeded_indexes": by_state[SUCCEEDED],
    }


def _lines(log: str | bytes | Sequence[str | bytes]) -> list[str | bytes]:
    """A worker's lines from a list of lines or one whole log (maybe a ``b'...'`` repr)."""
    if isinstance(log, str | bytes):
        return list(grammar.split_lines(log))
    return list(log)


def build_report(
    spec: RunSpec,
    backend_name: str,
    states: Sequence[WorkerState],
    lines_by_index: Mapping[int, str | bytes | Sequence[str | bytes]],
    *,
    created_at: float | None = None,
    finished_at: float | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """Fold worker states and stdout lines into the report dict (see docs/REPORT.md).

    ``states`` come from the backend (one per index; indexes it does not
    know are reported as ``missing``); ``lines_by_index`` are each worker's
    stdout lines in order (str or bytes, as read from a process, container
    or pod log), or its whole log as one str or bytes; transport alterations
    such as a ``b'...'`` repr or a dict repr are undone by the grammar.
    ``created_at``/``finished_at`` default to the earliest creation and the
    latest finish of the workers.
    ``interrupted`` marks a run stopped by the user. ``results`` is ``None``
    until :func:`attach_results` adds the merge accounting.
    """
    known = {state.index: state for state in states}
    ordered = [known.get(i, WorkerState(index=i, state=MISSING)) for i in range(spec.workers)]
    workers = [_worker_entry(spec, s, _lines(lines_by_index.get(s.index, ()))) for s in ordered]

    created = [s.created_at for s in ordered if s.created_at is not None]
    finished = [s.finished_at for s in ordered if s.finished_at is not None]
    if created_at is None:
        created_at = min(created) if created else time.time()
    if finished_at is None:
        finished_at = max(finished) if finished else time.time()

    if interrupted:
        status = RUN_INTERRUPTED
    elif all(w["state"] == SUCCEEDED for w in workers):
        status = RUN_SUCCEEDED
    else:
        status = RUN_FAILED

    return {
        "schema": SCHEMA_VERSION,
        "run_id": spec.run_id,
        "backend": backend_name,
        "spec": spec.to_dict(),
        "created_at": iso(created_at),
        "finished_at": iso(finished_at),
        "status": status,
        "workers": workers,
        "aggregate": aggregate(spec, workers),
        "results": None,
    }


def attach_results(report: dict[str, Any], merge: MergeResult) -> dict[str, Any]:
    """Put the merge accounting into ``report["results"]`` and return the report."""
    report["results"] = merge.to_dict()
    return report


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def write_report(report: Mapping[str, Any], run_dir: Path) -> Path:
    """Write ``report`` to ``run_dir/report.json`` (atomically) and return the path."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / REPORT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_report(path: Path) -> dict[str, Any]:
    """Read a report from ``path`` (the file or its run directory); check its schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILE
    report = load_json(path)
    if report.get("schema") != SCHEMA_VERSION:
        raise ConfigError(
            f"{path} has report schema {report.get('schema')!r}; this TTG reads schema "
            f"{SCHEMA_VERSION}"
        )
    return report


def mark_latest(run_dir: Path) -> None:
    """Point ``<runs root>/latest`` at ``run_dir`` (a relative symlink)."""
    run_dir = Path(run_dir)
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def resolve_run_dir(runs_root: Path, run_id: str = LATEST) -> Path:
    """The directory of run ``run_id`` under ``runs_root`` (``latest``: the last run started).

    Raises :class:`ConfigError` naming the runs that exist when it is not found.
    """
    runs_root = Path(runs_root)
    if run_id == LATEST:
        link = runs_root / LATEST
        if not link.exists():
            raise ConfigError(
                f"there is no latest run under {runs_root}",
                hint="start one with `inv run`, or pass --run-id",
            )
        return runs_root / link.resolve().name
    run_dir = runs_root / run_id
    if not (run_dir / REPORT_FILE).exists():
        known = sorted(
            p.parent.name for p in runs_root.glob(f"*/{REPORT_FILE}") if not p.parent.is_symlink()
        )
        listed = ", ".join(known[-5:]) if known else "none"
        raise ConfigError(f"run {run_id!r} has no report under {runs_root}; recent runs: {listed}")
    return run_dir


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.2f} s"


def metrics_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The Performance Metrics rows, formatted as in the v1.1.0 test results."""
    agg = report["aggregate"]
    avg = _number(agg.get("average_throughput_per_worker"))
    total = _number(agg.get("total_throughput"))
    return [
        ("Total Parameters", f"{agg['total_parameters']:,}"),
        ("Workers", str(agg["workers"])),
        ("Parameters per Worker", f"~{round(agg['parameters_per_worker']):,}"),
        ("Total Processing Time", _seconds(agg.get("total_processing_time"))),
        (
            "Average Throughput",
            "-" if avg is None else f"{avg:,.2f} params/sec/worker",
        ),
        (
            "Total Throughput",
            "-" if total is None else f"{total:,.2f} params/sec{_progress_mark(report)}",
        ),
    ]


PROGRESS_FOOTNOTE = (
    "* from progress events: the worker ended without a summary; its last PROGRESS count "
    "is used and counted in the totals"
)


def _progress_mark(report: Mapping[str, Any]) -> str:
    """``*`` when the totals include counts taken from PROGRESS events, else nothing."""
    return "*" if report["aggregate"].get("processed_from_progress") else ""


def footnotes(report: Mapping[str, Any]) -> list[str]:
    """The notes the tables' ``*`` marks refer to."""
    return [PROGRESS_FOOTNOTE] if _progress_mark(report) else []


def _shard_text(
    report: Mapping[str, Any], selected: list[tuple[int, int]] | None, start: int, end: int
) -> str:
    """The global parameter indexes at positions ``start..end`` of the run's selection.

    A rerun's worker owns positions within the rerun's selection; what it
    computed is the global indexes there, as compact half-open ranges (the
    first three, then how many more).
    """
    if selected is None:
        return f"{start}:{end}"
    ranges = slice_ranges(selected, start, end)
    if not ranges:
        return "-"
    text = format_ranges(ranges[:3])
    return text if len(ranges) <= 3 else f"{text},+{len(ranges) - 3} more"


def _selection(report: Mapping[str, Any]) -> list[tuple[int, int]] | None:
    """The global indexes the run selected, or ``None`` when the space size is unknown."""
    spec = report["spec"]
    if not spec.get("only"):
        return None
    size = space_size(dict(report))
    if size is None:
        return None
    return selected_ranges(spec_from_dict(spec), size)


WORKER_COLUMNS = (
    "#",
    "Name",
    "Node",
    "Shard",
    "Processed",
    "Failed",
    "Duration",
    "Params/s",
    "Batches",
    "Batch s avg/min/max",
    "State",
)


def _batch_stats(worker: Mapping[str, Any]) -> tuple[int, str]:
    summary = worker.get("summary") or {}
    stats = summary.get("batch_stats") or {}
    times = [b["batch_time"] for b in worker.get("batches", []) if b.get("batch_time") is not None]
    count = _int(stats.get("total_batches"))
    if count is None:
        count = len(times)
    avg, low, high = (
        _number(stats.get("avg_batch_time")),
        _number(stats.get("min_batch_time")),
        _number(stats.get("max_batch_time")),
    )
    if avg is None and times:
        avg, low, high = statistics.fmean(times), min(times), max(times)
    if avg is None or low is None or high is None:
        return count, "-"
    return count, f"{avg:.2f}/{low:.2f}/{high:.2f}"


def worker_rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per worker, in :data:`WORKER_COLUMNS` order, formatted for display."""
    rows: list[tuple[str, ...]] = []
    spec = report["spec"]
    total = int(report["aggregate"]["total_parameters"])
    selected = _selection(report)
    for worker in report["workers"]:
        summary = worker.get("summary") or {}
        start, end = _int(summary.get("range_start")), _int(summary.get("range_end"))
        if start is None or end is None:
            start, end = shard_bounds(total, int(spec["workers"]), int(worker["index"]))
        rate = _number(summary.get("params_per_second"))
        count, stats = _batch_stats(worker)
        processed = _int(summary.get("processed_count"))
        estimated = progress_processed(worker)
        if processed is not None:
            processed_text = f"{processed:,}"
        else:
            processed_text = "-" if estimated is None else f"{estimated:,}*"
        failed = _int(summary.get("failed_count"))
        rows.append(
            (
                str(worker["index"]),
                worker.get("name") or "-",
                worker.get("node") or "-",
                _shard_text(report, selected, start, end),
                processed_text,
                "-" if failed is None else f"{failed:,}",
                _seconds(_duration(worker)),
                "-" if rate is None else f"{rate:,.2f}/s",
                str(count),
                stats,
                str(worker["state"]),
            )
        )
    return rows


def results_title(report: Mapping[str, Any]) -> str:
    """``Results``, naming the reruns when the accounting covers more than this run."""
    runs = (report.get("results") or {}).get("runs", [])
    return "Results" if len(runs) <= 1 else f"Results of {runs[0]} and its reruns"


def results_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The results accounting as label/value rows (empty before a merge)."""
    results = report.get("results")
    if not results:
        return []
    return [
        ("Merged results", str(results["merged_path"])),
        ("Runs merged", ", ".join(results.get("runs", [])) or "-"),
        ("Unique parameters", f"{results['unique']:,} of {results.get('expected', 0):,}"),
        ("Missing", f"{results['missing_count']:,} {results['missing_ranges']}".strip()),
        ("Duplicates", f"{results['duplicates']:,} {results.get('duplicate_ranges', '')}".strip()),
        ("Errors", f"{results.get('errors', 0):,} {results.get('error_ranges', '')}".strip()),
    ]


_STATE_STYLE = {SUCCEEDED: "green", FAILED: "red", MISSING: "yellow"}


def metrics_table(report: Mapping[str, Any]) -> Any:
    """The Performance Metrics table as a rich ``Table``."""
    from rich.table import Table

    table = Table(title="Performance Metrics", title_justify="left")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    for name, value in metrics_rows(report):
        table.add_row(name, value)
    return table


# Columns kept when the full table does not fit the console.
NARROW_COLUMNS = ("#", "Name", "Shard", "Processed", "Duration", "Params/s", "State")


def _workers_table(
    report: Mapping[str, Any], columns: Sequence[str], title: str, *, short_names: bool = False
) -> Any:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    notes = footnotes(report)
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        caption="\n".join(notes) or None,
        caption_justify="left",
    )
    numeric = {"#", "Processed", "Failed", "Duration", "Params/s", "Batches"}
    for column in columns:
        # One line per worker: a cell that does not fit ends in an ellipsis.
        table.add_column(
            column,
            justify="right" if column in numeric else "left",
            no_wrap=True,
            overflow="ellipsis",
        )
    positions = [WORKER_COLUMNS.index(c) for c in columns]
    name_at = columns.index("Name") if short_names and "Name" in columns else None
    run_id = str(report.get("run_id") or "")
    for row in worker_rows(report):
        cells: list[Any] = [row[i] for i in positions]
        if name_at is not None and run_id:
            # The run id is printed once above the table; "ttg-…-0" keeps names short.
            cells[name_at] = cells[name_at].replace(run_id, "…")
        state = row[-1]
        cells[-1] = Text(state, style=_STATE_STYLE.get(state, ""))
        table.add_row(*cells)
    return table


def workers_table(report: Mapping[str, Any], console: Any = None) -> Any:
    """The per-worker table as a rich ``Table``.

    With ``console``, the table keeps to its width: when every column does
    not fit, the node, failed and batch columns give way (the nodes move to
    the title).
    """
    table = _workers_table(report, WORKER_COLUMNS, "Workers")
    unbounded = console.options.update_width(10_000) if console is not None else None
    if console is None or console.measure(table, options=unbounded).maximum <= console.width:
        return table
    nodes = sorted({str(w.get("node") or "-") for w in report["workers"]})
    title = f"Workers on {', '.join(nodes)} (a wider terminal shows batch figures)"
    return _workers_table(report, NARROW_COLUMNS, title, short_names=True)


def results_table(report: Mapping[str, Any]) -> Any:
    """The results accounting as a rich ``Table`` (``None`` before a merge)."""
    from rich.table import Table

    rows = results_rows(report)
    if not rows:
        return None
    table = Table(title=results_title(report), title_justify="left", show_header=False)
    table.add_column("What")
    table.add_column("Value")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _print_problem(worker: Mapping[str, Any], console: Any) -> None:
    """One worker that did not succeed: a line for an interruption, else its last lines."""
    from rich.markup import escape

    if worker["state"] not in (FAILED, MISSING):
        return
    summary = worker.get("summary") or {}
    who = f"[bold]worker {worker['index']}[/bold] ({escape(worker.get('name') or '-')})"
    if summary.get("status") == "interrupted":
        done = summary.get("processed_count", 0)
        size = (_int(summary.get("range_end")) or 0) - (_int(summary.get("range_start")) or 0)
        console.print(f"{who} was interrupted after {done:,} of {size:,} parameters.")
        return
    code = worker.get("exit_code")
    message = worker.get("message") or ""
    if message == f"exited with code {code}":
        message = ""  # the exit code is already in the line
    text = f"{who} {'failed' if worker['state'] == FAILED else 'is missing'}"
    if code is not None:
        text += f" (exit code {code})"
    if message:
        text += f": {escape(message)}"
    tail = [line for line in worker.get("last_lines", []) if not line.startswith("{")][-5:]
    if not tail and not summary and not worker.get("last_lines"):
        if code is not None and "printed nothing" not in message:
            text += "; it printed nothing and no summary"
        console.print(text + ".", highlight=False)
        return
    console.print(text + "; last lines:", highlight=False)
    for line in tail:
        console.print(f"  {escape(line[:300])}", highlight=False)


def print_report(report: Mapping[str, Any], console: Any = None) -> None:
    """Print the metrics, worker and results tables, then problems worth reading."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    console.print(metrics_table(report))
    console.print(workers_table(report, console))
    results = results_table(report)
    if results is not None:
        console.print(results)
    for worker in report["workers"]:
        _print_problem(worker, console)
        for error in worker.get("parse_errors", [])[:5]:
            console.print(
                f"worker {worker['index']} line {error['line_no']} could not be parsed "
                f"({escape(error['error'])}): {escape(error['text'][:120])}",
                highlight=False,
            )
    console.print(f"Run {report['run_id']} {report['status']}.")


def print_results(report: Mapping[str, Any], console: Any = None, *, table: bool = True) -> None:
    """Print the results accounting of ``report`` and what is still missing or errored.

    With ``table=False`` only the lines after the table are printed (the
    caller has shown it already).
    """
    from rich.console import Console

    console = console or Console()
    rendered = results_table(report)
    if rendered is None:
        console.print(f"Run {report['run_id']} has no merged results yet.", highlight=False)
        return
    if table:
        console.print(rendered)
    results = report["results"]
    if results["missing_count"]:
        console.print(
            f"Missing {results['missing_count']:,} parameters: {results['missing_ranges']}",
            highlight=False,
        )
    if results.get("errors"):
        console.print(
            f"Errored {results['errors']:,} parameters: {results['error_ranges']}",
            highlight=False,
        )
    if results.get("complete") and not results.get("errors"):
        console.print(
            f"Every one of the {results['expected']:,} parameters has exactly one result.",
            highlight=False,
        )
