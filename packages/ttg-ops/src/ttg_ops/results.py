"""Results shards -> one merged file -> completeness -> the follow-up (rerun) spec.

Each worker appends one JSON object per parameter to
``<run dir>/results/results-<index:05d>.jsonl``. A run and the reruns that
complete it form a *lineage*: the first run is its root, and each rerun's
spec names its parent in ``parent_run_id``. :func:`merge_results` folds the
shards of the whole lineage into ``<root run dir>/results.jsonl``, sorted by
parameter index, where the newest result for an index wins (a successful
rerun replaces an error). It then checks that every selected parameter
appears exactly once and describes what is missing, duplicated or errored
as compact half-open ranges, written like ``TTG_ONLY``: ``"0:100,250:300"``.

:func:`rerun_spec` turns that accounting into the spec of a follow-up run
that computes only what is still missing or failed.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ttg_ops.errors import ConfigError
from ttg_ops.spec import RunSpec, new_run_id

Range = tuple[int, int]

REPORT_FILE = "report.json"
RESULTS_DIR = "results"
MERGED_FILE = "results.jsonl"
SHARD_GLOB = "results-*.jsonl"
_RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


# ---------------------------------------------------------------------------
# Index ranges
# ---------------------------------------------------------------------------


def parse_ranges(text: str) -> list[Range]:
    """Parse ``"start:end,start:end"`` (half-open, as in ``TTG_ONLY``) into sorted ranges.

    The worker's own parser (:func:`ttg_worker.sharding.parse_ranges`) does
    the work, so the tooling and the worker accept exactly the same text.
    Raises :class:`ConfigError` naming the bad part. Overlapping or adjacent
    ranges are merged.
    """
    from ttg_worker.errors import WorkerConfigError
    from ttg_worker.sharding import parse_ranges as parse_index_ranges

    try:
        return parse_index_ranges(text, setting="index ranges")
    except WorkerConfigError as exc:
        raise ConfigError(str(exc)) from None


def normalize_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sort ranges, drop empty ones and merge those that overlap or touch."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def format_ranges(ranges: Iterable[Range]) -> str:
    """The ``"start:end,start:end"`` spelling of ``ranges`` (what ``TTG_ONLY`` reads)."""
    return ",".join(f"{start}:{end}" for start, end in normalize_ranges(ranges))


def to_ranges(indexes: Iterable[int]) -> list[Range]:
    """Compact indexes into sorted half-open ranges: ``[0, 1, 2, 7]`` -> ``[(0, 3), (7, 8)]``."""
    ranges: list[Range] = []
    for index in sorted(set(indexes)):
        if ranges and index == ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], index + 1)
        else:
            ranges.append((index, index + 1))
    return ranges


def count_ranges(ranges: Iterable[Range]) -> int:
    """How many indexes ``ranges`` hold (they must not overlap; normalise first)."""
    return sum(end - start for start, end in ranges)


def iter_ranges(ranges: Iterable[Range]) -> Iterator[int]:
    """Every index of ``ranges``, in order."""
    for start, end in ranges:
        yield from range(start, end)


def subtract_ranges(ranges: Iterable[Range], remove: Iterable[Range]) -> list[Range]:
    """``ranges`` without the indexes of ``remove``."""
    result: list[Range] = []
    cuts = normalize_ranges(remove)
    for start, end in normalize_ranges(ranges):
        cursor = start
        for cut_start, cut_end in cuts:
            if cut_end <= cursor or cut_start >= end:
                continue
            if cut_start > cursor:
                result.append((cursor, cut_start))
            cursor = max(cursor, cut_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def slice_ranges(ranges: list[Range], start: int, end: int) -> list[Range]:
    """The indexes at positions ``start..end`` (half-open) of the sequence ``ranges`` spell."""
    result: list[Range] = []
    offset = 0
    for low, high in ranges:
        size = high - low
        lo = max(start - offset, 0)
        hi = min(end - offset, size)
        if lo < hi:
            result.append((low + lo, low + hi))
        offset += size
        if offset >= end:
            break
    return result


def shard_bounds(total: int, workers: int, index: int) -> Range:
    """Positions of worker ``index``'s shard: ``[floor(i*P/W), floor((i+1)*P/W))``."""
    return (index * total // workers, (index + 1) * total // workers)


def selected_ranges(spec: RunSpec, space_size: int | None = None) -> list[Range]:
    """The global parameter indexes ``spec`` selects, as ranges.

    ``space_size`` is the number of parameter sets in ``spec.space``; for the
    default integer range space it is ``spec.params`` and may be omitted.
    """
    size = spec.params if not spec.space else space_size
    if size is None:
        raise ConfigError(
            f"the size of the parameter space {spec.space!r} is unknown",
            hint="pass space_size, or merge after the workers wrote their summaries",
        )
    everything = [(0, size)] if size > 0 else []
    if not spec.only:
        return everything
    return [
        (max(start, 0), min(end, size)) for start, end in parse_ranges(spec.only) if start < size
    ]


# ---------------------------------------------------------------------------
# Merge
# ---------------------------------------------------------------------------


@dataclass
class MergeResult:
    """What merging the shards of a lineage found.

    ``expected`` are the indexes the root run selected; ``unique`` how many of
    them have a result; ``duplicates`` counts extra copies of an index inside
    one run (across runs the newest simply wins); ``errors`` are indexes whose
    kept result carries an error; ``unexpected`` are indexes outside the
    selection; ``torn_lines`` counts unreadable shard lines that were skipped.
    """

    run_id: str
    runs: list[str]
    merged_path: Path
    expected: list[Range]
    unique: int = 0
    duplicates: int = 0
    duplicate_ranges: list[Range] = field(default_factory=list)
    missing_ranges: list[Range] = field(default_factory=list)
    error_ranges: list[Range] = field(default_factory=list)
    unexpected_ranges: list[Range] = field(default_factory=list)
    torn_lines: int = 0
    replaced: int = 0

    @property
    def expected_count(self) -> int:
        return count_ranges(self.expected)

    @property
    def missing_count(self) -> int:
        return count_ranges(self.missing_ranges)

    @property
    def error_count(self) -> int:
        return count_ranges(self.error_ranges)

    @property
    def complete(self) -> bool:
        """Every selected parameter has exactly one result (errors included)."""
        return not self.missing_ranges and not self.duplicates and not self.unexpected_ranges

    @property
    def ok(self) -> bool:
        """Complete, and no kept result is an error."""
        return self.complete and not self.error_ranges

    def to_dict(self) -> dict[str, Any]:
        """The ``results`` section of ``report.json`` (see docs/REPORT.md)."""
        return {
            "merged_path": str(self.merged_path),
            "runs": list(self.runs),
            "expected": self.expected_count,
            "unique": self.unique,
            "duplicates": self.duplicates,
            "duplicate_ranges": format_ranges(self.duplicate_ranges),
            "missing_count": self.missing_count,
            "missing_ranges": format_ranges(self.missing_ranges),
            "errors": self.error_count,
            "error_ranges": format_ranges(self.error_ranges),
            "unexpected_ranges": format_ranges(self.unexpected_ranges),
            "replaced": self.replaced,
            "torn_lines": self.torn_lines,
            "complete": self.complete,
        }


@dataclass
class _Kept:
    line: str
    error: bool
    run_id: str


def read_shard(path: Path) -> tuple[list[tuple[int, bool, str]], int]:
    """Read one shard: ``([(index, has_error, line), ...], unreadable line count)``.

    A last line without its newline is a torn write and is skipped, like a
    line that is not a JSON object with an integer ``index``.
    """
    records: list[tuple[int, bool, str]] = []
    bad = 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # no trailing newline: the writer died mid-line
        bad += 1
    for raw in lines:
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            bad += 1
            continue
        index = obj.get("index") if isinstance(obj, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            bad += 1
            continue
        records.append((index, obj.get("error") not in (None, ""), text))
    return records, bad


def shard_paths(run_dir: Path) -> list[Path]:
    """The results shards of one run, by worker index."""
    return sorted((run_dir / RESULTS_DIR).glob(SHARD_GLOB))


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning a missing or broken file into a :class:`ConfigError`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


def spec_from_dict(data: dict[str, Any]) -> RunSpec:
    """A :class:`RunSpec` from ``RunSpec.to_dict()`` output, ignoring keys it does not know."""
    known = {f.name for f in fields(RunSpec)}
    return RunSpec(**{k: v for k, v in data.items() if k in known})


def lineage(runs_root: Path, run_id: str) -> list[dict[str, Any]]:
    """The reports of ``run_id``'s lineage: its root run first, then reruns, oldest first.

    Reruns are found by their ``spec.parent_run_id`` among the reports under
    ``runs_root``; a chain of reruns (a rerun of a rerun) is followed.
    """
    reports: dict[str, dict[str, Any]] = {}
    for path in sorted(runs_root.glob(f"*/{REPORT_FILE}")):
        if path.parent.is_symlink():  # the `latest` pointer
            continue
        try:
            report = load_json(path)
        except ConfigError:
            continue
        rid = report.get("run_id")
        if isinstance(rid, str):
            reports[rid] = report
    if run_id not in reports:
        raise ConfigError(
            f"run {run_id!r} has no {REPORT_FILE} under {runs_root}",
            hint="list the runs with `ls runs/`, or pass --run-id",
        )

    def parent(rid: str) -> str:
        value = reports[rid].get("spec", {}).get("parent_run_id", "")
        return value if isinstance(value, str) and value in reports else ""

    root = run_id
    seen = {root}
    while parent(root) and parent(root) not in seen:
        root = parent(root)
        seen.add(root)

    members = [root]
    frontier = [root]
    while frontier:
        children = [rid for rid in reports if parent(rid) in frontier and rid not in members]
        members.extend(children)
        frontier = children
    rest = sorted(members[1:], key=lambda rid: (reports[rid].get("created_at") or 0, rid))
    return [reports[root], *(reports[rid] for rid in rest)]


def spec_space_size(spec: RunSpec, summaries: Iterable[dict[str, Any] | None] = ()) -> int | None:
    """The number of parameter sets in ``spec``'s space, or ``None`` if it cannot be told.

    The integer range space has ``spec.params``; a space file is sized from a
    worker summary that states it, else by loading the file as the worker
    does (it may exist only inside the worker image, hence ``None``).
    """
    if not spec.space:
        return spec.params
    for summary in summaries:
        value = (summary or {}).get("space_size")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    try:
        from ttg_worker.spaces import load_space

        return len(load_space(spec.space, spec.params))
    except Exception:  # the file may only exist inside the image, or be broken
        return None


def space_size(report: dict[str, Any]) -> int | None:
    """The size of a reported run's parameter space, from its spec, summaries or aggregate."""
    spec = spec_from_dict(report.get("spec", {}))
    size = spec_space_size(spec, (w.get("summary") for w in report.get("workers", [])))
    if size is not None:
        return size
    total = report.get("aggregate", {}).get("total_parameters")
    if isinstance(total, int) and not spec.only:
        return total
    return None


def merge_results(run_dir: Path, *, expected: list[Range] | None = None) -> MergeResult:
    """Merge the shards of ``run_dir``'s lineage into ``<root run dir>/results.jsonl``.

    ``run_dir`` may be the root run or any of its reruns; every run of the
    lineage needs its ``report.json`` (written by :func:`ttg_ops.report.write_report`).
    ``expected`` overrides the selected indexes (for a run without a report,
    only that run's shards are merged). Returns the accounting; raises
    :class:`ConfigError` when the run has no report and no ``expected``.
    """
    run_dir = Path(run_dir)
    if run_dir.is_symlink():  # `runs/latest`: merge under the run's real name
        run_dir = run_dir.parent / run_dir.resolve().name
    if expected is None or (run_dir / REPORT_FILE).exists():
        reports = lineage(run_dir.parent, run_dir.name)
        root = reports[0]
        root_id = str(root["run_id"])
        run_ids = [str(r["run_id"]) for r in reports]
        if expected is None:
            spec = spec_from_dict(root.get("spec", {}))
            expected = selected_ranges(spec, space_size(root))
    else:
        root_id = run_dir.name
        run_ids = [root_id]
    root_dir = run_dir.parent / root_id
    expected = normalize_ranges(expected)

    kept: dict[int, _Kept] = {}
    duplicates: set[int] = set()
    duplicate_copies = 0
    torn = 0
    replaced = 0
    for rid in run_ids:
        seen_here: set[int] = set()
        for shard in shard_paths(run_dir.parent / rid):
            records, bad = read_shard(shard)
            torn += bad
            for index, error, line in records:
                if index in seen_here:
                    duplicates.add(index)
                    duplicate_copies += 1
                elif index in kept:
                    replaced += 1
                seen_here.add(index)
                kept[index] = _Kept(line, error, rid)

    merged_path = root_dir / MERGED_FILE
    root_dir.mkdir(parents=True, exist_ok=True)
    tmp = merged_path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for index in sorted(kept):
            out.write(kept[index].line + "\n")
    os.replace(tmp, merged_path)

    present = to_ranges(kept)
    inside = subtract_ranges(present, subtract_ranges(present, expected))
    return MergeResult(
        run_id=root_id,
        runs=run_ids,
        merged_path=merged_path,
        expected=expected,
        unique=count_ranges(inside),
        duplicates=duplicate_copies,
        duplicate_ranges=to_ranges(duplicates),
        missing_ranges=subtract_ranges(expected, present),
        error_ranges=to_ranges(i for i, k in kept.items() if k.error),
        unexpected_ranges=subtract_ranges(present, expected),
        torn_lines=torn,
        replaced=replaced,
    )


# ---------------------------------------------------------------------------
# Reruns
# ---------------------------------------------------------------------------


def _child_run_id(root_id: str, generation: int, runs_root: Path) -> str:
    """``<root>-r<n>`` for the first ``n >= generation`` whose directory is free."""
    while (runs_root / f"{root_id}-r{generation}").exists():
        generation += 1
    candidate = f"{root_id}-r{generation}"
    return candidate if _RUN_ID.match(candidate) else new_run_id()


def failed_shard_ranges(report: dict[str, Any], space: int | None = None) -> list[Range]:
    """The global indexes of the shards of workers that failed or are missing in ``report``."""
    spec = spec_from_dict(report.get("spec", {}))
    selection = selected_ranges(spec, space if space is not None else space_size(report))
    total = count_ranges(selection)
    out: list[Range] = []
    for worker in report.get("workers", []):
        if worker.get("state") in ("failed", "missing"):
            start, end = shard_bounds(total, spec.workers, int(worker["index"]))
            out.extend(slice_ranges(selection, start, end))
    return normalize_ranges(out)


def rerun_spec(
    report: dict[str, Any],
    results: MergeResult,
    *,
    whole_shards: bool = False,
    workers: int | None = None,
) -> RunSpec | None:
    """The follow-up spec that completes ``report``'s lineage, or ``None`` if nothing is left.

    It keeps the space, task, options, batch size, version and log settings,
    and sets ``only`` to the indexes still missing from ``results`` plus those
    whose kept result is an error. With ``whole_shards`` the complete shards
    of failed or missing workers are redone too (by default their results
    that were written before the failure are kept). The run id is
    ``<root>-r<n>`` (or a fresh id when that would be too long) and
    ``parent_run_id`` is ``report``'s run id. The worker count shrinks so
    that each worker gets at least one full batch, unless ``workers`` is given.
    """
    todo = list(results.missing_ranges) + list(results.error_ranges)
    if whole_shards:
        todo += failed_shard_ranges(report)
    todo = normalize_ranges(todo)
    count = count_ranges(todo)
    if count == 0:
        return None

    base = spec_from_dict(report.get("spec", {}))
    if workers is None:
        workers = max(1, min(base.workers, math.ceil(count / base.batch_size)))
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    workers = min(workers, count)
    return replace(
        base,
        workers=workers,
        only=format_ranges(todo),
        run_id=_child_run_id(results.run_id, len(results.runs), results.merged_path.parent.parent),
        parent_run_id=str(report.get("run_id", "")),
    )
