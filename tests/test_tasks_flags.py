"""Numeric and dashed flags of `inv resources` / `inv cleanup`, through the real `inv` CLI.

A bad value must end in one line naming the flag and what it accepts, exit
code 2 and no traceback; ``--help`` must show that a numeric flag takes a
value. Every run is scoped to a label no object carries, so nothing real is
listed or deleted even if a check regressed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCOPE = {"TTG_INVENTORY_SCOPE": "ttg.test-scope=flags-test-no-object"}


def _inv(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **SCOPE, "KUBECONFIG": "/nonexistent/kubeconfig", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("resources", "--timeout", "x"),
        ("cleanup", "--dry-run", "--timeout", "x"),
        ("resources", "--timeout=-1"),
        ("cleanup", "--dry-run", "--timeout", "nan"),
    ],
)
def test_bad_timeout_is_a_one_line_error_with_exit_code_2(argv: tuple[str, ...]) -> None:
    done = _inv(*argv)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --timeout must be"), lines[0]
    assert repr(argv[-1].removeprefix("--timeout=")) in lines[0]


@pytest.mark.parametrize("name", ["resources", "cleanup"])
def test_help_shows_that_timeout_takes_a_value(name: str) -> None:
    done = _inv("--help", name)

    assert done.returncode == 0, done.stderr
    assert "--timeout=STRING" in done.stdout, done.stdout


def test_help_of_cleanup_lists_the_dashed_keep_flags() -> None:
    done = _inv("--help", "cleanup")

    assert done.returncode == 0, done.stderr
    for flag in ("--keep-cluster", "--keep-images", "--dry-run"):
        assert flag in done.stdout, done.stdout
    assert "--keep_cluster" not in done.stdout


def test_a_good_timeout_is_accepted() -> None:
    done = _inv("resources", "--json", "--timeout", "0.5")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
