"""One cleanup plan across Kubernetes, kind and Docker, shown as a dry run or carried out.

The plan is built from the inventory (:mod:`ttg_ops.inventory`), so it holds
only objects that carry TTG's labels. The dry run prints the very plan object
that :func:`execute` would work through, so what ``--dry-run`` lists is what
a real run deletes. Steps run in dependency order: Kubernetes Jobs (with a
propagation policy, so no pod is orphaned), leftover TTG pods, namespaces TTG
created that hold nothing else, the kind cluster, containers, then images.

Every step is checked again just before it runs: a Kubernetes delete carries
the uid seen in the plan as a precondition, a container or image is inspected
for TTG's labels once more, and an image still used by a container that is
not being removed is left alone. An object already gone counts as done; a
step that fails is reported with its reason and the remaining steps still run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from ttg_ops import labels
from ttg_ops.errors import ConfigError, TTGError
from ttg_ops.inventory import (
    PROBE_TIMEOUT,
    ImageInfo,
    Inventory,
    Scope,
    collect,
    is_ttg_docker,
    is_ttg_k8s,
)
from ttg_ops.kind import KIND_CLUSTER_LABEL

KUBERNETES = "kubernetes"
KIND = "kind"
DOCKER = "docker"
PROPAGATION_POLICIES = ("Background", "Foreground")
REMOVED = "removed"
GONE = "already gone"
FAILED = "failed"
LIST_TIMEOUT = 15.0
DELETE_TIMEOUT = 30.0

# Objects Kubernetes puts into every namespace by itself; they do not make a
# namespace "hold something else".
_AUTOMATIC = {("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")}

_NOUNS = {
    "job": ("Kubernetes job", "Kubernetes jobs"),
    "pod": ("Kubernetes pod", "Kubernetes pods"),
    "namespace": ("Kubernetes namespace", "Kubernetes namespaces"),
    "cluster": ("Kind cluster", "Kind clusters"),
    "container": ("Docker container", "Docker containers"),
    "stage": ("Docker build-cache image", "Docker build-cache images"),
    "image": ("Docker image", "Docker images"),
}
_ORDER = tuple(_NOUNS)


class CleanupIncompleteError(TTGError):
    """Some planned objects could not be removed; the message lists them and why."""

    exit_code = 1


class CleanupCancelledError(TTGError):
    """The user answered no at the confirmation prompt; nothing was deleted."""

    exit_code = 1


@dataclass(frozen=True)
class Action:
    """One object to delete. ``ref`` is the Kubernetes uid or the Docker id seen in the plan."""

    layer: str
    kind: str
    name: str
    namespace: str = ""
    ref: str = ""
    detail: str = ""

    def describe(self) -> str:
        """``Kubernetes job ttg/ttg-computation (propagation Background)``."""
        noun = _NOUNS[self.kind][0]
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{noun} {where}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Plan:
    """Everything one cleanup deletes, in order, and what it deliberately leaves alone."""

    actions: list[Action]
    kept: list[str]
    context: str
    kubeconfig: str | None
    cluster: str
    scope: Scope
    propagation: str = "Background"

    def counts(self) -> dict[str, int]:
        """How many objects of each kind the plan deletes."""
        found = Counter(action.kind for action in self.actions)
        return {kind: found[kind] for kind in _ORDER if found[kind]}

    def count_lines(self) -> list[str]:
        """The seed's dry-run summary: ``1 Kubernetes job``, ``3 Kubernetes pods``..."""
        return [
            f"{count} {_NOUNS[kind][0 if count == 1 else 1]}"
            for kind, count in self.counts().items()
        ]

    def lines(self, verb: str = "would delete") -> list[str]:
        """One line per action, in execution order."""
        return [f"{verb} {action.describe()}" for action in self.actions]


@dataclass
class Outcome:
    """What happened to one planned object: removed, already gone, or failed (with why)."""

    action: Action
    result: str
    reason: str = ""

    def line(self) -> str:
        """``removed: Docker container ttg-run-0 (exited)``."""
        text = f"{self.result}: {self.action.describe()}"
        return f"{text}: {self.reason}" if self.reason else text


@dataclass
class CleanupReport:
    """The outcomes of one executed plan, in execution order."""

    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.result == FAILED]

    @property
    def done(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.result != FAILED]

    def summary(self) -> str:
        """``Removed 9 of 11 planned objects (2 already gone).``"""
        gone = sum(1 for outcome in self.outcomes if outcome.result == GONE)
        text = f"Removed {len(self.done)} of {len(self.outcomes)} planned objects"
        return text + (f" ({gone} already gone)." if gone else ".")

    def failure_text(self) -> str:
        """What was not removed and why, or ``""`` when everything was."""
        if not self.failed:
            return ""
        reasons = "; ".join(f"{o.action.describe()}: {o.reason}" for o in self.failed)
        count = f"{len(self.failed)} of {len(self.outcomes)}"
        return f"{count} planned objects were not removed: {reasons}"


# ---------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------


def _kube_actions(
    inventory: Inventory, propagation: str, contents: dict[str, list[str]]
) -> tuple[list[Action], list[str]]:
    kube = inventory.kubernetes
    if not kube.reachable:
        return [], [f"Kubernetes ({kube.context}) is left alone: {kube.note}"]
    actions = [
        Action(KUBERNETES, "job", j.name, j.namespace, j.uid, f"propagation {propagation}")
        for j in kube.jobs
    ]
    actions += [
        Action(KUBERNETES, "pod", p.name, p.namespace, p.uid, f"job {p.job}" if p.job else "")
        for p in kube.pods
    ]
    kept: list[str] = []
    for space in kube.namespaces:
        others = contents.get(space.name)
        if others is None:
            kept.append(f"namespace {space.name} is kept: its contents could not be listed")
        elif others:
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            kept.append(
                f"namespace {space.name} is kept: it holds objects TTG did not create ({shown})"
            )
        else:
            actions.append(
                Action(KUBERNETES, "namespace", space.name, ref=space.uid, detail="created by TTG")
            )
    return actions, kept


def _kind_actions(inventory: Inventory, keep_cluster: bool) -> tuple[list[Action], list[str]]:
    kind = inventory.kind
    actions: list[Action] = []
    kept = [] if kind.available else [f"kind is left alone: {kind.note}"]
    for cluster in kind.clusters:
        if keep_cluster:
            kept.append(f"kind cluster {cluster.name} is kept (--keep-cluster)")
            continue
        nodes = len(cluster.nodes)
        actions.append(
            Action(KIND, "cluster", cluster.name, detail=f"{nodes} node{'s' * (nodes != 1)}")
        )
    kept += [f"kind cluster {i.name} is not TTG's: {i.reason}" for i in kind.ignored]
    return actions, kept


def _children_first(images: list[ImageInfo]) -> list[ImageInfo]:
    """Images ordered so that one built on other TTG images is removed before them."""
    return sorted(images, key=lambda image: len(image.built_on), reverse=True)


def _docker_actions(inventory: Inventory, keep_images: bool) -> tuple[list[Action], list[str]]:
    docker = inventory.docker
    if not docker.available:
        return [], [f"Docker is left alone: {docker.note}"]
    actions = [
        Action(DOCKER, "container", c.name, ref=c.id, detail=c.status) for c in docker.containers
    ]
    if keep_images:
        kept = [f"{len(docker.images)} TTG image(s) are kept (--keep-images)"] * bool(docker.images)
        if docker.build_cache:
            kept.append(
                f"{len(docker.build_cache)} build-cache image(s) of earlier builds are kept "
                "(--keep-images)"
            )
        return actions, kept
    # Stage images are built on TTG's base image: they go first.
    for stage in _children_first(docker.build_cache):
        short = stage.id.removeprefix("sha256:")[:12]
        actions.append(
            Action(
                DOCKER,
                "stage",
                short,
                ref=stage.id,
                detail=f"untagged build stage, {stage.created}",
            )
        )
    for image in _children_first(docker.images):
        tags = ", ".join(image.tags) if image.tags else "untagged"
        short = image.id.removeprefix("sha256:")[:12]
        name = image.tags[0] if image.tags else short
        actions.append(Action(DOCKER, "image", name, ref=image.id, detail=f"{short}; {tags}"))
    return actions, []


def build_plan(
    inventory: Inventory,
    *,
    keep_cluster: bool = False,
    keep_images: bool = False,
    propagation: str = "Background",
    namespace_contents: dict[str, list[str]] | None = None,
) -> Plan:
    """Turn an inventory into an ordered plan.

    ``namespace_contents`` maps each namespace TTG created to the objects in
    it that are not TTG's; a namespace is planned only when that list is
    empty (a namespace missing from the mapping is kept, to be safe).
    """
    if propagation not in PROPAGATION_POLICIES:
        raise ConfigError(
            f"propagation policy {propagation!r} is not one of {', '.join(PROPAGATION_POLICIES)} "
            "(Orphan would leave the Jobs' pods behind)"
        )
    kube_actions, kube_kept = _kube_actions(inventory, propagation, namespace_contents or {})
    kind_actions, kind_kept = _kind_actions(inventory, keep_cluster)
    docker_actions, docker_kept = _docker_actions(inventory, keep_images)
    return Plan(
        actions=kube_actions + kind_actions + docker_actions,
        kept=kube_kept + kind_kept + docker_kept,
        context=inventory.kubernetes.context,
        kubeconfig=inventory.kubernetes.kubeconfig,
        cluster=inventory.kind.cluster,
        scope=inventory.scope,
        propagation=propagation,
    )


def plan(
    *,
    context: str | None = None,
    kubeconfig: str | None = None,
    namespace: str | None = None,
    cluster: str = labels.DEFAULT_CLUSTER,
    keep_cluster: bool = False,
    keep_images: bool = False,
    propagation: str = "Background",
    scope: Scope | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> Plan:
    """Inspect every layer and build the cleanup plan (nothing is deleted here)."""
    inventory = collect(
        context=context,
        kubeconfig=kubeconfig,
        namespace=namespace,
        cluster=cluster,
        scope=scope,
        timeout=timeout,
    )
    contents: dict[str, list[str]] = {}
    if inventory.kubernetes.reachable and inventory.kubernetes.namespaces:
        from ttg_ops import k8s

        api = k8s.api_client(inventory.kubernetes.context, kubeconfig)
        for space in inventory.kubernetes.namespaces:
            try:
                contents[space.name] = foreign_objects(api, space.name, inventory.scope)
            except TTGError as exc:
                logger.warning("The namespace {} cannot be inspected: {}", space.name, exc)
    return build_plan(
        inventory,
        keep_cluster=keep_cluster,
        keep_images=keep_images,
        propagation=propagation,
        namespace_contents=contents,
    )


def foreign_objects(api: Any, namespace: str, scope: Scope) -> list[str]:
    """``kind/name`` of the objects in ``namespace`` that are not TTG's (in ``scope``).

    Covers the workload, configuration, networking, storage and RBAC kinds
    of the core API groups.
    TODO: objects of custom resource kinds are not looked at; listing them
    needs API discovery, which the namespace check does not do yet.
    """
    from kubernetes import client as k8s_client

    from ttg_ops import k8s

    core: Any = k8s_client.CoreV1Api(api)
    batch: Any = k8s_client.BatchV1Api(api)
    apps: Any = k8s_client.AppsV1Api(api)
    rbac: Any = k8s_client.RbacAuthorizationV1Api(api)
    listers: list[tuple[str, Callable[..., Any]]] = [
        ("Pod", core.list_namespaced_pod),
        ("Service", core.list_namespaced_service),
        ("ConfigMap", core.list_namespaced_config_map),
        ("Secret", core.list_namespaced_secret),
        ("ServiceAccount", core.list_namespaced_service_account),
        ("PersistentVolumeClaim", core.list_namespaced_persistent_volume_claim),
        ("Job", batch.list_namespaced_job),
        ("CronJob", batch.list_namespaced_cron_job),
        ("Deployment", apps.list_namespaced_deployment),
        ("StatefulSet", apps.list_namespaced_stateful_set),
        ("DaemonSet", apps.list_namespaced_daemon_set),
        ("ReplicaSet", apps.list_namespaced_replica_set),
        ("Role", rbac.list_namespaced_role),
        ("RoleBinding", rbac.list_namespaced_role_binding),
    ]
    found: list[str] = []
    with k8s.api_errors(f"listing the contents of namespace {namespace}"):
        for kind, lister in listers:
            for item in lister(namespace, _request_timeout=LIST_TIMEOUT).items:
                meta = item.metadata
                if (kind, meta.name) in _AUTOMATIC:
                    continue
                if is_ttg_k8s(meta.labels) and scope.matches(meta.labels):
                    continue
                found.append(f"{kind.lower()}/{meta.name}")
    return found


# ---------------------------------------------------------------------------
# Confirmation
# ---------------------------------------------------------------------------


def confirm(
    the_plan: Plan,
    *,
    assume_yes: bool,
    interactive: bool,
    ask: Callable[[str], bool],
) -> None:
    """Return when the plan may run; raise when it must not.

    Without ``assume_yes`` a terminal is asked through ``ask``; without a
    terminal nothing is asked and the cleanup is refused, so a script never
    waits for an answer that cannot come.
    """
    if assume_yes or not the_plan.actions:
        return
    total = len(the_plan.actions)
    if not interactive:
        raise ConfigError(
            f"cleanup would delete {total} object(s) and needs a confirmation, but standard "
            "input is not a terminal",
            hint="pass --yes to delete without asking, or --dry-run to only see the plan",
        )
    if not ask(f"Delete these {total} object(s)?"):
        raise CleanupCancelledError("cleanup cancelled at the prompt; nothing was deleted")


# ---------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------


class _Executor:
    """Carries out a plan's actions, opening the Docker and Kubernetes clients once."""

    def __init__(self, the_plan: Plan) -> None:
        self.plan = the_plan
        self._docker: Any = None
        self._kube: Any = None
        self.removed_containers: set[str] = set()

    def docker(self) -> Any:
        from ttg_ops import dockerapi

        if self._docker is None:
            self._docker = dockerapi.client()
        return self._docker

    def kube(self) -> Any:
        from ttg_ops import k8s

        if self._kube is None:
            self._kube = k8s.api_client(self.plan.context, self.plan.kubeconfig)
        return self._kube

    def close(self) -> None:
        if self._docker is not None:
            self._docker.close()

    def run(self, action: Action) -> Outcome:
        """Carry out one action; never raise for a failure of that one object."""
        from docker.errors import DockerException, NotFound

        from ttg_ops import k8s

        handlers: dict[str, Callable[[Action], str]] = {
            "job": self._job,
            "pod": self._pod,
            "namespace": self._namespace,
            "cluster": self._cluster,
            "container": self._container,
            "stage": self._image,
            "image": self._image,
        }
        try:
            result = handlers[action.kind](action)
        except (k8s.NotFound, NotFound):
            return Outcome(action, GONE)
        except k8s.Conflict as exc:
            reason = str(exc)
            if "precondition" in reason.lower() or "uid" in reason.lower():
                reason = "it was replaced by another object of that name since the plan was made"
            return Outcome(action, FAILED, reason)
        except DockerException as exc:
            explanation = getattr(exc, "explanation", None) or str(exc)
            return Outcome(action, FAILED, str(explanation).strip()[:300])
        except TTGError as exc:
            reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            return Outcome(action, FAILED, reason[:400])
        if result == GONE:
            return Outcome(action, GONE)
        if action.kind == "container":
            self.removed_containers.add(action.ref)
        return Outcome(action, REMOVED)

    # Kubernetes ----------------------------------------------------------

    def _delete_options(self, uid: str) -> Any:
        from kubernetes import client as k8s_client

        return k8s_client.V1DeleteOptions(
            propagation_policy=self.plan.propagation,
            preconditions=k8s_client.V1Preconditions(uid=uid) if uid else None,
        )

    def _delete_namespaced(self, action: Action, what: str, delete: Any) -> str:
        """Delete one namespaced object with the plan's propagation and a uid precondition."""
        from ttg_ops import k8s

        with k8s.api_errors(f"deleting {what} {action.namespace}/{action.name}", self.plan.context):
            delete(
                action.name,
                action.namespace,
                body=self._delete_options(action.ref),
                _request_timeout=DELETE_TIMEOUT,
            )
        return REMOVED

    def _job(self, action: Action) -> str:
        from kubernetes import client as k8s_client

        batch: Any = k8s_client.BatchV1Api(self.kube())
        return self._delete_namespaced(action, "job", batch.delete_namespaced_job)

    def _pod(self, action: Action) -> str:
        from kubernetes import client as k8s_client

        core: Any = k8s_client.CoreV1Api(self.kube())
        return self._delete_namespaced(action, "pod", core.delete_namespaced_pod)

    def _namespace(self, action: Action) -> str:
        from kubernetes import client as k8s_client

        from ttg_ops import k8s

        others = foreign_objects(self.kube(), action.name, self.plan.scope)
        if others:
            raise TTGError(
                "it now holds objects TTG did not create: " + ", ".join(others[:5]),
            )
        core: Any = k8s_client.CoreV1Api(self.kube())
        with k8s.api_errors(f"deleting namespace {action.name}", self.plan.context):
            core.delete_namespace(
                action.name, body=self._delete_options(action.ref), _request_timeout=DELETE_TIMEOUT
            )
        return REMOVED

    # kind ----------------------------------------------------------------

    def _cluster(self, action: Action) -> str:
        from ttg_ops import kind

        existed = kind.delete(action.name, kubeconfig=self.plan.kubeconfig)
        return REMOVED if existed else GONE

    # Docker --------------------------------------------------------------

    def _check_labels(self, what: str, object_labels: dict[str, str] | None) -> None:
        if not is_ttg_docker(object_labels) or not self.plan.scope.matches(object_labels):
            raise TTGError(f"{what} no longer carries TTG's labels; left alone")

    def _container(self, action: Action) -> str:
        container = self.docker().containers.get(action.ref)
        self._check_labels(f"container {action.name}", container.labels)
        container.remove(force=True, v=True)
        return REMOVED

    def _image(self, action: Action) -> str:
        client = self.docker()
        image = client.images.get(action.ref)
        self._check_labels(f"image {action.name}", image.labels)

        # Docker refuses to delete an image a container or a child image still
        # uses; name them instead of leaving the image half untagged.
        blockers = [
            self._describe_container(entry)
            for entry in client.api.containers(all=True)
            if entry.get("ImageID") == image.id and entry.get("Id") not in self.removed_containers
        ]
        blockers += [
            f"child image {(entry.get('RepoTags') or [entry['Id'][7:19]])[0]}"
            for entry in client.api.images(all=True)
            if entry.get("ParentId") == image.id
        ]
        if blockers:
            raise TTGError(f"it is used by {', '.join(blockers)}; remove that first")

        for tag in image.tags:
            client.images.remove(tag, noprune=False)
        # Removing the last tag deletes the image unless something still needs
        # it; removing by id then raises with Docker's own reason.
        if not image.tags or _exists(client, image.id):
            client.images.remove(image.id, noprune=False)
        return REMOVED

    @staticmethod
    def _describe_container(entry: dict[str, Any]) -> str:
        name = (entry.get("Names") or ["?"])[0].lstrip("/")
        found = entry.get("Labels") or {}
        if KIND_CLUSTER_LABEL in found:
            owner = f"a node of kind cluster {found[KIND_CLUSTER_LABEL]}"
        else:
            owner = "TTG's" if is_ttg_docker(found) else "not TTG's"
        return f"container {name} ({owner})"


def _exists(client: Any, image_id: str) -> bool:
    from docker.errors import NotFound

    try:
        client.images.get(image_id)
    except NotFound:
        return False
    return True


def execute(the_plan: Plan, progress: Callable[[Outcome], None] | None = None) -> CleanupReport:
    """Carry out every action of ``the_plan`` in order; failures are collected, not raised."""
    report = CleanupReport()
    executor = _Executor(the_plan)
    try:
        for action in the_plan.actions:
            outcome = executor.run(action)
            if outcome.result == FAILED:
                logger.info(
                    "Could not delete {}: {}; going on with the rest of the plan.",
                    action.describe(),
                    outcome.reason,
                )
            else:
                logger.debug("Deleted {} ({}).", action.describe(), outcome.result)
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    finally:
        executor.close()
    return report


def raise_for_failures(report: CleanupReport) -> None:
    """Raise :class:`CleanupIncompleteError` naming every object that was not removed."""
    if report.failed:
        raise CleanupIncompleteError(report.failure_text())


# ---------------------------------------------------------------------------
# The whole cleanup, as `inv cleanup` runs it
# ---------------------------------------------------------------------------

_RESULT_STYLE = {REMOVED: "green", GONE: "dim", FAILED: "red"}


def render_plan(the_plan: Plan, console: Any, dry_run: bool) -> None:
    """Print the plan: one line per object in execution order, the counts, what is kept."""
    from rich.markup import escape

    verb = "would delete" if dry_run else "will delete"
    if the_plan.actions:
        console.print(f"[bold]Cleanup plan[/bold] ({len(the_plan.actions)} objects):")
        for line in the_plan.lines(verb):
            console.print(f"  {escape(line)}", soft_wrap=True)
        console.print(f"[bold]{verb.capitalize()}:[/bold] " + ", ".join(the_plan.count_lines()))
    else:
        console.print("Nothing of TTG's to delete.")
    for note in the_plan.kept:
        console.print(f"  [dim]{escape(note)}[/dim]", soft_wrap=True)


def run(
    *,
    console: Any,
    dry_run: bool = False,
    assume_yes: bool = False,
    interactive: bool = False,
    ask: Callable[[str], bool] | None = None,
    context: str | None = None,
    kubeconfig: str | None = None,
    namespace: str | None = None,
    cluster: str = labels.DEFAULT_CLUSTER,
    keep_cluster: bool = False,
    keep_images: bool = False,
    propagation: str = "Background",
    scope: Scope | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> tuple[Plan, CleanupReport | None]:
    """Plan, show, confirm and carry out a cleanup; raise when something was not removed.

    Returns the plan and, unless this is a dry run or there was nothing to
    do, the report of what happened to each planned object.
    """
    from rich.markup import escape

    the_plan = plan(
        context=context,
        kubeconfig=kubeconfig,
        namespace=namespace,
        cluster=cluster,
        keep_cluster=keep_cluster,
        keep_images=keep_images,
        propagation=propagation,
        scope=scope,
        timeout=timeout,
    )
    render_plan(the_plan, console, dry_run)
    if dry_run or not the_plan.actions:
        return the_plan, None

    def default_ask(question: str) -> bool:
        from rich.prompt import Confirm

        return Confirm.ask(question, console=console, default=False)

    confirm(the_plan, assume_yes=assume_yes, interactive=interactive, ask=ask or default_ask)

    def show(outcome: Outcome) -> None:
        style = _RESULT_STYLE[outcome.result]
        console.print(f"  [{style}]{escape(outcome.line())}[/{style}]", soft_wrap=True)

    report = execute(the_plan, progress=show)
    style = "yellow" if report.failed else "green"
    console.print(f"[bold {style}]{escape(report.summary())}[/bold {style}]")
    raise_for_failures(report)
    return the_plan, report
