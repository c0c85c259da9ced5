"""The kind wrapper against the real kind CLI, real Docker containers and the simulated API.

No kindest/node image can be pulled here, so no real kind cluster can start.
What is real: the kind binary (version, ``get clusters``, ``delete cluster``,
a ``create cluster`` that fails on the node image, a ``load docker-image``
that checks the nodes TTG names), the Docker daemon and the containers kind
sees as nodes. The "stand-in nodes" are containers carrying kind's node
labels; they run small stand-ins of ``crictl``/``ctr``/``containerd`` that
keep an image table, so TTG reads image ids from them exactly as from a kind
node. kind itself execs into nodes with ``--privileged``, which this sandbox
refuses, so the full load path runs a recording kind that performs the same
``docker save`` | ``ctr images import`` without it.
"""

from __future__ import annotations

import gc
import io
import json
import os
import secrets
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ttg_ops import dockerapi, kind
from ttg_ops.errors import ConfigError, PreflightError

from tests.conftest import require_or_skip

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "k8s" / "kind-cluster.yaml"
TEST_LABEL = "ttg.test"
# Images with python3 that CI has (the offline base) or a developer may have.
STANDIN_BASES = ("ttg-base:bookworm-python3.11", "python:3.11-slim")


@pytest.fixture(scope="module")
def kind_bin() -> Iterator[str]:
    """The kind CLI: on PATH or in ~/go/bin, else the one the simulated cluster's build made."""
    try:
        yield kind.kind_binary()
        return
    except PreflightError:
        pass
    from ttg_ops.simcluster import sim_home

    built = sim_home() / "bin"
    if not (built / "kind").is_file():
        require_or_skip(
            "TTG_REQUIRE_CLUSTER",
            "the kind CLI is not installed (`go install sigs.k8s.io/kind@v0.33.0`, or "
            "`inv cluster.sim-build`)",
        )
    saved = os.environ["PATH"]
    os.environ["PATH"] = f"{built}{os.pathsep}{saved}"
    try:
        yield kind.kind_binary()
    finally:
        os.environ["PATH"] = saved


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    try:
        client = dockerapi.client(timeout=30)
    except PreflightError:
        require_or_skip("TTG_REQUIRE_DOCKER", "no Docker daemon answers")
        raise
    yield client
    client.close()


def _empty_image(docker_client: Any, tag: str) -> str:
    """Import a tiny image with one file (its content makes the id unique)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = secrets.token_hex(8).encode()
        info = tarfile.TarInfo("standin-id")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    repository, version = tag.split(":")
    docker_client.api.import_image_from_data(
        buffer.getvalue(), repository=repository, tag=version, changes=[f"LABEL {TEST_LABEL}=kind"]
    )
    return str(docker_client.images.get(tag).id)


@pytest.fixture
def test_image(docker_client: Any) -> Iterator[str]:
    tag = f"ttg-kindtest-{secrets.token_hex(3)}:v1"
    _empty_image(docker_client, tag)
    yield tag
    # Also the builds a test replaced under the same tag (left untagged).
    for image in docker_client.images.list(filters={"label": f"{TEST_LABEL}=kind"}):
        if tag in image.tags or not image.tags:
            docker_client.images.remove(image.id, force=True)


# The stand-ins of the node programs kind calls, backed by one JSON image table.
_CRICTL = """#!/usr/bin/env python3
import json, sys
table = json.load(open("/var/lib/standin/images.json")) if __import__("os").path.exists(
    "/var/lib/standin/images.json") else {}
ref = [a for a in sys.argv[2:] if not a.startswith("-") and a != "json"][-1]
for image_id, tags in table.items():
    short = [t.replace("docker.io/library/", "") for t in tags]
    if ref == image_id or ref in tags or ref in short:
        print(json.dumps({"status": {"id": image_id, "repoTags": tags}}))
        sys.exit(0)
print("no such image " + ref, file=sys.stderr)
sys.exit(1)
"""

_CTR = """#!/usr/bin/env python3
import io, json, os, sys, tarfile
path = "/var/lib/standin/images.json"
os.makedirs(os.path.dirname(path), exist_ok=True)
table = json.load(open(path)) if os.path.exists(path) else {}
def full(tag):
    return tag if "/" in tag else "docker.io/library/" + tag
args = sys.argv[1:]
if "import" in args:
    tar = tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()))
    for entry in json.load(tar.extractfile("manifest.json")):
        image_id = "sha256:" + os.path.basename(entry["Config"]).replace(".json", "")
        for other in table.values():
            for tag in entry.get("RepoTags") or []:
                if full(tag) in other:
                    other.remove(full(tag))
        table[image_id] = [full(t) for t in entry.get("RepoTags") or []]
    with open("/var/lib/standin/imports.log", "a") as log:
        log.write(" ".join(args) + "\\n")
elif "tag" in args:
    image_id, name = args[-2], args[-1]
    table.setdefault(image_id, []).append(full(name))
json.dump(table, open(path, "w"))
"""

_CONTAINERD = """#!/usr/bin/env python3
print('version = 2')
print('[plugins."io.containerd.grpc.v1.cri".containerd]')
print('  snapshotter = "overlayfs"')
"""


def _scripts_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("crictl", _CRICTL), ("ctr", _CTR), ("containerd", _CONTAINERD)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class StandIn:
    """A kind cluster as the kind CLI sees it: containers with kind's node labels."""

    def __init__(self, docker_client: Any, name: str, containers: list[Any]) -> None:
        self.docker = docker_client
        self.name = name
        self.containers = containers

    @property
    def node_names(self) -> list[str]:
        return sorted(c.name for c in self.containers)

    def imports(self, node: str) -> int:
        result = self.docker.containers.get(node).exec_run(["cat", "/var/lib/standin/imports.log"])
        return len(result.output.splitlines()) if result.exit_code == 0 else 0


@pytest.fixture
def standin(docker_client: Any) -> Iterator[Callable[..., StandIn]]:
    made: list[str] = []

    def make(running: bool = False, image: str = "", mount: Path | None = None) -> StandIn:
        name = f"ttg-kt-{secrets.token_hex(3)}"
        made.append(name)
        base = ""
        if running:
            local = {tag for image in docker_client.images.list() for tag in image.tags}
            base = next((b for b in STANDIN_BASES if b in local), "")
            if not base:
                require_or_skip(
                    "TTG_REQUIRE_DOCKER",
                    f"no image with python3 for the stand-in nodes ({', '.join(STANDIN_BASES)}); "
                    "make the offline base with `inv images.base`",
                )
        containers = []
        for role, suffix in (
            ("control-plane", "control-plane"),
            ("worker", "worker"),
            ("worker", "worker2"),
        ):
            node_labels = {
                kind.KIND_CLUSTER_LABEL: name,
                kind.KIND_ROLE_LABEL: role,
                TEST_LABEL: "kind",
            }
            if running:
                container = docker_client.containers.run(
                    base,
                    ["sleep", "infinity"],
                    name=f"{name}-{suffix}",
                    labels=node_labels,
                    detach=True,
                    user="root",
                    network_mode="none",
                    volumes={str(mount): {"bind": "/ttg-results", "mode": "rw"}}
                    if mount is not None and role == "worker"
                    else None,
                )
                container.put_archive("/usr/local/bin", _scripts_archive())
            else:
                container = docker_client.containers.create(
                    image, ["/standin"], name=f"{name}-{suffix}", labels=node_labels
                )
            containers.append(container)
        return StandIn(docker_client, name, containers)

    yield make
    for name in made:
        for container in docker_client.containers.list(
            all=True, filters={"label": f"{kind.KIND_CLUSTER_LABEL}={name}"}
        ):
            container.remove(force=True)


# ---------------------------------------------------------------------------
# The real kind CLI
# ---------------------------------------------------------------------------


@pytest.mark.docker
def test_kind_version_is_the_pinned_release(kind_bin: str) -> None:
    assert kind.version(kind_bin) == kind.KIND_VERSION


@pytest.mark.docker
def test_get_clusters_lists_a_cluster_by_its_node_containers(
    kind_bin: str, standin: Callable[..., StandIn], test_image: str
) -> None:
    cluster = standin(image=test_image)
    assert cluster.name in kind.clusters(kind_bin)
    containers = kind.node_containers(cluster.name)
    assert [c.name for c in containers] == cluster.node_names
    roles = {c.name: c.labels[kind.KIND_ROLE_LABEL] for c in containers}
    assert roles[f"{cluster.name}-control-plane"] == "control-plane"


@pytest.mark.docker
def test_create_reports_an_existing_cluster_instead_of_recreating_it(
    kind_bin: str, standin: Callable[..., StandIn], test_image: str, tmp_path: Path
) -> None:
    cluster = standin(image=test_image)
    ids = sorted(c.id for c in cluster.containers)
    said: list[str] = []
    result = kind.create(
        cluster.name,
        config=CONFIG,
        results_dir=tmp_path / "results",
        kubeconfig=str(tmp_path / "kubeconfig"),
        progress=said.append,
    )
    assert result.created is False
    assert result.nodes == cluster.node_names
    assert "already exists" in said[0]
    assert sorted(c.id for c in kind.node_containers(cluster.name)) == ids
    assert not (tmp_path / "kubeconfig").exists()


@pytest.mark.docker
def test_delete_removes_the_node_containers_and_is_idempotent(
    kind_bin: str, standin: Callable[..., StandIn], test_image: str, tmp_path: Path
) -> None:
    cluster = standin(image=test_image)
    assert kind.delete(cluster.name, kubeconfig=str(tmp_path / "kubeconfig")) is True
    assert cluster.name not in kind.clusters(kind_bin)
    assert kind.node_containers(cluster.name) == []
    assert kind.delete(cluster.name) is False


@pytest.mark.docker
@pytest.mark.slow
def test_create_fails_clearly_when_the_node_image_cannot_be_pulled(
    kind_bin: str, docker_client: Any, tmp_path: Path
) -> None:
    name = f"ttg-kt-{secrets.token_hex(3)}"
    results = tmp_path / "results"
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(kind.KindError) as info:
        kind.create(
            name,
            config=CONFIG,
            results_dir=results,
            kubeconfig=str(tmp_path / "kubeconfig"),
            node_image="kindest/node:v1.35.0",
            timeout=180,
            progress=lambda _line: None,
        )
    message = str(info.value)
    assert f"kind create cluster --name {name}" in message
    assert "kindest/node:v1.35.0" in message
    assert "node image" in (info.value.hint or "")
    assert name not in kind.clusters(kind_bin)
    assert kind.node_containers(name, docker_client) == []
    leftovers = {f for f in set(os.listdir(tempfile.gettempdir())) - before if f.startswith(name)}
    assert leftovers == set()
    assert stat.S_IMODE(results.stat().st_mode) == 0o1777


_LOADING_KIND = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_KIND_RECORD"], "a") as out:
    out.write(json.dumps({{"args": args}}) + "\\n")
if args[:2] == ["load", "docker-image"]:
    archive = subprocess.run(["docker", "save", args[2]], capture_output=True, check=True).stdout
    for node in args[args.index("--nodes") + 1].split(","):
        subprocess.run(
            ["docker", "exec", "-i", node, "ctr", "--namespace=k8s.io", "images", "import",
             "--all-platforms", "--digests", "--snapshotter=overlayfs", "-"],
            input=archive, check=True,
        )
"""


@pytest.mark.docker
def test_real_kind_load_checks_only_the_workers_ttg_names(
    kind_bin: str, standin: Callable[..., StandIn], test_image: str
) -> None:
    cluster = standin(running=True)
    control, worker, worker2 = cluster.node_names
    with pytest.raises(kind.KindError) as info:
        kind.load(test_image, cluster.name)
    message = str(info.value)
    assert f"--name {cluster.name} --nodes {worker},{worker2}" in message
    assert f'not yet present on node "{worker}"' in message
    assert f'not yet present on node "{worker2}"' in message
    assert control not in message.split("\n", 1)[1]


@pytest.mark.docker
def test_load_copies_the_image_only_to_workers_that_lack_this_build(
    standin: Callable[..., StandIn],
    test_image: str,
    docker_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    binary = tmp_path / "kind"
    binary.write_text(_LOADING_KIND.format(python=sys.executable))
    binary.chmod(0o755)
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_KIND_RECORD", str(record))
    cluster = standin(running=True, mount=tmp_path / "results")
    control, worker, worker2 = cluster.node_names
    assert kind.results_host_dir(cluster.name) == tmp_path / "results"

    first = kind.load(test_image, cluster.name, binary=str(binary))
    assert [(o.node, o.outcome) for o in first] == [
        (control, "skipped"),
        (worker, "loaded"),
        (worker2, "loaded"),
    ]
    calls = [json.loads(line)["args"] for line in record.read_text().splitlines()]
    assert calls == [
        [
            "load",
            "docker-image",
            test_image,
            "--name",
            cluster.name,
            "--nodes",
            f"{worker},{worker2}",
        ]
    ]
    assert (cluster.imports(worker), cluster.imports(worker2), cluster.imports(control)) == (
        1,
        1,
        0,
    )
    wanted = docker_client.images.get(test_image).id
    assert kind.images_on_nodes(cluster.name, test_image) == {worker: True, worker2: True}
    assert kind.node_image_id(docker_client.containers.get(worker), test_image) == wanted

    again = kind.load(test_image, cluster.name, binary=str(binary))
    assert [o.outcome for o in again] == ["skipped", "present", "present"]
    assert len(record.read_text().splitlines()) == 1  # kind was not asked again

    # A rebuild under the same tag is a different image id: it is loaded again.
    _empty_image(docker_client, test_image)
    rebuilt = kind.load(test_image, cluster.name, binary=str(binary))
    assert [o.outcome for o in rebuilt] == ["skipped", "loaded", "loaded"]
    assert (cluster.imports(worker), cluster.imports(worker2)) == (2, 2)

    table = kind.status(test_image, cluster.name)
    assert table.exists
    rows = {row.node: row for row in table.nodes}
    assert rows[worker].image == "current"
    assert rows[control].role == "control-plane"
    assert rows[control].image == "missing"
    assert table.api_error  # no kubeconfig context for a stand-in cluster


@pytest.mark.docker
def test_load_reports_a_node_that_did_not_get_the_image(
    standin: Callable[..., StandIn], test_image: str, tmp_path: Path
) -> None:
    silent = tmp_path / "kind"
    silent.write_text("#!/bin/sh\nexit 0\n")
    silent.chmod(0o755)
    cluster = standin(running=True)
    with pytest.raises(
        kind.KindError, match=r"could not be loaded into .*worker \(node holds no image"
    ):
        kind.load(test_image, cluster.name, binary=str(silent))


@pytest.mark.docker
def test_load_refuses_an_image_that_was_not_built(docker_client: Any) -> None:
    with pytest.raises(
        PreflightError, match="ttg-no-such-image:v0 is not in the local Docker"
    ) as info:
        kind.load("ttg-no-such-image:v0", "ttg-cluster")
    assert "inv build" in (info.value.hint or "")


@pytest.mark.docker
def test_load_refuses_a_missing_cluster(kind_bin: str, test_image: str) -> None:
    with pytest.raises(
        PreflightError, match="kind cluster ttg-absent-cluster does not exist"
    ) as info:
        kind.load(test_image, "ttg-absent-cluster")
    assert "inv kind.create" in (info.value.hint or "")


@pytest.mark.docker
def test_load_names_nodes_that_are_not_running(
    kind_bin: str, standin: Callable[..., StandIn], test_image: str
) -> None:
    cluster = standin(image=test_image)
    with pytest.raises(kind.KindError, match=r"worker \(node container is created\)"):
        kind.load(test_image, cluster.name)


# ---------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------


def test_missing_kind_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GOPATH", raising=False)
    monkeypatch.delenv("GOBIN", raising=False)
    with pytest.raises(PreflightError) as info:
        kind.preflight()
    assert "kind CLI is not installed" in str(info.value)
    assert "go install sigs.k8s.io/kind@v0.33.0" in str(info.value)


def test_kind_is_found_in_the_go_bin_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gobin = tmp_path / "go" / "bin"
    gobin.mkdir(parents=True)
    fake = gobin / "kind"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("GOPATH", raising=False)
    monkeypatch.delenv("GOBIN", raising=False)
    assert kind.kind_binary() == str(fake)


def test_missing_docker_cli_is_a_preflight_error(
    kind_bin: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    only_kind = tmp_path / "bin"
    only_kind.mkdir()
    (only_kind / "kind").symlink_to(kind_bin)
    monkeypatch.setenv("PATH", str(only_kind))
    with pytest.raises(PreflightError, match="docker CLI is not installed") as info:
        kind.preflight()
    assert "install Docker" in (info.value.hint or "")


def test_a_daemon_that_does_not_answer_is_a_preflight_error(
    kind_bin: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    leaked: list[Any] = []
    # The docker SDK leaves its socket open when the API version negotiation
    # fails inside docker.from_env(); collect that here instead of in a later test.
    monkeypatch.setattr(sys, "unraisablehook", leaked.append)
    with pytest.raises(PreflightError, match="Docker daemon does not answer"):
        kind.preflight()
    gc.collect()


# ---------------------------------------------------------------------------
# What kind is asked to do
# ---------------------------------------------------------------------------


def test_rendered_config_has_an_absolute_results_mount(tmp_path: Path) -> None:
    import yaml

    rendered = kind.render_config(CONFIG, Path("runs/kind-results"), "other", out_dir=tmp_path)
    doc = yaml.safe_load(rendered.read_text())
    assert doc["name"] == "other"
    workers = [n for n in doc["nodes"] if n["role"] == "worker"]
    assert len(workers) == 3
    assert len(doc["nodes"]) == 4
    for node in workers:
        assert node["labels"] == {"ttg.io/project": "distributed-compute", "ttg.io/role": "worker"}
        (mount,) = node["extraMounts"]
        assert mount["containerPath"] == "/ttg-results"
        assert Path(mount["hostPath"]).is_absolute()
        assert mount["hostPath"] == str((Path.cwd() / "runs" / "kind-results").resolve())
    assert kind.config_node_count(CONFIG) == 4


def test_rendered_config_refuses_a_file_that_is_not_a_kind_cluster(tmp_path: Path) -> None:
    other = tmp_path / "job.yaml"
    other.write_text("kind: Job\napiVersion: batch/v1\n")
    with pytest.raises(ConfigError, match="not a kind `Cluster` document"):
        kind.render_config(other, tmp_path)
    with pytest.raises(ConfigError, match="cannot be read"):
        kind.render_config(tmp_path / "missing.yaml", tmp_path)


def test_load_lines_align_like_the_seed() -> None:
    lines = kind.load_lines(
        [
            kind.NodeLoad("ttg-cluster-control-plane", "control-plane", "skipped", "control plane"),
            kind.NodeLoad("ttg-cluster-worker", "worker", "loaded"),
            kind.NodeLoad("ttg-cluster-worker2", "worker", "present"),
        ]
    )
    assert lines[1] == "✓ ttg-cluster-worker:        Image loaded"
    assert lines[2] == "= ttg-cluster-worker2:       Image already present"
    assert lines[0].startswith("- ttg-cluster-control-plane: ")
    assert len({line.index("Image") for line in lines[1:]}) == 1


_FAKE_KIND = """#!{python}
import json, os, sys
args = sys.argv[1:]
entry = {{"args": args}}
if "--config" in args:
    entry["config"] = open(args[args.index("--config") + 1]).read()
with open(os.environ["FAKE_KIND_RECORD"], "a") as out:
    out.write(json.dumps(entry) + "\\n")
if args[:2] == ["get", "clusters"]:
    print("No kind clusters found.", file=sys.stderr)
"""


@pytest.fixture
def recording_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A kind executable that records what it is asked; the rest of the flow is real."""
    script = tmp_path / "kind"
    script.write_text(_FAKE_KIND.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "kind-calls.jsonl"
    monkeypatch.setenv("FAKE_KIND_RECORD", str(record))
    return str(script), record


@pytest.mark.cluster
@pytest.mark.docker
def test_create_asks_kind_for_the_rendered_config_and_waits_for_every_node(
    sim_cluster: Any, recording_kind: tuple[str, Path], docker_client: Any, tmp_path: Path
) -> None:
    binary, record = recording_kind
    name = sim_cluster.context.removeprefix("kind-")
    results = tmp_path / "results"
    result = kind.create(
        name,
        config=CONFIG,
        results_dir=results,
        kubeconfig=sim_cluster.kubeconfig,
        binary=binary,
        timeout=60,
        progress=lambda _line: None,
    )
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert calls[0]["args"] == ["get", "clusters"]
    args = calls[1]["args"]
    config_path = args[args.index("--config") + 1]
    assert args == [
        "create", "cluster", "--name", name, "--config", config_path, "--wait", "0s",
        "--kubeconfig", sim_cluster.kubeconfig,
    ]  # fmt: skip
    assert f"hostPath: {results.resolve()}" in calls[1]["config"]
    assert not Path(config_path).exists()
    assert result.created is True
    assert result.context == sim_cluster.context


@pytest.mark.cluster
def test_waiting_for_nodes_names_what_it_awaited(sim_cluster: Any) -> None:
    names = kind.wait_nodes_ready(sim_cluster.context, sim_cluster.kubeconfig, expected=4)
    assert len(names) == 4
    with pytest.raises(PreflightError, match=r"not all Ready after 1s: 4/5 nodes registered"):
        kind.wait_nodes_ready(
            sim_cluster.context, sim_cluster.kubeconfig, expected=5, timeout=1, interval=0.2
        )
