"""Merging result shards, completeness accounting and the follow-up spec."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ttg_ops.backends.base import SUCCEEDED, WorkerState
from ttg_ops.errors import ConfigError
from ttg_ops.report import build_report, write_report
from ttg_ops.results import (
    count_ranges,
    failed_shard_ranges,
    format_ranges,
    iter_ranges,
    merge_results,
    normalize_ranges,
    parse_ranges,
    read_shard,
    rerun_spec,
    selected_ranges,
    slice_ranges,
    subtract_ranges,
    to_ranges,
)
from ttg_ops.spec import RunSpec

index_sets = st.sets(st.integers(min_value=0, max_value=300), max_size=120)


@given(index_sets)
def test_to_ranges_holds_exactly_the_indexes(indexes: set[int]) -> None:
    ranges = to_ranges(indexes)
    assert set(iter_ranges(ranges)) == indexes
    assert count_ranges(ranges) == len(indexes)
    # Compact: no two ranges touch.
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))


@given(index_sets)
def test_format_then_parse_round_trips(indexes: set[int]) -> None:
    ranges = to_ranges(indexes)
    assert parse_ranges(format_ranges(ranges)) == ranges


@given(index_sets, index_sets)
def test_subtract_ranges_is_set_difference(a: set[int], b: set[int]) -> None:
    result = subtract_ranges(to_ranges(a), to_ranges(b))
    assert set(iter_ranges(result)) == a - b


@given(index_sets, st.integers(0, 150), st.integers(0, 150))
def test_slice_ranges_is_list_slicing(indexes: set[int], start: int, length: int) -> None:
    ordered = sorted(indexes)
    sliced = slice_ranges(to_ranges(indexes), start, start + length)
    assert list(iter_ranges(sliced)) == ordered[start : start + length]


def test_normalize_ranges_merges_overlaps_and_drops_empty() -> None:
    assert normalize_ranges([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)]) == [(0, 4), (5, 12)]


@pytest.mark.parametrize("text", ["5", "a:b", "1:2:3", "9:3", "-1:4"], ids=repr)
def test_parse_ranges_rejects_bad_input_naming_it(text: str) -> None:
    with pytest.raises(ConfigError, match="index range"):
        parse_ranges(text)


def test_selected_ranges_clips_only_to_the_space() -> None:
    spec = RunSpec(params=100, only="90:120,10:20", run_id="sel")
    assert selected_ranges(spec) == [(10, 20), (90, 100)]
    assert selected_ranges(RunSpec(params=1, only="0:1", run_id="one")) == [(0, 1)]


def test_read_shard_skips_a_torn_last_line_and_garbage(tmp_path: Path) -> None:
    shard = tmp_path / "results-00000.jsonl"
    shard.write_text(
        '{"index": 0, "params": 0, "value": 1, "error": null}\n'
        "not json\n"
        '{"index": "x"}\n'
        '{"index": 1, "params": 1, "value": null, "error": "boom"}\n'
        '{"index": 2, "par'
    )
    records, bad = read_shard(shard)
    assert [(i, err) for i, err, _ in records] == [(0, False), (1, True)]
    assert bad == 3


# ---------------------------------------------------------------------------
# Lineages built by hand: a report per run and shards as workers write them
# ---------------------------------------------------------------------------


def _write_run(root: Path, spec: RunSpec, shards: dict[int, list[tuple[int, str | None]]]) -> Path:
    """A finished run: shards of ``(index, error)`` records and a report without lines."""
    run_dir = root / spec.run_id
    (run_dir / "results").mkdir(parents=True)
    for worker, records in shards.items():
        with (run_dir / "results" / f"results-{worker:05d}.jsonl").open("w") as out:
            for index, error in records:
                value = None if error else index * 2
                line = {"index": index, "params": index, "value": value, "error": error}
                out.write(json.dumps(line) + "\n")
    states = [WorkerState(index=i, state=SUCCEEDED, exit_code=0) for i in range(spec.workers)]
    write_report(build_report(spec, "process", states, {}), run_dir)
    return run_dir


def test_merge_sorts_by_index_and_accounts_for_every_parameter(tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=10, run_id="full")
    run_dir = _write_run(
        tmp_path, spec, {1: [(i, None) for i in range(5, 10)], 0: [(i, None) for i in range(5)]}
    )
    merge = merge_results(run_dir)
    lines = merge.merged_path.read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(10))
    assert merge.ok and merge.complete
    assert (merge.unique, merge.missing_count, merge.duplicates) == (10, 0, 0)
    assert merge.merged_path == run_dir / "results.jsonl"


def test_merge_reports_missing_duplicates_errors_and_strays(tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=20, run_id="holes")
    run_dir = _write_run(
        tmp_path,
        spec,
        {
            0: [(0, None), (1, None), (2, "ValueError: bad"), (3, None)],
            1: [(3, None), (10, None), (11, None), (25, None)],
        },
    )
    merge = merge_results(run_dir)
    assert format_ranges(merge.missing_ranges) == "4:10,12:20"
    assert merge.missing_count == 14
    assert merge.duplicates == 1 and merge.duplicate_ranges == [(3, 4)]
    assert merge.error_ranges == [(2, 3)]
    assert merge.unexpected_ranges == [(25, 26)]
    assert not merge.complete
    section = merge.to_dict()
    assert section["missing_ranges"] == "4:10,12:20"
    assert section["unique"] == 6


def test_rerun_spec_covers_missing_and_errored_and_shrinks_workers(tmp_path: Path) -> None:
    spec = RunSpec(workers=4, params=2000, batch_size=100, run_id="parent", task="simulate")
    shards: dict[int, list[tuple[int, str | None]]] = {
        0: [(i, None) for i in range(500)],
        1: [(i, "boom" if i == 600 else None) for i in range(500, 1000)],
        # worker 2 died after 100 parameters; worker 3 never wrote anything
        2: [(i, None) for i in range(1000, 1100)],
    }
    run_dir = _write_run(tmp_path, spec, shards)
    merge = merge_results(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    follow = rerun_spec(report, merge)
    assert follow is not None
    assert follow.only == "600:601,1100:2000"
    assert follow.parent_run_id == "parent"
    assert follow.run_id == "parent-r1"
    assert follow.workers == 4  # 901 parameters at 100 per batch still fill 4 workers
    assert (follow.task, follow.batch_size, follow.params) == ("simulate", 100, 2000)
    pinned = rerun_spec(report, merge, workers=2)
    assert pinned is not None and pinned.workers == 2
    # A directory left by an earlier attempt (say it died before its report) is not reused.
    (tmp_path / "parent-r1").mkdir()
    again = rerun_spec(report, merge)
    assert again is not None and again.run_id == "parent-r2"


def test_rerun_spec_uses_one_worker_for_a_handful_of_parameters(tmp_path: Path) -> None:
    spec = RunSpec(workers=3, params=30, batch_size=500, run_id="few")
    run_dir = _write_run(tmp_path, spec, {0: [(i, None) for i in range(28)]})
    merge = merge_results(run_dir)
    follow = rerun_spec(json.loads((run_dir / "report.json").read_text()), merge)
    assert follow is not None
    assert (follow.only, follow.workers) == ("28:30", 1)


def test_rerun_spec_is_none_for_a_complete_run(tmp_path: Path) -> None:
    spec = RunSpec(workers=1, params=5, run_id="done")
    run_dir = _write_run(tmp_path, spec, {0: [(i, None) for i in range(5)]})
    merge = merge_results(run_dir)
    assert rerun_spec(json.loads((run_dir / "report.json").read_text()), merge) is None


def test_newest_result_wins_across_the_lineage(tmp_path: Path) -> None:
    parent = RunSpec(workers=2, params=10, run_id="base")
    _write_run(
        tmp_path,
        parent,
        {0: [(0, None), (1, "boom"), (2, None), (3, None), (4, None)], 1: [(5, None), (6, None)]},
    )
    merge = merge_results(tmp_path / "base")
    follow = rerun_spec(json.loads((tmp_path / "base" / "report.json").read_text()), merge)
    assert follow is not None and follow.only == "1:2,7:10"
    child_dir = _write_run(tmp_path, follow, {0: [(1, None), (7, None)], 1: [(8, None), (9, None)]})

    merged = merge_results(child_dir)
    assert merged.run_id == "base" and merged.runs == ["base", "base-r1"]
    assert merged.ok and merged.unique == 10 and merged.replaced == 1
    records = [json.loads(line) for line in merged.merged_path.read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(10))
    assert records[1]["error"] is None and records[1]["value"] == 2


def test_failed_shard_ranges_maps_positions_through_only(tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=100, only="10:20,50:60", run_id="shards")
    run_dir = _write_run(tmp_path, spec, {})
    report = json.loads((run_dir / "report.json").read_text())
    # No summaries: both workers are missing; worker 1's shard is positions 10..20.
    assert failed_shard_ranges(report) == [(10, 20), (50, 60)]
    report["workers"][0]["state"] = "succeeded"
    assert failed_shard_ranges(report) == [(50, 60)]


def test_merge_without_a_report_needs_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no report\.json"):
        merge_results(tmp_path / "nothing")
    (tmp_path / "bare" / "results").mkdir(parents=True)
    (tmp_path / "bare" / "results" / "results-00000.jsonl").write_text(
        '{"index": 0, "params": 0, "value": 0, "error": null}\n'
    )
    merge = merge_results(tmp_path / "bare", expected=[(0, 2)])
    assert merge.missing_ranges == [(1, 2)] and merge.runs == ["bare"]


def test_whole_shards_redoes_the_complete_shard_of_a_failed_worker(tmp_path: Path) -> None:
    spec = RunSpec(workers=2, params=20, batch_size=5, run_id="whole")
    run_dir = _write_run(
        tmp_path, spec, {0: [(i, None) for i in range(10)], 1: [(i, None) for i in range(10, 14)]}
    )
    report = json.loads((run_dir / "report.json").read_text())
    report["workers"][0]["state"] = "succeeded"  # worker 1 stays missing: it has no summary
    merge = merge_results(run_dir)
    assert rerun_spec(report, merge) is not None
    assert rerun_spec(report, merge).only == "14:20"  # type: ignore[union-attr]
    whole = rerun_spec(report, merge, whole_shards=True)
    assert whole is not None and whole.only == "10:20"


@settings(max_examples=40, deadline=None)
@given(
    params=st.integers(1, 60),
    data=st.data(),
)
def test_a_rerun_completes_any_lineage_exactly_once(params: int, data: st.DataObject) -> None:
    present = data.draw(st.sets(st.integers(0, params - 1)), label="written by the first run")
    errors = data.draw(st.sets(st.sampled_from(sorted(present))) if present else st.just(set()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = RunSpec(workers=2, params=params, batch_size=7, run_id="prop")
        records = [(i, "boom" if i in errors else None) for i in sorted(present)]
        _write_run(root, spec, {0: records})
        merge = merge_results(root / "prop")
        assert merge.missing_count == params - len(present)
        assert merge.error_count == len(errors)

        report = json.loads((root / "prop" / "report.json").read_text())
        follow = rerun_spec(report, merge)
        todo = (set(range(params)) - present) | errors
        if not todo:
            assert follow is None and merge.ok
            return
        assert follow is not None
        assert set(iter_ranges(parse_ranges(follow.only))) == todo
        assert 1 <= follow.workers <= min(2, len(todo))
        _write_run(root, follow, {0: [(i, None) for i in sorted(todo)]})

        final = merge_results(root / follow.run_id)
        assert final.ok and final.unique == params and final.replaced == len(errors)
        lines = final.merged_path.read_text().splitlines()
        assert [json.loads(line)["index"] for line in lines] == list(range(params))


@pytest.mark.parametrize("text", ["0:5,5:9,20:30", "3:4", " 7:9 , 1:2 ", "0:10,2:3"])
def test_the_tooling_and_the_worker_parse_ranges_identically(text: str) -> None:
    from ttg_worker.sharding import parse_only

    assert tuple(parse_ranges(text)) == parse_only(text, 1000).ranges


def test_parse_ranges_is_the_workers_parser() -> None:
    from ttg_worker import sharding

    with pytest.raises(ConfigError, match=r"index ranges='1:2:3': '1:2:3' is not a range"):
        parse_ranges("1:2:3")
    assert sharding.parse_ranges("4:6,0:2") == parse_ranges("0:2,4:6")
