"""TTG's invoke tasks: thin wrappers that parse flags and call ``ttg_ops``.

Run ``inv --list`` for the tasks and ``inv --help <task>`` for their flags.
Every task turns TTG's domain errors into a one-line message on stderr and a
non-zero exit code; a traceback means a bug in TTG, not a user mistake.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn TTG errors and Ctrl-C into a clear message and an exit code."""
    from ttg_ops.errors import TTGError

    try:
        yield
    except TTGError as exc:
        raise Exit(f"error: {exc}", code=exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise Exit(code=130) from None


# ---------------------------------------------------------------------------
# Root tasks
# ---------------------------------------------------------------------------


ns = Collection()


# ---------------------------------------------------------------------------
# Images: `inv build`, `inv images.base`
# ---------------------------------------------------------------------------


@task(
    help={
        "version": "semantic version to build, such as 1.1.0 (tags ttg-worker:v<version>)",
        "base": "base image with CPython 3.11 (default python:3.11-slim, else the offline base)",
        "load_kind": "load the built image into the kind cluster",
        "push": "registry to push to, such as localhost:5000 (tags REGISTRY/ttg-worker:v<version>)",
        "verbose": "show the full build output",
        "no_cache": "rebuild every layer",
    }
)
def build(  # noqa: PLR0917 - invoke passes every flag as a parameter
    c: Context,
    version: str = "1.1.0",
    base: str = "",
    load_kind: bool = False,
    push: str = "",
    verbose: bool = False,
    no_cache: bool = False,
) -> None:
    """Build the worker image and tag it ttg-worker:v<version> and :latest.

    Example: inv build --version=1.2.0 --load-kind
    """
    from ttg_ops import images

    with _user_errors():
        result = images.build_image(
            version, base=base or None, verbose=verbose, nocache=no_cache, echo=print
        )
        print(f"Built {', '.join(result.tags)}")
        print(f"  image id:   {result.image_id}")
        print(f"  size:       {result.size / 1e6:.1f} MB")
        print(f"  build time: {result.seconds:.1f} s (base {result.base})")
        if push:
            print(f"Pushed {images.push_image(result.tags[0], push, version, echo=print)}")
        if load_kind:
            images.load_into_kind(result.tags[0], echo=print)


@task(
    help={
        "force": "remake the base even when it exists",
        "mirror": "Debian mirror URL (default: the one apt is configured with)",
    }
)
def base(c: Context, force: bool = False, mirror: str = "") -> None:
    """Make the offline base image ttg-base:bookworm-python3.11 with debootstrap.

    Example: inv images.base --force
    """
    from ttg_ops import images

    with _user_errors():
        result = images.build_base(force=force, mirror=mirror or None, echo=print)
        print(f"{result.tag}: {result.image_id} ({result.size / 1e6:.0f} MB)")


ns.add_task(build)
images_ns = Collection("images")
images_ns.add_task(base)
ns.add_collection(images_ns)


# ---------------------------------------------------------------------------
# Inventory and cleanup: `inv resources`, `inv cleanup`
# ---------------------------------------------------------------------------

_SCOPE_HELP = {
    "context": "kube context to inspect (default kind-<cluster>; never the current context)",
    "kubeconfig": "kubeconfig file (default $KUBECONFIG, else ~/.kube/config)",
    "namespace": "only this Kubernetes namespace (default: all namespaces)",
    "cluster": "name of TTG's kind cluster (default ttg-cluster)",
    "timeout": "seconds to wait for the API server before skipping Kubernetes (default 3)",
}


@task(
    help={
        **_SCOPE_HELP,
        "json": "print JSON for scripts (docs/schemas/resources.schema.json) instead of tables",
    }
)
def resources(  # noqa: PLR0917 - the parameters are the task's CLI flags
    c: Context,
    context: str = "",
    kubeconfig: str = "",
    namespace: str = "",
    cluster: str = "ttg-cluster",
    timeout: float = 3.0,
    json: bool = False,
) -> None:
    """List what TTG created: images, containers, kind clusters, Jobs, pods, events.

    Example: inv resources --namespace=ttg --json
    """
    import json as json_module

    from ttg_ops import inventory

    with _user_errors():
        found = inventory.collect(
            context=context or None,
            kubeconfig=kubeconfig or None,
            namespace=namespace or None,
            cluster=cluster,
            timeout=timeout,
        )
        if json:
            print(json_module.dumps(found.to_dict(), indent=2))
        else:
            inventory.render(found, inventory.make_console())


@task(
    help={
        **_SCOPE_HELP,
        "dry_run": "print the plan ('would delete ...') and delete nothing",
        "yes": "delete without asking (required when standard input is not a terminal)",
        "keep_cluster": "leave TTG's kind cluster alone",
        "keep_images": "leave TTG's Docker images alone",
        "propagation": "how a Job's pods are deleted with it: Background (default) or Foreground",
    }
)
def cleanup(  # noqa: PLR0917 - the parameters are the task's CLI flags
    c: Context,
    dry_run: bool = False,
    yes: bool = False,
    keep_cluster: bool = False,
    keep_images: bool = False,
    context: str = "",
    kubeconfig: str = "",
    namespace: str = "",
    cluster: str = "ttg-cluster",
    timeout: float = 3.0,
    propagation: str = "Background",
) -> None:
    """Delete everything TTG created (Jobs, pods, kind cluster, containers, images).

    Only objects carrying TTG's labels are touched. Example: inv cleanup --dry-run --keep-cluster
    """
    from ttg_ops import cleanup as cleanup_ops
    from ttg_ops.inventory import make_console

    with _user_errors():
        cleanup_ops.run(
            console=make_console(),
            dry_run=dry_run,
            assume_yes=yes,
            interactive=sys.stdin.isatty(),
            context=context or None,
            kubeconfig=kubeconfig or None,
            namespace=namespace or None,
            cluster=cluster,
            keep_cluster=keep_cluster,
            keep_images=keep_images,
            propagation=propagation,
            timeout=timeout,
        )


ns.add_task(resources)
ns.add_task(cleanup)


# ---------------------------------------------------------------------------
# Simulated cluster: `inv cluster.sim-build`, `cluster.sim-up`, `-down`, `-status`
# ---------------------------------------------------------------------------

_SIM_NAME_HELP = (
    "cluster name; nodes are <name>-control-plane, <name>-worker… (default ttg-cluster)"
)


@task(help={"force": "rebuild even when binaries of the pinned versions are cached"})
def sim_build(c: Context, force: bool = False) -> None:
    """Build (or reuse) the simulated cluster's binaries: Kubernetes, kwok and kind.

    Example: inv cluster.sim-build
    """
    import time

    from ttg_ops import simcluster

    with _user_errors():
        started = time.monotonic()
        built = simcluster.build(force=force)
        pins = ", ".join(f"{k} {v}" for k, v in simcluster.versions().items())
        print(
            f"Binaries ready in {built.bin_dir} ({pins}) after {time.monotonic() - started:.0f} s"
        )


@task(
    help={
        "name": _SIM_NAME_HELP,
        "context": "kube context to write (default kind-<name>)",
        "workers": "number of simulated worker nodes (default 3)",
        "timeout": "seconds to wait for the control plane and nodes (default 120)",
    }
)
def sim_up(
    c: Context,
    name: str = "ttg-cluster",
    context: str = "",
    workers: int = 3,
    timeout: float = 120.0,
) -> None:
    """Start the simulated cluster in the background and print its kubeconfig.

    Example: inv cluster.sim-up && export KUBECONFIG=$(inv cluster.sim-status --kubeconfig)
    """
    from ttg_ops import simcluster

    with _user_errors():
        simcluster.build()
        cluster = simcluster.SimCluster(
            name, context=context or None, workers=workers, ready_timeout=timeout
        )
        cluster.start(detach=True)
        status = cluster.status()
        print(f"Simulated cluster {name} ready in {cluster.timings['ready_s']:.1f} s")
        print(f"  kubeconfig: {cluster.kubeconfig}")
        print(f"  context:    {cluster.context}")
        rss = status.rss_bytes / 2**20
        print(f"  memory:     {rss:.0f} MiB RSS in {len(status.components)} processes")
        print(f"  stop with:  inv cluster.sim-down --name {name}")


@task(help={"name": _SIM_NAME_HELP})
def sim_down(c: Context, name: str = "ttg-cluster") -> None:
    """Stop the simulated cluster and every process it started.

    Example: inv cluster.sim-down
    """
    from ttg_ops import simcluster

    with _user_errors():
        cluster = simcluster.SimCluster(name)
        running = [s.name for s in cluster.status().components if s.alive]
        cluster.stop()
        print(
            f"Stopped {', '.join(running)}"
            if running
            else f"Simulated cluster {name} is not running"
        )


@task(
    help={
        "name": _SIM_NAME_HELP,
        "kubeconfig": "print only the kubeconfig path (for `export KUBECONFIG=...`)",
    }
)
def sim_status(c: Context, name: str = "ttg-cluster", kubeconfig: bool = False) -> None:
    """Show which components of the simulated cluster run and their memory.

    Example: inv cluster.sim-status
    """
    from rich.console import Console
    from ttg_ops import simcluster

    with _user_errors():
        cluster = simcluster.SimCluster(name)
        if kubeconfig:
            print(cluster.kubeconfig)
            return
        status = cluster.status()
        if not status.components:
            print(f"Simulated cluster {name} is not running (start it with `inv cluster.sim-up`)")
            return
        Console().print(simcluster.status_table(status))
        print(f"kubeconfig {status.kubeconfig}, context {status.context}, API {status.api_url}")
        if not status.running:
            raise Exit("some components have stopped; restart with sim-down, then sim-up", code=1)


cluster_ns = Collection("cluster")
for _sim_task in (sim_build, sim_up, sim_down, sim_status):
    cluster_ns.add_task(_sim_task)
ns.add_collection(cluster_ns)
