"""Sharding: worker i of W over P parameters gets [floor(i*P/W), floor((i+1)*P/W))."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ttg_worker.errors import WorkerConfigError
from ttg_worker.sharding import Selection, parse_only, shard_bounds


def test_the_seed_split_of_10000_over_3_workers() -> None:
    assert [shard_bounds(i, 3, 10_000) for i in range(3)] == [
        (0, 3333),
        (3333, 6666),
        (6666, 10_000),
    ]


@settings(deadline=None)  # the shared CI machine can stall any single example
@given(total=st.integers(0, 100_000), workers=st.integers(1, 300))
def test_shards_partition_the_parameters_exactly(total: int, workers: int) -> None:
    bounds = [shard_bounds(i, workers, total) for i in range(workers)]

    # Contiguous, in order, covering 0..total with no gap or overlap.
    assert bounds[0][0] == 0
    assert bounds[-1][1] == total
    for (_, end), (start, _) in itertools.pairwise(bounds):
        assert end == start

    # Balanced: sizes differ by at most one; with more workers than parameters some are empty.
    sizes = [end - start for start, end in bounds]
    assert sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1
    assert all(size >= 0 for size in sizes)


@settings(deadline=None)  # the shared CI machine can stall any single example
@given(
    ranges=st.lists(st.tuples(st.integers(0, 500), st.integers(1, 60)), max_size=8),
    workers=st.integers(1, 40),
)
def test_shards_of_a_selection_cover_every_selected_index_once(
    ranges: list[tuple[int, int]], workers: int
) -> None:
    size = 600
    text = ",".join(f"{start}:{start + length}" for start, length in ranges)
    selection = parse_only(text, size) if ranges else Selection.everything(size)
    expected = sorted({i for start, length in ranges for i in range(start, start + length)})
    if not ranges:
        expected = list(range(size))

    assert list(selection.indexes()) == expected
    assert len(selection) == len(expected)
    seen: list[int] = []
    for worker in range(workers):
        start, end = shard_bounds(worker, workers, len(selection))
        seen.extend(selection.indexes(start, end))
        for position in range(start, end):
            assert selection.at(position) == expected[position]
    assert seen == expected


def test_more_workers_than_parameters_leaves_empty_shards() -> None:
    bounds = [shard_bounds(i, 5, 2) for i in range(5)]
    assert [end - start for start, end in bounds] == [0, 0, 1, 0, 1]


@pytest.mark.parametrize(
    ("index", "workers", "total"),
    [(0, 0, 10), (3, 3, 10), (-1, 3, 10), (0, 1, -1)],
    ids=["no-workers", "index-too-high", "negative-index", "negative-total"],
)
def test_shard_bounds_rejects_impossible_arguments(index: int, workers: int, total: int) -> None:
    with pytest.raises(ValueError, match=r"must be|outside"):
        shard_bounds(index, workers, total)


def test_only_merges_overlapping_ranges_in_any_order() -> None:
    assert parse_only("50:60, 0:10,5:20", 100).ranges == ((0, 20), (50, 60))
    assert parse_only("", 7).ranges == ((0, 7),)
    assert parse_only("", 0).ranges == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", "is not a range"),
        ("a:b", "is not a range"),
        ("1:2:3", "is not a range"),
        ("5:5", "0 <= start < end <= 100"),
        ("90:101", "the space has 100 parameters"),
        ("-1:4", "0 <= start < end"),
    ],
)
def test_only_rejects_bad_ranges_naming_the_setting(text: str, message: str) -> None:
    with pytest.raises(WorkerConfigError, match="TTG_ONLY") as info:
        parse_only(text, 100)
    assert message in str(info.value)
