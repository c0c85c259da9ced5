"""File spaces across workers: every worker enumerates the same space, shards cover it once."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ttg_logging.grammar import find_summary

AXES = {"lr": [0.1, 0.01, 0.001], "depth": [2, 4, 8], "act": ["relu", "tanh"], "n": [5, 6, 7]}


def _run(out: Path, index: int, workers: int, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTG_", "LOG_"))}
    env.update(
        {
            "JOB_COMPLETION_INDEX": str(index),
            "TTG_TOTAL_WORKERS": str(workers),
            "TTG_OUTPUT_DIR": str(out),
            "TTG_BATCH_SIZE": "7",
            **settings,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "ttg_worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _sweep(out: Path, workers: int, **settings: str) -> list[dict[str, Any]]:
    """Run every worker; return all results rows sorted by index (checking each worker)."""
    rows: list[dict[str, Any]] = []
    for index in range(workers):
        proc = _run(out, index, workers, **settings)
        assert proc.returncode == 0, proc.stderr
        summary = find_summary(proc.stdout.splitlines())
        assert summary is not None and summary["status"] == "completed"
        shard = out / f"results-{index:05d}.jsonl"
        rows.extend(json.loads(line) for line in shard.read_text().splitlines())
    return sorted(rows, key=lambda row: row["index"])


def _write_space(tmp_path: Path, kind: str) -> tuple[Path, list[dict[str, Any]]]:
    combos = [dict(zip(AXES, c, strict=True)) for c in itertools.product(*AXES.values())]
    if kind == "yaml":
        path = tmp_path / "grid.yaml"
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in AXES.items()))
    elif kind == "json":
        path = tmp_path / "grid.json"
        path.write_text(json.dumps(AXES))
    elif kind == "jsonl":
        path = tmp_path / "space.jsonl"
        path.write_text("".join(json.dumps(c) + "\n" for c in combos))
    else:
        path = tmp_path / "space.csv"
        path.write_text(
            ",".join(AXES)
            + "\n"
            + "".join(",".join(str(v) for v in c.values()) + "\n" for c in combos)
        )
    return path, combos


@pytest.mark.parametrize("kind", ["yaml", "json", "jsonl", "csv"])
def test_a_file_space_is_covered_exactly_once_by_three_workers(tmp_path: Path, kind: str) -> None:
    path, combos = _write_space(tmp_path, kind)
    rows = _sweep(
        tmp_path / "out", 3, TTG_SPACE=str(path), TTG_TASK="collatz", TTG_TOTAL_PARAMS="5"
    )
    assert [row["index"] for row in rows] == list(range(len(combos)))
    assert [row["params"] for row in rows] == combos
    assert [row["value"] for row in rows] == [{5: 5, 6: 8, 7: 16}[combo["n"]] for combo in combos]


def test_the_worker_says_that_total_params_is_ignored_for_a_file_space(tmp_path: Path) -> None:
    path, combos = _write_space(tmp_path, "yaml")
    proc = _run(tmp_path / "out", 0, 1, TTG_SPACE=str(path), TTG_TOTAL_PARAMS="99", TTG_TASK="noop")
    assert proc.returncode == 0, proc.stderr
    assert f"TTG_TOTAL_PARAMS=99 is ignored: the grid space {path} defines {len(combos)}" in (
        proc.stdout
    )
    summary = find_summary(proc.stdout.splitlines())
    assert summary is not None and summary["total_params"] == len(combos)


def test_only_restricts_a_file_space_by_global_index(tmp_path: Path) -> None:
    path, combos = _write_space(tmp_path, "csv")
    rows = _sweep(tmp_path / "out", 4, TTG_SPACE=str(path), TTG_TASK="noop", TTG_ONLY="50:54,3:5")
    assert [row["index"] for row in rows] == [3, 4, 50, 51, 52, 53]
    assert [row["params"] for row in rows] == [combos[i] for i in (3, 4, 50, 51, 52, 53)]
