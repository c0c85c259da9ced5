"""The worker's results shard: ``$TTG_OUTPUT_DIR/results-<index:05d>.jsonl``.

One JSON object per parameter, ``{"index", "params", "value", "error"}``,
appended in batches; each batch is written, flushed and fsync'ed before its
PROGRESS event, so a reported parameter is on disk. On start the existing
shard is read: a torn last line (a crash mid-write) is cut off, and the
indexes already present are skipped by the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from ttg_worker.errors import WorkerConfigError


def shard_path(output_dir: str | Path, index: int) -> Path:
    """Where worker ``index`` writes its results."""
    return Path(output_dir) / f"results-{index:05d}.jsonl"


# One encoder for every line: json.dumps with options builds a new encoder per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def encode(index: int, params: Any, value: Any, error: str | None) -> str:
    """One results line, with its newline; raises TypeError/ValueError for non-JSON data."""
    return _ENCODE({"index": index, "params": params, "value": value, "error": error}) + "\n"


def encode_unserialisable(index: int, params: Any, value: Any, exc: Exception) -> str:
    """The results line for a value (or parameter) that is not JSON data: an error entry."""
    problem = f"TypeError: the task returned {type(value).__name__}, not JSON data ({exc})"
    record = {"index": index, "params": params, "value": None, "error": problem}
    return json.dumps(record, ensure_ascii=False, default=repr) + "\n"


def recover(path: Path) -> tuple[set[int], int]:
    """Indexes already in the shard at ``path``, and how many bytes of torn tail were cut.

    A last line without its newline, or one that is not a results object, is
    cut off (the file is truncated to the end of the last complete line).
    """
    if not path.exists():
        return set(), 0
    done: set[int] = set()
    with path.open("rb+") as handle:
        data = handle.read()
        keep = data.rfind(b"\n") + 1  # everything after the last newline is torn
        lines = data[:keep].splitlines()
        # A complete-looking last line can still be garbage if the disk lied; check it.
        while lines:
            try:
                record = json.loads(lines[-1])
                if isinstance(record, dict) and isinstance(record.get("index"), int):
                    break
            except ValueError:
                pass
            keep -= len(lines.pop()) + 1
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                done.add(record["index"])
        cut = len(data) - keep
        if cut:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return done, cut


class ResultsWriter:
    """Append-only writer of one shard, durable per :meth:`write_batch`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle: IO[str] = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise WorkerConfigError(
                f"TTG_OUTPUT_DIR={str(path.parent)!r}: cannot write the results shard "
                f"{path.name} ({type(exc).__name__}: {exc})"
            ) from None

    def write_batch(self, lines: list[str]) -> None:
        """Append ``lines`` and make them durable (flush + fsync)."""
        if not lines:
            return
        self._handle.write("".join(lines))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()
