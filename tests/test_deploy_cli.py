"""The invoke tasks `deploy`, `logs`, `metrics` and `kind.*`: dashed flags, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def inv(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("task", "flags"),
    [
        (
            "deploy",
            [
                "--no-wait",
                "--results-pvc",
                "--pull-policy",
                "--run-id",
                "--batch-size",
                "--log-format",
                "--kubeconfig",
                "--spread",
            ],
        ),
        ("logs", ["--run-id", "--follow", "--runs-dir"]),
        ("metrics", ["--run-id", "--json", "--runs-dir"]),
        ("kind.create", ["--results-dir", "--node-image", "--kubeconfig", "--timeout"]),
        ("kind.load", ["--version", "--image", "--name"]),
    ],
)
def test_help_lists_the_dashed_flags(task: str, flags: list[str]) -> None:
    done = inv("--help", task)
    assert done.returncode == 0, done.stderr
    for flag in flags:
        assert flag in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--spread", "sometimes"], 2, "spread 'sometimes' is not one of required, preferred"),
        (["--workers", "many"], 2, "workers"),
        (["--pull-policy", "Maybe"], 2, "pull policy 'Maybe' is not one of"),
        (["--context", "kind-nowhere", "--kubeconfig", "/nonexistent"], 3, "kind-nowhere"),
    ],
    ids=["spread", "workers", "pull-policy", "context"],
)
def test_deploy_names_a_bad_flag_and_exits_non_zero(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    done = inv("deploy", "--runs-dir", str(tmp_path), *args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_logs_without_a_cluster_run_says_so(tmp_path: Path) -> None:
    done = inv("logs", "--runs-dir", str(tmp_path))
    assert done.returncode == 2
    assert "no cluster run is recorded" in done.stderr


@pytest.mark.cluster
def test_deploy_logs_and_metrics_through_the_tasks(
    sim_cluster: Any, sim_namespace: str, tmp_path: Path
) -> None:
    target = ["--context", sim_cluster.context, "--kubeconfig", sim_cluster.kubeconfig]
    done = inv(
        "deploy", "--workers", "3", "--params", "10000", "--namespace", sim_namespace,
        "--runs-dir", str(tmp_path), "--timeout", "120", *target,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Pod Distribution" in done.stdout
    assert "Completed" in done.stdout
    # Results stay in the pods (emptyDir) on this non-kind cluster: said once.
    assert (done.stdout + done.stderr).count("emptyDir") == 1, done.stdout + done.stderr

    refused = inv(
        "deploy", "--workers", "4", "--namespace", sim_namespace, "--runs-dir", str(tmp_path),
        *target,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "4 workers need 4 schedulable nodes" in refused.stderr

    # kwok serves no log unless a test asks for one: every worker is reported missing.
    metrics = inv("metrics", "--json", "--runs-dir", str(tmp_path))
    assert metrics.returncode == 1
    report = json.loads(metrics.stdout)
    assert report["backend"] == "kubernetes"
    assert [w["state"] for w in report["workers"]] == ["missing"] * 3
    assert {w["node"] for w in report["workers"]} == set(sim_cluster.worker_names)
    assert (tmp_path / report["run_id"] / "report.json").is_file()


def test_every_tasks_help_names_each_flag_with_a_valid_spelling() -> None:
    import re

    import tasks

    spelling = re.compile(r"^(-[a-zA-Z][ =]\S+, |-[a-zA-Z], )?--(\[no-\])?[a-z][a-z0-9-]*(=\S+)?$")
    broken = [
        f"{context.name}: {flags}"
        for context in tasks.ns.to_contexts()
        for flags, _ in context.help_tuples()
        if not spelling.match(flags)
    ]
    assert broken == []


def test_deploy_refuses_an_unknown_task_option_before_contacting_any_cluster(
    tmp_path: Path,
) -> None:
    done = inv(
        "deploy",
        "--task-options",
        '{"no_such_option": 1}',
        "--context",
        "absent-context",
        "--kubeconfig",
        str(tmp_path / "absent-kubeconfig"),
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert done.returncode != 0
    assert "no_such_option" in done.stderr
    assert "Traceback" not in done.stderr
    assert "absent-context" not in done.stderr  # refused before the kubeconfig was read
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cluster.sim-up", "--workers", "abc"], "--workers must be a whole number"),
        (["cluster.sim-up", "--workers", "0"], "--workers must be at least 1"),
        (["cluster.sim-up", "--timeout", "x"], "--timeout must be a number of seconds"),
        (["cluster.sim-up", "--name", "Bad Name"], "cluster name 'Bad Name' is not valid"),
        (["cluster.sim-status", "--name", "Bad Name"], "cluster name 'Bad Name' is not valid"),
        (["cluster.sim-down", "--name", "x_y"], "cluster name 'x_y' is not valid"),
        (["kind.create", "--timeout", "0"], "--timeout must be at least 1"),
        (["deploy", "--timeout", "x"], "--timeout must be a number of seconds"),
    ],
)
def test_bad_numbers_and_names_are_refused_without_a_traceback_before_starting_anything(
    args: list[str], message: str
) -> None:
    done = inv(*args, timeout=60)
    assert done.returncode == 2  # a user mistake (ConfigError)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "Started" not in done.stderr  # nothing of the simulated cluster was started


def test_sim_up_help_shows_a_value_for_each_numeric_flag() -> None:
    done = inv("--help", "cluster.sim-up")
    assert "--timeout=STRING" in done.stdout
    assert "--workers=STRING" in done.stdout


def test_tasks_show_no_library_debug_lines_unless_ttg_debug_is_set() -> None:
    import os

    def delete(debug: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "TTG_DEBUG"}
        if debug:
            env["TTG_DEBUG"] = debug
        return subprocess.run(
            [sys.executable, "-m", "invoke", "kind.delete", "--name", "ttg-absent-cluster"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    quiet = delete("")
    assert "nothing to delete" in quiet.stdout
    assert "DEBUG" not in quiet.stderr
    assert "Running kind get clusters" not in quiet.stderr
    assert "Running kind get clusters" in delete("1").stderr
