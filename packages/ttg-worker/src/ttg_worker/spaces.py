"""Parameter spaces: what the global parameter index ``i`` stands for.

- ``range``: ``TTG_TOTAL_PARAMS`` integers; the parameter is ``i`` itself.
- grid (``.yaml``/``.yml``/``.json``): a mapping ``name -> list of values``;
  the parameters are the cartesian product in ``itertools.product`` order
  with keys in file order (the last key varies fastest). Parameter ``i`` is
  computed from ``i`` by mixed-radix decoding, so a large grid is never
  materialised.
- ``.jsonl``: one JSON object per non-blank line; parameter ``i`` is line ``i``.
- ``.csv``: a header row and one parameter per row, as a dict. A value that
  reads as a decimal integer (``42``, ``-3``) becomes an int, one that reads
  as a decimal float (``0.5``, ``1e-3``, ``-2.``) a float; anything else,
  including empty cells, ``nan``, ``inf`` and numbers with leading zeros
  like ``007``, stays a string.

Every worker loads the same file and enumerates it identically, so the
global index means the same parameter on every worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ttg_worker.errors import WorkerConfigError

SPACE_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl", ".csv")
_INT = re.compile(r"^[-+]?(0|[1-9]\d*)$")
_FLOAT = re.compile(r"^[-+]?((\d+\.\d*|\.\d+)([eE][-+]?\d+)?|\d+[eE][-+]?\d+)$")


class Space(Protocol):
    """A finite, ordered parameter space."""

    kind: str
    source: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class RangeSpace:
    """The integers ``0 .. size-1``; the parameter is the global index."""

    kind = "range"
    source = ""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


class GridSpace:
    """The cartesian product of named value lists, in itertools.product order."""

    kind = "grid"

    def __init__(self, axes: dict[str, list[Any]], source: str = "") -> None:
        self.names = list(axes)
        self.values = [list(values) for values in axes.values()]
        self.source = source
        size = 1
        for values in self.values:
            size *= len(values)
        self.size = size if self.values else 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        picked: list[Any] = []
        for values in reversed(self.values):
            index, position = divmod(index, len(values))
            picked.append(values[position])
        return dict(zip(self.names, reversed(picked), strict=True))


class ListSpace:
    """Parameters read from a JSONL or CSV file, one per record."""

    def __init__(self, kind: str, items: Sequence[dict[str, Any]], source: str) -> None:
        self.kind = kind
        self.items = items
        self.source = source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def csv_value(text: str) -> int | float | str:
    """A CSV cell as an int, a float or the string itself (see the module docs)."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def _bad(path: str, problem: str) -> WorkerConfigError:
    return WorkerConfigError(f"TTG_SPACE={path!r}: {problem}")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise _bad(path, f"cannot read the file ({type(exc).__name__}: {exc})") from None


def _yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: its problem and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def _load_grid(path: str, text: str) -> GridSpace:
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise _bad(path, f"not valid JSON ({exc})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise _bad(path, f"not valid YAML ({_yaml_problem(exc)})") from None

    if not isinstance(data, dict) or not data:
        raise _bad(path, "a grid must be a non-empty mapping of name -> list of values")
    for name, values in data.items():
        if not isinstance(values, list) or not values:
            raise _bad(
                path, f"grid axis {name!r} must be a non-empty list of values, got {values!r}"
            )
    return GridSpace({str(name): values for name, values in data.items()}, path)


def _load_jsonl(path: str, text: str) -> ListSpace:
    items: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise _bad(path, f"line {number} is not valid JSON ({exc})") from None
        if not isinstance(item, dict):
            raise _bad(path, f"line {number} must be a JSON object, got {type(item).__name__}")
        items.append(item)
    return ListSpace("jsonl", items, path)


def _load_csv(path: str, text: str) -> ListSpace:
    import csv
    import io

    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise _bad(path, "a CSV space needs a header row naming the parameters")
    items: list[dict[str, Any]] = []
    width = len(reader.fieldnames)
    for row in reader:
        if None in row or any(value is None for value in row.values()):
            cells = width + len(row.get(None) or []) - sum(v is None for v in row.values())
            raise _bad(
                path,
                f"line {reader.line_num} has {cells} cells but the header names {width}; "
                "every row needs one cell per header column (the first row is the header)",
            )
        items.append({key: csv_value(value or "") for key, value in row.items()})
    return ListSpace("csv", items, path)


def load_space(path: str, total_params: int) -> Space:
    """The space named by ``TTG_SPACE`` (empty: the integer range of ``total_params``)."""
    if not path:
        if total_params < 1:
            raise WorkerConfigError(
                f"TTG_TOTAL_PARAMS={total_params}: an empty space has nothing to run; "
                "allowed: an integer >= 1"
            )
        return RangeSpace(total_params)
    suffix = Path(path).suffix.lower()
    if suffix not in SPACE_SUFFIXES:
        allowed = ", ".join(SPACE_SUFFIXES)
        raise _bad(path, f"unknown space file type {suffix!r}; allowed: {allowed}")
    text = _read(path)
    space: Space
    if suffix == ".jsonl":
        space = _load_jsonl(path, text)
    elif suffix == ".csv":
        space = _load_csv(path, text)
    else:
        space = _load_grid(path, text)
    if len(space) == 0:
        raise _bad(path, f"the {space.kind} file defines no parameters; a space needs at least one")
    return space
