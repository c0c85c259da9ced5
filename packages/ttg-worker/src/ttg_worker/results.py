"""The worker's results shard: ``$TTG_OUTPUT_DIR/results-<index:05d>.jsonl``.

One JSON object per parameter, ``{"index", "params", "value", "error"}``,
appended in batches; each batch is written and flushed before its PROGRESS
event, so a reported parameter survives the worker being killed, and is
fsync'ed at least once a second (see :class:`ResultsWriter`). On start the existing
shard is read: a torn last line (a crash mid-write) is cut off, and the
indexes already present are skipped by the run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import IO, Any

from ttg_worker.errors import WorkerConfigError

# Seconds between disk syncs of a results shard (see ResultsWriter).
FSYNC_INTERVAL = 1.0


def shard_path(output_dir: str | Path, index: int) -> Path:
    """Where worker ``index`` writes its results."""
    return Path(output_dir) / f"results-{index:05d}.jsonl"


def meta_path(output_dir: str | Path, index: int) -> Path:
    """The fingerprint of what worker ``index`` computes, kept next to its results shard."""
    return Path(output_dir) / f"results-{index:05d}.meta.json"


def file_digest(path: str | Path) -> str:
    """The SHA-256 of a file's content, as ``sha256:<hex>``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def check_fingerprint(path: Path, shard: Path, fingerprint: dict[str, Any]) -> None:
    """Write ``fingerprint`` to ``path``, or check it against the one stored there.

    A shard is resumed only by a worker computing the same thing: WorkerConfigError
    names the settings that differ. A shard without a fingerprint (written by an
    older worker) is resumed as before, and the fingerprint is written.
    """
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        stored = None
    except (OSError, ValueError) as exc:
        raise WorkerConfigError(
            f"cannot read the fingerprint {path} of the results shard {shard} "
            f"({type(exc).__name__}: {exc}); remove both files or use a new output directory"
        ) from None
    if stored is not None:
        if not isinstance(stored, dict):
            stored = {}
        differ = sorted(
            k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k)
        )
        if differ:
            details = "; ".join(
                f"{k}: shard has {_ENCODE(stored.get(k))}, "
                f"this worker {_ENCODE(fingerprint.get(k))}"
                for k in differ
            )
            raise WorkerConfigError(
                f"the results shard {shard} was written by a worker with different settings "
                f"({details}); refusing to resume it: use a new output directory (a new run id)"
            )
        return
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(_ENCODE(fingerprint) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise WorkerConfigError(
            f"cannot write the fingerprint {path} of the results shard {shard} "
            f"({type(exc).__name__}: {exc})"
        ) from None


# One encoder for nested values: json.dumps with options builds a new encoder per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_ENCODE_STR = json.encoder.encode_basestring  # the C version when available


def _json(value: Any) -> str:
    """``value`` as JSON text, identical to ``json.dumps(value, ensure_ascii=False)``.

    The common scalars skip the encoder machinery, which is most of the
    per-parameter cost of a fast task.
    """
    if value is None:
        return "null"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _ENCODE_STR(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"the float {value!r} is not JSON compliant")
        return float.__repr__(value)
    return _ENCODE(value)


def encode(index: int, params: Any, value: Any, error: str | None) -> str:
    """One results line, with its newline; raises TypeError/ValueError for non-JSON data.

    The text is what ``json.dumps({"index": ..., "params": ..., "value": ...,
    "error": ...}, ensure_ascii=False)`` gives, built field by field.
    """
    error_text = "null" if error is None else _ENCODE_STR(error)
    return (
        f'{{"index": {index}, "params": {_json(params)}, "value": {_json(value)}, '
        f'"error": {error_text}}}\n'
    )


def encode_unserialisable(index: int, params: Any, value: Any, exc: Exception) -> str:
    """The results line when the value (or the parameter) is not JSON data: an error entry."""
    problem = (
        f"TypeError: the result {type(value).__name__} or the parameter is not JSON data ({exc})"
    )
    record = {"index": index, "params": params, "value": None, "error": problem}
    return json.dumps(record, ensure_ascii=False, default=repr) + "\n"


def recover(path: Path) -> tuple[set[int], int]:
    """Indexes already in the shard at ``path``, and how many bytes of torn tail were cut."""
    done, _, cut = scan(path)
    return done, cut


def scan(path: Path) -> tuple[set[int], set[int], int]:
    """Indexes in the shard at ``path``, those of them recorded with an error, and the cut.

    The second set holds the indexes whose line has a non-null ``error``: a
    resumed worker counts them as failed, so a retry of a failed worker fails
    again instead of skipping its errors and reporting success.

    Everything after the last complete results line is cut off (the file is
    truncated there): a line without its newline, or trailing lines that are
    not results objects. Unreadable lines in the middle are kept but ignored.
    The file is read line by line, so a large shard costs only its indexes.
    """
    if not path.exists():
        return set(), set(), 0
    done: set[int] = set()
    errored: set[int] = set()
    keep = size = 0
    with path.open("rb+") as handle:
        for raw in handle:
            size += len(raw)
            if not raw.endswith(b"\n"):
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                done.add(record["index"])
                if record.get("error") is not None:
                    errored.add(record["index"])
                keep = size
        cut = size - keep
        if cut:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return done, errored, cut


class ResultsWriter:
    """Append-only writer of one shard.

    Every batch is written and flushed to the operating system at once, so a
    killed or crashed worker (SIGKILL, OOM) loses nothing it reported. It is
    also fsync'ed to the disk, at most once per ``fsync_interval`` seconds (default
    :data:`FSYNC_INTERVAL`)
    and always on :meth:`close`: with the seed's one-second batches that is
    every batch, while a fast task does not pay a disk sync (~5 ms here) per
    batch. A power loss can therefore cost at most the last interval.
    """

    def __init__(self, path: Path, fsync_interval: float | None = None) -> None:
        self.path = path
        self.fsync_interval = FSYNC_INTERVAL if fsync_interval is None else fsync_interval
        self.syncs = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle: IO[str] = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise WorkerConfigError(
                f"TTG_OUTPUT_DIR={str(path.parent)!r}: cannot write the results shard "
                f"{path.name} ({type(exc).__name__}: {exc})"
            ) from None
        self._last_sync = time.monotonic()
        self._dirty = False

    def write_batch(self, lines: list[str]) -> None:
        """Append ``lines``, flush them, and fsync when the last sync is old enough."""
        if not lines:
            return
        self._handle.write("".join(lines))
        self._handle.flush()
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        """Make everything written so far durable on the disk."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.syncs += 1
        self._last_sync = time.monotonic()
        self._dirty = False

    def close(self) -> None:
        """Sync what is not yet on the disk, then close the file."""
        if self._handle.closed:
            return
        try:
            if self._dirty:
                self.sync()
        finally:
            self._handle.close()
