"""TTG's invoke tasks: thin wrappers that parse flags and call ``ttg_ops``.

Run ``inv --list`` for the tasks and ``inv --help <task>`` for their flags.
Every task turns TTG's domain errors into a one-line message on stderr and a
non-zero exit code; a traceback means a bug in TTG, not a user mistake.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task


def _log_level(default: str) -> str:
    """``default``, or DEBUG when ``TTG_DEBUG`` is set (and not 0) to show library details."""
    return "DEBUG" if os.environ.get("TTG_DEBUG", "0") not in ("", "0") else default


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn TTG errors and Ctrl-C into a clear message and an exit code.

    Every task enters it first, so it also sets the log level for all of them:
    TTG's own warnings on stderr, DEBUG lines only with ``TTG_DEBUG=1``.
    """
    from ttg_logging import configure
    from ttg_ops.errors import TTGError

    configure("ttg", _log_level("WARNING"), "text", stream=sys.stderr)
    try:
        yield
    except TTGError as exc:
        raise Exit(f"error: {exc}", code=exc.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise Exit(code=130) from None


def _number(
    value: str | float,
    flag: str,
    kind: type[int] | type[float] = float,
    minimum: float | None = None,
    unit: str = "seconds",
) -> Any:
    """A numeric flag taken as text (``--timeout 5``), checked; :class:`ConfigError` otherwise.

    invoke infers a flag's type from its default, and a float or ``None``
    default makes ``--help`` show no value and a bad value end in a traceback,
    so numeric flags default to text (``timeout: str = "3"``) and come here.
    ``kind=int`` asks for a whole number; ``unit`` names what the number counts.
    """
    import math

    from ttg_ops.errors import ConfigError

    text = str(value).strip().replace("_", "")
    whole = kind is int
    what = f"a whole number of {unit}" if whole else f"a number of {unit}"
    try:
        number = int(text) if whole else float(text)
    except ValueError:
        raise ConfigError(f"--{flag} must be {what}, got {str(value)!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"--{flag} must be {what}, got {str(value)!r}")
    if minimum is not None and number < minimum:
        raise ConfigError(f"--{flag} must be at least {minimum:g} {unit}, got {str(value)!r}")
    return number


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
    from rich.console import Console
    from ttg_ops import images

    with _user_errors(), Console(stderr=True).status("Preparing the build.") as status:
        result = images.build_image(
            version,
            base=base or None,
            verbose=verbose,
            nocache=no_cache,
            echo=print,
            on_step=None if verbose else lambda step: status.update(step.splitlines()[0][:72]),
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


def _inventory_logs() -> None:
    """Only TTG's warnings go to stderr; the tables and the plan own stdout."""
    from ttg_logging import configure

    configure("ttg", "WARNING", "text", stream=sys.stderr)


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
    timeout: str = "3",
    json: bool = False,
) -> None:
    """List what TTG created: images, containers, kind clusters, Jobs, pods, events.

    Example: inv resources --namespace=ttg --json
    """
    import json as json_module

    from ttg_ops import inventory

    _inventory_logs()
    with _user_errors():
        found = inventory.collect(
            context=context or None,
            kubeconfig=kubeconfig or None,
            namespace=namespace or None,
            cluster=cluster,
            timeout=_number(timeout, "timeout", minimum=0),
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
    timeout: str = "3",
    propagation: str = "Background",
) -> None:
    """Delete everything TTG created (Jobs, pods, kind cluster, containers, images).

    Only objects carrying TTG's labels are touched. Example: inv cleanup --dry-run --keep-cluster
    """
    from ttg_ops import cleanup as cleanup_ops
    from ttg_ops.inventory import make_console

    _inventory_logs()
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
            timeout=_number(timeout, "timeout", minimum=0),
        )


ns.add_task(resources)
ns.add_task(cleanup)


# ---------------------------------------------------------------------------
# Local runs and their reports: `inv run`, `inv report`, `inv results`, `inv rerun`
# ---------------------------------------------------------------------------

_RUNS_HELP = "where runs are kept (default: runs/ in the project)"
_PROJECT = Path(__file__).resolve().parent


def _runs_root(runs_dir: str) -> Path:
    return Path(runs_dir) if runs_dir else _PROJECT / "runs"


def _tooling_logs() -> None:
    """Send TTG's own warnings to stderr; the live display owns stdout."""
    from ttg_logging import configure

    configure("ttg", _log_level("WARNING"), "text", stream=sys.stderr)


def _finish(report: dict[str, Any]) -> None:
    """Exit non-zero for an interrupted run or one with failed or missing workers."""
    from ttg_ops.errors import RunFailed

    if report["status"] == "interrupted":
        raise Exit(
            f"Run {report['run_id']} was interrupted; the report is written. Finish it with "
            f"`inv rerun --failed --run-id {report['run_id']}`.",
            code=130,
        )
    if report["status"] != "succeeded":
        agg = report["aggregate"]
        raise RunFailed(
            f"run {report['run_id']} failed: failed workers {agg['failed_indexes'] or 'none'}, "
            f"missing workers {agg['missing_indexes'] or 'none'}",
            hint=f"inv rerun --failed --run-id {report['run_id']}",
        )


@task(
    help={
        "workers": "number of workers, a whole number (default 3)",
        "params": "size of the integer range space, a whole number (default 10000)",
        "task": "built-in task (simulate, noop, collatz, is_prime, monte_carlo_pi, flaky) "
        "or module:function",
        "backend": "where workers run: process (default) or docker",
        "batch_size": "parameters per batch, a whole number (default 500)",
        "space": "parameter space file: grid .yaml/.yml/.json, .jsonl or .csv",
        "task_options": "JSON object of task options, such as '{\"cost_ms\": 2}'",
        "log_format": "worker log format: text (default) or json",
        "log_level": "worker log level: DEBUG, INFO (default), WARNING or ERROR (above INFO "
        "there are no PROGRESS events: the display moves only as workers finish)",
        "logs": "print every worker line, prefixed [worker-i], above the progress display",
        "run_id": "run id (default: UTC time plus a random suffix)",
        "failure_threshold": "fraction of failed parameters a worker tolerates, 0 to 1 (default 0)",
        "version": "TTG version shown by workers; Docker runs ttg-worker:v<version>",
        "image": "worker image for --backend docker (default ttg-worker:v<version>)",
        "runs_dir": _RUNS_HELP,
    }
)
def run(  # noqa: PLR0917 - the parameters are the task's CLI flags
    c: Context,
    workers: str = "3",
    params: str = "10000",
    task: str = "simulate",
    backend: str = "process",
    batch_size: str = "500",
    space: str = "",
    task_options: str = "",
    log_format: str = "text",
    log_level: str = "INFO",
    logs: bool = False,
    run_id: str = "",
    failure_threshold: str = "0",
    version: str = "",
    image: str = "",
    runs_dir: str = "",
) -> None:
    """Run the parameter sweep locally with a live display, then print the report.

    Example: inv run --workers 3 --params 10000 --task simulate --backend process
    """
    from ttg_ops import runner
    from ttg_ops.errors import ConfigError
    from ttg_ops.report import print_report
    from ttg_ops.spec import DEFAULT_VERSION, RunSpec, new_run_id

    with _user_errors():
        spec = RunSpec(
            workers=runner.parse_whole("workers", workers),
            params=runner.parse_whole("params", params),
            task=task,
            task_options=runner.parse_task_options(task_options),
            space=space,
            batch_size=runner.parse_whole("batch-size", batch_size),
            version=version or DEFAULT_VERSION,
            log_level=log_level,
            log_format=log_format,
            failure_threshold=runner.parse_fraction("failure-threshold", failure_threshold),
            run_id=run_id or new_run_id(),
        )
        runner.check_spec(spec, backend)
        if space and params != "10000":
            print(
                f"Note: --params {params} is ignored: the space file {space} defines the "
                "parameters.",
                file=sys.stderr,
            )
        run_dir = _runs_root(runs_dir) / spec.run_id
        if run_id and (run_dir.exists() or run_dir.is_symlink()):
            raise ConfigError(
                f"run id {spec.run_id!r} is taken: the run directory {run_dir} already exists",
                hint=f"omit --run-id for a new run, or finish that run with "
                f"inv rerun --failed --run-id {spec.run_id}",
            )
        chosen = runner.make_backend(backend, image=image)
        _tooling_logs()
        report = runner.run(spec, chosen, run_dir, show_logs=logs)
        print_report(report)
        _finish(report)


@task(help={"run_id": "run to render (default: latest)", "runs_dir": _RUNS_HELP})
def report(c: Context, run_id: str = "latest", runs_dir: str = "") -> None:
    """Render a run's report as report.png and a self-contained report.html.

    Example: inv report --run-id latest
    """
    from ttg_ops import plots
    from ttg_ops.report import load_report, print_report, resolve_run_dir

    with _user_errors():
        run_dir = resolve_run_dir(_runs_root(runs_dir), run_id)
        png, html = plots.render(run_dir)
        print_report(load_report(run_dir))
        print(f"Wrote {png}")
        print(f"Wrote {html}")


@task(help={"run_id": "run to merge (default: latest)", "runs_dir": _RUNS_HELP})
def results(c: Context, run_id: str = "latest", runs_dir: str = "") -> None:
    """Merge a run's result shards (with its reruns) and check that none is missing.

    Example: inv results --run-id 20260127-051607-ab12
    """
    from ttg_ops.errors import RunFailed
    from ttg_ops.report import print_results, resolve_run_dir
    from ttg_ops.runner import merge_run

    with _user_errors():
        run_dir = resolve_run_dir(_runs_root(runs_dir), run_id)
        root, merge = merge_run(run_dir)
        print_results(root)
        if not merge.ok:
            raise RunFailed(
                f"run {merge.run_id} is incomplete: {merge.missing_count} missing, "
                f"{merge.duplicates} duplicated, {merge.error_count} errored parameters",
                hint=f"inv rerun --failed --run-id {merge.run_id}",
            )


@task(
    help={
        "failed": "rerun the missing, failed and errored parameters (required)",
        "run_id": "run to complete (default: latest)",
        "whole_shards": "redo the whole shard of each failed worker, not only what is missing",
        "workers": "workers for the follow-up run (default: fewer when few parameters are left)",
        "logs": "print every worker line above the progress display",
        "backend": "where the follow-up runs: process or docker (default: as the run did; "
        "a deployed run gets a follow-up Job like its own)",
        "image": "worker image for --backend docker (default ttg-worker:v<version>)",
        "runs_dir": _RUNS_HELP,
    }
)
def rerun(  # noqa: PLR0917 - the parameters are the task's CLI flags
    c: Context,
    failed: bool = False,
    run_id: str = "latest",
    whole_shards: bool = False,
    workers: str = "",
    logs: bool = False,
    backend: str = "",
    image: str = "",
    runs_dir: str = "",
) -> None:
    """Rerun what a local or deployed run left missing or failed, then merge and account again.

    Example: inv rerun --failed --run-id latest
    """
    from ttg_ops.backends import kubernetes as kube
    from ttg_ops.errors import ConfigError
    from ttg_ops.report import load_report, print_report, print_results, resolve_run_dir
    from ttg_ops.runner import make_backend, parse_whole, rerun_failed

    with _user_errors():
        if not failed:
            raise ConfigError("say what to rerun: --failed is the only mode")
        run_dir = resolve_run_dir(_runs_root(runs_dir), run_id)
        _tooling_logs()
        count = parse_whole("workers", workers) if workers else None
        if kube.is_cluster_run(run_dir) and backend in ("", kube.BACKEND_NAME):
            if image:
                raise ConfigError("--image is for --backend docker; a cluster rerun uses the run's")
            follow_up, merge = kube.rerun_failed(
                run_dir, whole_shards=whole_shards, workers=count, show_logs=logs
            )
        else:
            chosen = make_backend(backend or load_report(run_dir)["backend"], image=image)
            follow_up, merge = rerun_failed(
                run_dir, chosen, whole_shards=whole_shards, workers=count, show_logs=logs
            )
        if follow_up is not None:
            print_report(follow_up)  # its results table is already the lineage's
        print_results(load_report(run_dir.parent / merge.run_id), table=follow_up is None)
        if follow_up is not None:
            _finish(follow_up)


ns.add_task(run)
ns.add_task(report)
ns.add_task(results)
ns.add_task(rerun)


# ---------------------------------------------------------------------------
# kind and cluster runs: `inv kind.create|load|status|delete`, `inv deploy`, `inv logs`,
# `inv metrics`
# ---------------------------------------------------------------------------

_CLUSTER_HELP = "kind cluster name (default ttg-cluster; its context is kind-<name>)"
_CONTEXT_HELP = (
    "kubeconfig context to use, never the current one by accident (default kind-ttg-cluster)"
)
_KUBECONFIG_HELP = "kubeconfig file (default $KUBECONFIG, else ~/.kube/config)"


def _image_for(version: str, image: str) -> str:
    from ttg_ops.manifests import default_image
    from ttg_ops.spec import DEFAULT_VERSION, validate_version

    if image:
        return image
    version = version or DEFAULT_VERSION
    validate_version(version)
    return default_image(version)


@task(
    help={
        "name": _CLUSTER_HELP,
        "config": "kind config file (default k8s/kind-cluster.yaml: 1 control plane + 3 workers)",
        "results_dir": "host directory mounted at /ttg-results (default runs/kind-results)",
        "node_image": "kindest/node image for the nodes (default: kind's own)",
        "kubeconfig": _KUBECONFIG_HELP,
        "timeout": "seconds to wait for kind and for every node to be Ready (default 600)",
    }
)
def kind_create(  # noqa: PLR0917 - the parameters are the task's CLI flags
    c: Context,
    name: str = "ttg-cluster",
    config: str = "",
    results_dir: str = "",
    node_image: str = "",
    kubeconfig: str = "",
    timeout: str = "600",
) -> None:
    """Create the local kind cluster (idempotent) and wait until every node is Ready.

    Example: inv kind.create
    """
    from ttg_ops import kind as kind_ops

    with _user_errors():
        result = kind_ops.create(
            name,
            config=Path(config) if config else _PROJECT / kind_ops.DEFAULT_CONFIG,
            results_dir=Path(results_dir)
            if results_dir
            else _PROJECT / kind_ops.DEFAULT_RESULTS_DIR,
            kubeconfig=kubeconfig or None,
            node_image=node_image or None,
            timeout=_number(timeout, "timeout", int, minimum=1),
            progress=print,
        )
        verb = "Created" if result.created else "Kept"
        print(
            f"{verb} kind cluster {result.name}: {', '.join(result.nodes)}; context "
            f"{result.context}; results in {result.results_dir}"
        )


@task(
    help={
        "version": "version of the image to load, such as 1.1.0 (loads ttg-worker:v<version>)",
        "image": "image to load instead of ttg-worker:v<version>",
        "name": _CLUSTER_HELP,
    }
)
def kind_load(c: Context, version: str = "", image: str = "", name: str = "ttg-cluster") -> None:
    """Load the worker image into the kind worker nodes that lack this build.

    Example: inv kind.load --version 1.1.0
    """
    from ttg_ops import kind as kind_ops

    with _user_errors():
        kind_ops.load_image(_image_for(version, image), name, echo=print)


@task(
    help={
        "name": _CLUSTER_HELP,
        "version": "version whose image to look for on the nodes (default 1.1.0)",
        "image": "image to look for instead of ttg-worker:v<version>",
        "kubeconfig": _KUBECONFIG_HELP,
    }
)
def kind_status(
    c: Context, name: str = "ttg-cluster", version: str = "", image: str = "", kubeconfig: str = ""
) -> None:
    """Show the kind cluster's nodes, roles, Kubernetes version and image.

    Example: inv kind.status
    """
    from rich.console import Console
    from ttg_ops import kind as kind_ops

    with _user_errors():
        result = kind_ops.status(_image_for(version, image), name, kubeconfig or None)
        if not result.exists:
            print(f"There is no kind cluster named {name}; create it with `inv kind.create`.")
            raise Exit(code=1)
        Console().print(kind_ops.status_table(result))
        if result.api_error:
            print(f"The API server did not answer: {result.api_error}")


@task(help={"name": _CLUSTER_HELP, "kubeconfig": _KUBECONFIG_HELP})
def kind_delete(c: Context, name: str = "ttg-cluster", kubeconfig: str = "") -> None:
    """Delete the kind cluster (its node containers and kubeconfig context).

    Example: inv kind.delete
    """
    from ttg_ops import kind as kind_ops

    with _user_errors():
        if kind_ops.delete(name, kubeconfig or None):
            print(f"Deleted kind cluster {name}.")
        else:
            print(f"There is no kind cluster named {name}; nothing to delete.")


kind_ns = Collection("kind")
kind_ns.add_task(kind_create, name="create")
kind_ns.add_task(kind_load, name="load")
kind_ns.add_task(kind_status, name="status")
kind_ns.add_task(kind_delete, name="delete")
ns.add_collection(kind_ns)


@task(
    # Twenty-odd flags: invoke's automatic short flags run out and print "--=STRING".
    auto_shortflags=False,
    help={
        "workers": "number of workers (pods), a whole number (default 3)",
        "params": "size of the integer range space, a whole number (default 10000)",
        "task": "built-in task (simulate, noop, collatz, is_prime, monte_carlo_pi, flaky) "
        "or module:function",
        "task_options": "JSON object of task options, such as '{\"cost_ms\": 2}'",
        "space": "parameter space file as the pods see it (inside the image or a mounted volume)",
        "batch_size": "parameters per batch, a whole number (default 500)",
        "version": "TTG version; the image is ttg-worker:v<version> (default 1.1.0)",
        "log_format": "worker log format: text (default) or json",
        "log_level": "worker log level: DEBUG, INFO (default), WARNING or ERROR",
        "context": _CONTEXT_HELP,
        "kubeconfig": _KUBECONFIG_HELP,
        "namespace": "namespace of the Job, created (labelled) when missing (default ttg)",
        "image": "worker image (default ttg-worker:v<version>)",
        "pull_policy": "Always, IfNotPresent or Never (default Never on kind, else IfNotPresent)",
        "spread": "required: one worker per node (default); preferred: spread when possible",
        "wait": "follow the Job live until Complete or Failed (default; --no-wait returns at once)",
        "timeout": "seconds to wait for the Job (default 600)",
        "results_pvc": "ReadWriteMany PersistentVolumeClaim for results on non-kind clusters",
        "run_id": "run id (default: UTC time plus a random suffix)",
        "logs": "print every worker line, prefixed [worker-i], while waiting",
        "runs_dir": _RUNS_HELP,
    },
)
def deploy(  # noqa: PLR0917 - the parameters are the task's CLI flags
    c: Context,
    workers: str = "3",
    params: str = "10000",
    task: str = "simulate",
    task_options: str = "",
    space: str = "",
    batch_size: str = "500",
    version: str = "",
    log_format: str = "text",
    log_level: str = "INFO",
    context: str = "kind-ttg-cluster",
    kubeconfig: str = "",
    namespace: str = "ttg",
    image: str = "",
    pull_policy: str = "",
    spread: str = "required",
    wait: bool = True,
    timeout: str = "600",
    results_pvc: str = "",
    run_id: str = "",
    logs: bool = False,
    runs_dir: str = "",
) -> None:
    """Deploy the sweep as a Kubernetes Indexed Job and follow it to the end.

    Example: inv deploy --workers 3 --params 10000 (kind), or
    inv deploy --context prod --image registry.example/ttg-worker:v1.1.0 --results-pvc results
    """
    from ttg_ops.backends.kubernetes import DeployOptions
    from ttg_ops.backends.kubernetes import deploy as deploy_run
    from ttg_ops.runner import parse_task_options, parse_whole
    from ttg_ops.spec import DEFAULT_VERSION, RunSpec, new_run_id

    with _user_errors():
        spec = RunSpec(
            workers=parse_whole("workers", workers),
            params=parse_whole("params", params),
            task=task,
            task_options=parse_task_options(task_options),
            space=space,
            batch_size=parse_whole("batch-size", batch_size),
            version=version or DEFAULT_VERSION,
            log_level=log_level,
            log_format=log_format,
            run_id=run_id or new_run_id(),
        )
        options = DeployOptions(
            context=context,
            kubeconfig=kubeconfig or None,
            namespace=namespace,
            image=image or None,
            pull_policy=pull_policy or None,
            spread=spread,
            wait=wait,
            timeout=_number(timeout, "timeout", minimum=1),
            results_pvc=results_pvc,
            runs_root=_runs_root(runs_dir),
            show_logs=logs,
        )
        _tooling_logs()
        deploy_run(spec, options)


@task(
    help={
        "run_id": "cluster run to show (default: the latest deployed)",
        "follow": "keep streaming until every pod's log ends",
        "runs_dir": _RUNS_HELP,
    }
)
def logs(c: Context, run_id: str = "latest", follow: bool = False, runs_dir: str = "") -> None:
    """Print every pod's log of a cluster run, prefixed by worker index.

    Example: inv logs --run-id latest --follow
    """
    from ttg_ops.backends.kubernetes import find_run, print_logs

    with _user_errors():
        spec, record, _ = find_run(_runs_root(runs_dir), run_id)
        print_logs(spec, record, follow_logs=follow)


@task(
    help={
        "run_id": "cluster run to collect (default: the latest deployed)",
        "json": "print the report as JSON instead of tables",
        "runs_dir": _RUNS_HELP,
    }
)
def metrics(c: Context, run_id: str = "latest", json: bool = False, runs_dir: str = "") -> None:
    """Collect a cluster run's pod logs and timings into report.json and print its metrics.

    Example: inv metrics --run-id latest --json
    """
    import json as json_module

    from ttg_ops.backends.kubernetes import collect, find_run, show_metrics

    with _user_errors():
        spec, record, run_dir = find_run(_runs_root(runs_dir), run_id)
        collected = collect(spec, record, run_dir)
        if json:
            print(json_module.dumps(collected.report, indent=2, ensure_ascii=False))
        else:
            show_metrics(collected)
        _finish(collected.report)


ns.add_task(deploy)
ns.add_task(logs)
ns.add_task(metrics)


# ---------------------------------------------------------------------------
# Simulated cluster: `inv cluster.sim-build`, `cluster.sim-up`, `-down`, `-status`
# ---------------------------------------------------------------------------

_SIM_NAME_HELP = (
    "cluster name; nodes are <name>-control-plane, <name>-worker… (default ttg-cluster)"
)


def _sim_logs() -> None:
    """Show the simulated cluster's lifecycle (build steps, start) on stderr, without DEBUG."""
    from ttg_logging import configure

    configure("ttg", _log_level("INFO"), "text", stream=sys.stderr)


@task(help={"force": "rebuild even when binaries of the pinned versions are cached"})
def sim_build(c: Context, force: bool = False) -> None:
    """Build (or reuse) the simulated cluster's binaries: Kubernetes, kwok and kind.

    Example: inv cluster.sim-build
    """
    import time

    from ttg_ops import simcluster

    with _user_errors():
        _sim_logs()
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
    workers: str = "3",
    timeout: str = "120",
) -> None:
    """Start the simulated cluster in the background and print its kubeconfig.

    Example: inv cluster.sim-up && export KUBECONFIG=$(inv cluster.sim-status --kubeconfig)
    """
    from ttg_ops import simcluster

    with _user_errors():
        # Every flag is checked before anything is built or started.
        nodes = _number(workers, "workers", int, minimum=1, unit="worker nodes")
        seconds = _number(timeout, "timeout", minimum=1)
        simcluster.check_cluster_name(name)
        _sim_logs()
        simcluster.build()
        cluster = simcluster.SimCluster(
            name, context=context or None, workers=nodes, ready_timeout=seconds
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
        _sim_logs()
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
        "bin_dir": "print only the folder of the built binaries (kind, kwok, kube-*, etcd)",
    }
)
def sim_status(
    c: Context, name: str = "ttg-cluster", kubeconfig: bool = False, bin_dir: bool = False
) -> None:
    """Show which components of the simulated cluster run and their memory.

    Example: inv cluster.sim-status; export PATH=$(inv cluster.sim-status --bin-dir):$PATH
    """
    from rich.console import Console
    from ttg_ops import simcluster

    with _user_errors():
        cluster = simcluster.SimCluster(name)
        if kubeconfig:
            print(cluster.kubeconfig)
            return
        if bin_dir:
            print(simcluster.sim_home() / "bin")
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
