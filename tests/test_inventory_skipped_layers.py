"""The Kubernetes layer is skipped with a note, quickly, when the cluster is absent or silent."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ttg_ops import inventory
from ttg_ops.inventory import Scope


def _kubeconfig(tmp_path: Path, server: str, context: str = "kind-ttg-cluster") -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
                "current-context": context,
            }
        )
    )
    return str(path)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An address that accepts TCP connections and then never says a word."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_missing_context_is_skipped_with_the_available_ones_named(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path, "https://127.0.0.1:1", context="kind-other")

    section = inventory.kube_objects("kind-ttg-cluster", kubeconfig=kubeconfig, scope=Scope())

    assert section.reachable is False
    assert "kube context 'kind-ttg-cluster' is not in" in section.note
    assert "kind-other" in section.note


def test_refused_connection_is_skipped_with_a_note(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path, "https://127.0.0.1:1")

    started = time.monotonic()
    section = inventory.kube_objects("kind-ttg-cluster", kubeconfig=kubeconfig, scope=Scope())

    assert time.monotonic() - started < 5
    assert section.reachable is False
    assert section.note.startswith("skipped:")
    assert "does not answer" in section.note


def test_silent_api_server_costs_the_timeout_and_no_more(
    tmp_path: Path, silent_server: str
) -> None:
    kubeconfig = _kubeconfig(tmp_path, silent_server)

    started = time.monotonic()
    found = inventory.collect(kubeconfig=kubeconfig, timeout=1.0, scope=Scope.parse("ttg.x=none"))
    elapsed = time.monotonic() - started

    assert found.kubernetes.reachable is False
    assert "does not answer" in found.kubernetes.note
    assert elapsed < 6, f"took {elapsed:.1f}s with a 1s timeout"
    assert found.summary()["kubernetes"] == {"jobs": None, "pods": None}


def test_timeout_must_be_positive() -> None:
    from ttg_ops.errors import ConfigError

    with pytest.raises(ConfigError, match="timeout must be more than 0 seconds"):
        inventory.collect(timeout=0)
