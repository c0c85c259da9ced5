"""A layer that is absent or silent is skipped with a note, quickly, never with a traceback."""

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


def test_without_docker_both_tasks_skip_it_and_exit_zero(tmp_path: Path) -> None:
    import json
    import os

    import jsonschema

    from tests.test_inventory_helpers import ROOT, inv

    env = {
        **os.environ,
        # Scoped as well, so that a daemon answering by mistake finds nothing to delete.
        inventory.SCOPE_ENV: f"ttg.test-session={tmp_path.name[-20:].strip('-_.') or 'x'}",
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }
    schema = json.loads((ROOT / "docs" / "schemas" / "resources.schema.json").read_text())

    listed = inv("resources", "--json", env=env)
    cleaned = inv("cleanup", "--yes", env=env)

    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    jsonschema.validate(document, schema)
    assert document["docker"]["available"] is False
    assert "Docker daemon does not answer" in document["docker"]["note"]
    assert document["summary"]["docker"] == {
        "images": None,
        "build_cache": None,
        "containers": None,
        "kind_clusters": None,
    }
    assert cleaned.returncode == 0, cleaned.stderr
    assert "Nothing of TTG's to delete." in cleaned.stdout
    assert "Docker is left alone: skipped: the Docker daemon does not answer" in cleaned.stdout
