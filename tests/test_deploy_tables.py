"""The cluster tables of `inv deploy` and `inv metrics` stay readable at 80 columns."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from rich.console import Console
from ttg_ops.backends import kubernetes as kube
from ttg_ops.backends.base import FAILED, SUCCEEDED, WorkerState
from ttg_ops.report import build_report
from ttg_ops.spec import RunSpec

RUN_ID = "20261203-174710-f00d"
JOB = f"ttg-computation-{RUN_ID}"
SUFFIXES = ["h87xp", "k2m9q", "zz4rt"]


def _narrow() -> Console:
    return Console(file=io.StringIO(), width=80, record=True, force_terminal=False)


def _pod(index: int) -> Any:
    started = datetime(2026, 12, 3, 17, 47, 12, tzinfo=UTC)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=f"{JOB}-{index}-{SUFFIXES[index]}",
            annotations={kube.INDEX_ANNOTATION: str(index)},
            creation_timestamp=started,
        ),
        spec=client.V1PodSpec(containers=[], node_name=f"ttg-cluster-worker{index or ''}"),
        status=client.V1PodStatus(phase="Succeeded"),
    )


def test_pod_distribution_keeps_each_pods_distinguishing_suffix_at_80_columns() -> None:
    pods: dict[str, Any] = {str(p.metadata.name): p for p in (_pod(i) for i in range(3))}
    console = _narrow()
    console.print(kube.distribution_table(pods, JOB))
    text = console.export_text()
    assert JOB in text  # once, in the title
    for index, suffix in enumerate(SUFFIXES):
        assert f"…-{index}-{suffix}" in text
        assert f"ttg-cluster-worker{index or ''}" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_metrics_workers_table_shows_index_and_pod_at_80_columns() -> None:
    spec = RunSpec(workers=3, params=3000, run_id=RUN_ID)
    states = [
        WorkerState(
            index=i,
            state=FAILED if i == 1 else SUCCEEDED,
            name=f"{JOB}-{i}-{SUFFIXES[i]}",
            node=f"ttg-cluster-worker{i or ''}",
            exit_code=1 if i == 1 else 0,
            created_at=1.0,
            started_at=2.0,
            finished_at=12.0,
        )
        for i in range(3)
    ]
    report = build_report(spec, kube.BACKEND_NAME, states, {}, created_at=1.0, finished_at=12.0)
    console = _narrow()
    kube.show_metrics(kube.Collected(report, {}, [], []), console)
    text = console.export_text()
    rows = [line for line in text.splitlines() if f"-{SUFFIXES[0]}" in line]
    assert rows, text
    for index, suffix in enumerate(SUFFIXES):
        (row,) = [line for line in text.splitlines() if f"{index}-{suffix}" in line]
        assert row.split()[0] == str(index)
    assert max(len(line) for line in text.splitlines()) <= 80
