"""Results shards: the line encoding, torn-line recovery and the sync policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ttg_worker.results import ResultsWriter, encode, encode_unserialisable, recover, shard_path

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(deadline=None)  # the shared CI machine can stall any single example
@given(
    index=st.integers(0, 10**9), params=JSON_VALUES, value=JSON_VALUES, error=st.none() | st.text()
)
def test_a_results_line_is_exactly_what_json_dumps_writes(
    index: int, params: Any, value: Any, error: str | None
) -> None:
    record = {"index": index, "params": params, "value": value, "error": error}
    line = encode(index, params, value, error)
    assert line == json.dumps(record, ensure_ascii=False) + "\n"
    assert json.loads(line) == record


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {1j: 2}])
def test_non_json_values_raise_so_the_worker_records_an_error(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)) as info:
        encode(1, 1, value, None)
    line = encode_unserialisable(1, 1, value, info.value)
    record = json.loads(line)
    assert record["value"] is None
    assert record["error"].startswith("TypeError: the result")


def test_the_shard_file_name_has_five_digits() -> None:
    assert shard_path("out", 7) == Path("out/results-00007.jsonl")


def test_recover_cuts_a_torn_tail_and_lists_complete_indexes(tmp_path: Path) -> None:
    path = tmp_path / "results-00000.jsonl"
    path.write_bytes(b'{"index": 0}\n{"index": 1}\n{"index": 2, "val')
    done, cut = recover(path)
    assert (done, cut) == ({0, 1}, len(b'{"index": 2, "val'))
    assert path.read_bytes() == b'{"index": 0}\n{"index": 1}\n'
    assert recover(path) == ({0, 1}, 0)


def test_recover_also_drops_a_complete_but_garbled_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results-00000.jsonl"
    path.write_bytes(b'{"index": 0}\n\x00\x00\x00\n')
    assert recover(path) == ({0}, 4)
    assert path.read_bytes() == b'{"index": 0}\n'


def test_recover_keeps_an_unreadable_line_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "results-00000.jsonl"
    content = b'{"index": 0}\nnot json\n{"index": 1}\n'
    path.write_bytes(content)
    assert recover(path) == ({0, 1}, 0)
    assert path.read_bytes() == content


def test_recover_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert recover(tmp_path / "absent.jsonl") == (set(), 0)


def test_the_writer_syncs_at_most_once_per_interval_and_on_close(tmp_path: Path) -> None:
    lazy = ResultsWriter(tmp_path / "lazy.jsonl", fsync_interval=3600)
    for index in range(5):
        lazy.write_batch([encode(index, index, None, None)])
    assert lazy.syncs == 0
    assert len((tmp_path / "lazy.jsonl").read_text().splitlines()) == 5  # flushed already
    lazy.close()
    assert lazy.syncs == 1

    eager = ResultsWriter(tmp_path / "eager.jsonl", fsync_interval=0)
    for index in range(3):
        eager.write_batch([encode(index, index, None, None)])
    eager.close()
    assert eager.syncs == 3


def test_an_unwritable_output_directory_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    from ttg_worker.errors import WorkerConfigError

    with pytest.raises(WorkerConfigError, match="TTG_OUTPUT_DIR="):
        ResultsWriter(blocker / "sub" / "results-00000.jsonl")
