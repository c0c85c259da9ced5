"""Parameter spaces: range, grid (YAML/JSON), JSONL and CSV enumerate in a stable order."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from ttg_worker.errors import WorkerConfigError
from ttg_worker.spaces import GridSpace, csv_value, load_space


def test_the_default_space_is_the_integer_range() -> None:
    space = load_space("", 10_000)
    assert (space.kind, len(space), space[0], space[9_999]) == ("range", 10_000, 0, 9_999)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_a_grid_is_the_cartesian_product_with_keys_in_file_order(
    tmp_path: Path, suffix: str
) -> None:
    axes = {"lr": [0.1, 0.01, 0.001], "depth": [2, 4], "act": ["relu", "tanh", "gelu", "elu"]}
    path = tmp_path / f"grid{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(axes))
    else:
        path.write_text("lr: [0.1, 0.01, 0.001]\ndepth: [2, 4]\nact: [relu, tanh, gelu, elu]\n")

    space = load_space(str(path), 5)
    expected = [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]
    assert space.kind == "grid"
    assert len(space) == 24
    assert [space[i] for i in range(len(space))] == expected
    assert list(space[0]) == ["lr", "depth", "act"]


def test_a_large_grid_is_decoded_by_index_without_materialising() -> None:
    space = GridSpace({"a": list(range(1000)), "b": list(range(1000)), "c": list(range(1000))})
    assert len(space) == 1_000_000_000
    assert space[123_456_789] == {"a": 123, "b": 456, "c": 789}
    with pytest.raises(IndexError):
        space[len(space)]


def test_jsonl_lines_are_parameters_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "params.jsonl"
    path.write_text('{"n": 3}\n\n{"n": 1, "tag": "x"}\r\n{"n": 2}\n')
    space = load_space(str(path), 999)
    assert (space.kind, len(space)) == ("jsonl", 3)
    assert [space[i] for i in range(3)] == [{"n": 3}, {"n": 1, "tag": "x"}, {"n": 2}]


def test_csv_rows_are_dicts_with_numbers_parsed(tmp_path: Path) -> None:
    path = tmp_path / "params.csv"
    path.write_text("n,rate,name,code,empty\n1,0.5,alpha,007,\n-2,1e-3,beta,nan,\n")
    space = load_space(str(path), 0)
    assert space.kind == "csv"
    assert space[0] == {"n": 1, "rate": 0.5, "name": "alpha", "code": "007", "empty": ""}
    assert space[1] == {"n": -2, "rate": 0.001, "name": "beta", "code": "nan", "empty": ""}


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("42", 42),
        ("-3", -3),
        ("+7", 7),
        ("0", 0),
        ("0.25", 0.25),
        (".5", 0.5),
        ("2.", 2.0),
        ("1e6", 1e6),
        ("007", "007"),
        ("inf", "inf"),
        ("1_000", "1_000"),
        (" 4", " 4"),
        ("", ""),
        ("abc", "abc"),
    ],
)
def test_csv_values_become_numbers_only_when_they_read_as_decimal_numbers(
    cell: str, value: object
) -> None:
    assert csv_value(cell) == value
    assert type(csv_value(cell)) is type(value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("grid.yaml", "- 1\n- 2\n", "non-empty mapping"),
        ("grid.yaml", "a: [1, 2]\nb: []\n", "axis 'b' must be a non-empty list"),
        ("grid.yaml", "a: [1, 2\n", "not valid YAML"),
        ("grid.yaml", "a: [1, 2\nb: [3\n", "but got ':' at line 2, column 2)"),
        ("grid.json", "{", "not valid JSON"),
        ("grid.json", '{"a": 5}', "axis 'a'"),
        ("p.jsonl", '{"n": 1}\n[1]\n', "line 2 must be a JSON object"),
        ("p.jsonl", '{"n": 1}\n{oops\n', "line 2 is not valid JSON"),
        ("p.csv", "", "needs a header row"),
        ("p.csv", "a,b\n1,2\n1,2,3\n", "line 3 has 3 cells but the header names 2"),
        ("p.csv", "a,b\n1,2\n1\n", "line 3 has 1 cells but the header names 2"),
        ("p.csv", "a,b\n", "the csv file defines no parameters"),
        ("p.jsonl", "\n\n", "the jsonl file defines no parameters"),
        ("p.txt", "1\n", "allowed: .yaml, .yml, .json, .jsonl, .csv"),
    ],
)
def test_bad_space_files_name_the_setting_and_the_problem(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(WorkerConfigError, match="TTG_SPACE=") as info:
        load_space(str(path), 10)
    assert message in str(info.value)
    assert "\n" not in str(info.value)  # one line, whatever the parser said


def test_an_empty_range_space_is_refused() -> None:
    with pytest.raises(WorkerConfigError, match="TTG_TOTAL_PARAMS=0: an empty space"):
        load_space("", 0)


def test_a_missing_space_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(WorkerConfigError, match=r"cannot read the file.*FileNotFoundError"):
        load_space(str(tmp_path / "absent.yaml"), 10)


def test_a_byte_order_mark_does_not_rename_the_first_csv_column(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffn,name\n7,seven\n".encode())
    assert load_space(str(path), 0)[0] == {"n": 7, "name": "seven"}
