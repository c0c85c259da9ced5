"""The Docker client preflight: a clear error, and nothing left open, without a daemon."""

from __future__ import annotations

import gc
import warnings

import pytest
from ttg_ops import dockerapi
from ttg_ops.errors import PreflightError


def test_a_missing_daemon_is_a_preflight_error_naming_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")

    with pytest.raises(PreflightError) as caught:
        dockerapi.client(timeout=2)

    assert "Docker daemon does not answer" in str(caught.value)
    assert "dockerd" in str(caught.value)


def test_a_failed_probe_leaves_no_unclosed_socket_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        assert dockerapi.available() is False
        gc.collect()

    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]
