"""Which parameters a worker computes: the selection (TTG_ONLY) and its shard.

The selected parameters are a sorted list of global indexes, kept as
half-open ranges so that a 10-million-parameter space costs nothing to hold.
Worker ``i`` of ``W`` takes positions ``[floor(i*P/W), floor((i+1)*P/W))`` of
that list; shard sizes differ by at most one and an index beyond the number
of parameters gets an empty shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ttg_worker.errors import WorkerConfigError


def shard_bounds(index: int, workers: int, total: int) -> tuple[int, int]:
    """Positions ``[start, end)`` of worker ``index`` of ``workers`` over ``total`` items."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if not 0 <= index < workers:
        raise ValueError(f"index {index} is outside 0..{workers - 1}")
    if total < 0:
        raise ValueError(f"total must be 0 or more, got {total}")
    return index * total // workers, (index + 1) * total // workers


@dataclass(frozen=True)
class Selection:
    """Sorted, disjoint half-open ranges of global parameter indexes."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def everything(cls, size: int) -> Selection:
        return cls(((0, size),) if size > 0 else ())

    def __len__(self) -> int:
        return sum(end - start for start, end in self.ranges)

    def indexes(self, start: int = 0, end: int | None = None) -> Iterator[int]:
        """Global indexes at positions ``[start, end)`` of the selection, in order."""
        stop = len(self) if end is None else end
        offset = 0
        for low, high in self.ranges:
            size = high - low
            lo = max(start - offset, 0)
            hi = min(stop - offset, size)
            if lo < hi:
                yield from range(low + lo, low + hi)
            offset += size
            if offset >= stop:
                return

    def at(self, position: int) -> int:
        """The global index at ``position`` of the selection."""
        offset = 0
        for low, high in self.ranges:
            if position < offset + high - low:
                return low + position - offset
            offset += high - low
        raise IndexError(f"position {position} is outside a selection of {offset}")


def parse_ranges(
    text: str, setting: str = "TTG_ONLY", size: int | None = None
) -> list[tuple[int, int]]:
    """Parse ``"a:b,c:d"`` half-open ranges of global indexes: sorted, merged, non-empty.

    Ranges may come in any order and may overlap or touch; they are merged.
    Each must satisfy ``0 <= a < b`` (and ``b <= size`` when ``size`` is
    given). Raises :class:`WorkerConfigError` naming ``setting`` and the bad
    part. The tooling (``ttg_ops.results.parse_ranges``) uses this too.
    """
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        piece = part.strip()
        if not piece:
            continue
        bounds = piece.split(":")
        try:
            if len(bounds) != 2:
                raise ValueError
            low, high = int(bounds[0]), int(bounds[1])
        except ValueError:
            raise WorkerConfigError(
                f"{setting}={text!r}: {piece!r} is not a range; write half-open ranges of "
                "global parameter indexes like '0:100,250:300'"
            ) from None
        if size is None and not 0 <= low < high:
            raise WorkerConfigError(
                f"{setting}={text!r}: range {low}:{high} must satisfy 0 <= start < end"
            )
        if size is not None and not 0 <= low < high <= size:
            raise WorkerConfigError(
                f"{setting}={text!r}: range {low}:{high} must satisfy 0 <= start < end <= "
                f"{size} (the space has {size} parameters)"
            )
        ranges.append((low, high))

    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def parse_only(text: str, size: int, setting: str = "TTG_ONLY") -> Selection:
    """Parse ``TTG_ONLY`` into a Selection of a space of ``size``; empty means everything."""
    text = text.strip()
    if not text:
        return Selection.everything(size)
    return Selection(tuple(parse_ranges(text, setting, size)))
