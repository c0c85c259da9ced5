"""What kwok plays: the nodes of TTG's kind cluster and the lifecycle of their pods.

kwok runs no containers. It patches node and pod status through *stages*: a
pod bound to a fake node goes Running, then (when a Job owns it) Succeeded
after a short run, or Failed with an exit code when it is marked to fail.
The markers below are TTG's own test controls; a real cluster ignores them.

Pod logs: kwok also plays the kubelet's HTTPS endpoint. For a pod named in a
``Logs`` object it serves that file (CRI log format) as the container's log,
so ``read_namespaced_pod_log`` returns real text through the API server.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ttg_ops.labels import DEFAULT_CLUSTER, PROJECT

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_NODE_SELECTOR = f"{FAKE_NODE_ANNOTATION}=fake"

# Test controls, as pod labels or annotations (a Job's template passes them on).
OUTCOME = "ttg.io/sim-outcome"  # label or annotation: "fail" or "succeed" (overrides indexes)
FAIL_INDEXES = "ttg.io/sim-fail-indexes"  # annotation; "0,2" fails those completion indexes
EXIT_CODE = "ttg.io/sim-exit-code"  # annotation; exit code of a failing container (default 1)
RUN_DURATION = "ttg.io/sim-run-duration"  # annotation; Go duration a pod stays Running
IMAGE_MISSING = "ttg.io/sim-image-missing"  # annotation; "true": no node holds the images
DEFAULT_RUN_DURATION_MS = 1000

ROLE_LABEL = "ttg.io/role"
PROJECT_LABEL = "ttg.io/project"

# A jq program that names the outcome of a pod: "fail" or "succeed".
_OUTCOME_JQ = (
    '(.metadata.labels["' + OUTCOME + '"] // .metadata.annotations["' + OUTCOME + '"] // "")'
    " as $outcome"
    ' | (.metadata.annotations["batch.kubernetes.io/job-completion-index"] // "") as $index'
    ' | ((.metadata.annotations["' + FAIL_INDEXES + '"] // "") | split(",")'
    ' | map(gsub("^\\\\s+|\\\\s+$"; ""))) as $failing'
    ' | if $outcome == "succeed" then "succeed"'
    ' elif $outcome == "fail" or ($index != "" and ($failing | any(. == $index))) then "fail"'
    ' else "succeed" end'
)

# A jq program that says whether a pod's images can be had: "pulled" or "fails". Nothing
# can be pulled (kind's nodes hold only the images `kind load` put there), so an image
# whose pull policy is Always (the default for `:latest`) fails, and so does every
# image of a pod annotated as missing from the nodes.
_PULL_JQ = (
    '(.metadata.annotations["' + IMAGE_MISSING + '"] // "") as $missing'
    ' | if $missing == "true" or ([.spec.containers[].imagePullPolicy] | any(. == "Always"))'
    ' then "fails" else "pulled" end'
)

_RUN_DELAY = f"""\
  delay:
    durationMilliseconds: {DEFAULT_RUN_DURATION_MS}
    durationFrom:
      expressionFrom: '.metadata.annotations["{RUN_DURATION}"]'
"""

_NODE_STAGES = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ttg-node-initialize
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $since := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $since | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
      addresses:
      {{ with .status.addresses }}
      {{ YAML . 1 }}
      {{ else }}
      - {address: {{ NodeIP | Quote }}, type: InternalIP}
      - {address: {{ NodeName | Quote }}, type: Hostname}
      {{ end }}
      {{ with NodePort }}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ . }}
      {{ end }}
      allocatable:
      {{ YAML .status.allocatable 1 }}
      capacity:
      {{ YAML .status.capacity 1 }}
      nodeInfo:
      {{ YAML .status.nodeInfo 1 }}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ttg-node-heartbeat
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: In
      values: ["True"]
  delay:
    durationMilliseconds: 20000
    jitterDurationMilliseconds: 25000
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $since := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $since | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
"""

_POD_READY = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ttg-pod-running
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: DoesNotExist}}
    - {{key: '.status.phase', operator: In, values: [Pending]}}
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ["True"]
    - key: '{_PULL_JQ}'
      operator: In
      values: [pulled]
  next:
    event: {{type: Normal, reason: Started, message: "Started the simulated containers."}}
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - type: PodReadyToStartContainers
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: Initialized
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: Ready
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: ContainersReady
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        imageID: {{{{ printf "kwok://%s" .image | Quote }}}}
        containerID: {{{{ printf "kwok://%s" .name | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      {{{{ with NodeIPWith .spec.nodeName }}}}
      hostIP: {{{{ . | Quote }}}}
      hostIPs: [{{ip: {{{{ . | Quote }}}}}}]
      {{{{ end }}}}
      {{{{ $network := or .spec.hostNetwork false }}}}
      {{{{ $uid := or .metadata.uid "" }}}}
      {{{{ $name := or .metadata.name "" }}}}
      {{{{ $namespace := or .metadata.namespace "" }}}}
      {{{{ with PodIPWith .spec.nodeName $network $uid $name $namespace }}}}
      podIP: {{{{ . | Quote }}}}
      podIPs: [{{ip: {{{{ . | Quote }}}}}}]
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
"""

_POD_IMAGE_PULL = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ttg-pod-image-pull-fails
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: DoesNotExist}}
    - {{key: '.status.phase', operator: In, values: [Pending]}}
    - {{key: '.status.containerStatuses', operator: DoesNotExist}}
    - key: '{_PULL_JQ}'
      operator: In
      values: [fails]
  next:
    event:
      type: Warning
      reason: Failed
      message: "Failed to pull the image: no registry is reachable and no node holds it."
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - type: PodReadyToStartContainers
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: Initialized
        status: "True"
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: Ready
        status: "False"
        reason: ContainersNotReady
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: ContainersReady
        status: "False"
        reason: ContainersNotReady
        lastTransitionTime: {{{{ $now | Quote }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        imageID: ""
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          waiting:
            {{{{ if eq .imagePullPolicy "Never" }}}}
            reason: ErrImageNeverPull
            message: {{{{ printf "image %q is absent and pull policy is Never" .image | Quote }}}}
            {{{{ else }}}}
            reason: ErrImagePull
            message: {{{{ printf "failed to pull and unpack image %q: not found" .image | Quote }}}}
            {{{{ end }}}}
      {{{{ end }}}}
      phase: Pending
"""

_POD_SUCCEED = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ttg-pod-succeed
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: DoesNotExist}}
    - {{key: '.status.phase', operator: In, values: [Running]}}
    - {{key: '.metadata.ownerReferences.[].kind', operator: In, values: [Job]}}
    - key: '{_OUTCOME_JQ}'
      operator: In
      values: [succeed]
{_RUN_DELAY}\
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $started := or .status.startTime $now }}}}
      conditions:
      - type: Ready
        status: "False"
        reason: PodCompleted
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: ContainersReady
        status: "False"
        reason: PodCompleted
        lastTransitionTime: {{{{ $now | Quote }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        imageID: {{{{ printf "kwok://%s" .image | Quote }}}}
        containerID: {{{{ printf "kwok://%s" .name | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{{{ $started | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Succeeded
"""

_POD_FAIL = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ttg-pod-fail
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - {{key: '.metadata.deletionTimestamp', operator: DoesNotExist}}
    - {{key: '.status.phase', operator: In, values: [Running]}}
    - key: '{_OUTCOME_JQ}'
      operator: In
      values: [fail]
{_RUN_DELAY}\
  next:
    event:
      type: Warning
      reason: SimulatedFailure
      message: "A simulated container exited with an error."
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $started := or .status.startTime $now }}}}
      {{{{ $annotations := or .metadata.annotations dict }}}}
      {{{{ $code := or ( index $annotations "{EXIT_CODE}" ) "1" }}}}
      conditions:
      - type: Ready
        status: "False"
        reason: PodFailed
        lastTransitionTime: {{{{ $now | Quote }}}}
      - type: ContainersReady
        status: "False"
        reason: PodFailed
        lastTransitionTime: {{{{ $now | Quote }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        imageID: {{{{ printf "kwok://%s" .image | Quote }}}}
        containerID: {{{{ printf "kwok://%s" .name | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: {{{{ $code }}}}
            reason: Error
            message: "The simulated container exited with code {{{{ $code }}}}."
            startedAt: {{{{ $started | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Failed
"""

_POD_DELETE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: ttg-pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
  next:
    delete: true
"""


def kwok_config() -> str:
    """The stages kwok applies, as one multi-document YAML file."""
    stages = [_NODE_STAGES, _POD_READY, _POD_IMAGE_PULL, _POD_SUCCEED, _POD_FAIL, _POD_DELETE]
    return "---\n".join(stages)


def _memory_kib() -> int:
    """The machine's memory: kind's nodes report the host's capacity, and so do these."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 8 * 1024 * 1024


def node_names(cluster: str = DEFAULT_CLUSTER, workers: int = 3) -> list[str]:
    """Node names as kind gives them: ``<cluster>-control-plane``, ``-worker``, ``-worker2``…"""
    names = [f"{cluster}-control-plane"]
    names += [f"{cluster}-worker{i if i > 1 else ''}" for i in range(1, workers + 1)]
    return names


def node_manifest(name: str, cluster: str, control_plane: bool, k8s_version: str) -> dict[str, Any]:
    """A Node like one of kind's, with TTG's worker labels, for kwok to manage."""
    labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    }
    taints: list[dict[str, str]] = []
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
        taints.append({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"})
    else:
        labels[PROJECT_LABEL] = PROJECT
        labels[ROLE_LABEL] = "worker"
    resources = {
        "cpu": str(os.cpu_count() or 2),
        "memory": f"{_memory_kib()}Ki",
        "pods": "110",
        "ephemeral-storage": "100Gi",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                FAKE_NODE_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
        },
        "spec": {"providerID": f"kind://docker/{cluster}/{name}", "taints": taints},
        "status": {
            # kwok's kubelet endpoint listens on loopback for every node.
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "TTG simulated node (kwok)",
                "kernelVersion": os.uname().release,
                "kubeletVersion": k8s_version,
                "kubeProxyVersion": k8s_version,
                "containerRuntimeVersion": "kwok://simulated",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
            },
        },
    }


def cri_log(text: str, stream: str = "stdout", when: datetime | None = None) -> str:
    """``text`` in the CRI log format the kubelet (and kwok) serve: one record per line."""
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    lines = text.splitlines()
    return "".join(f"{stamp} {stream} F {line}\n" for line in lines)


def logs_manifest(namespace: str, pod: str, logs_file: Path) -> dict[str, Any]:
    """A kwok ``Logs`` object that makes ``logs_file`` the log of every container of ``pod``."""
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": {"name": pod, "namespace": namespace},
        "spec": {"logs": [{"containers": [], "logsFile": str(logs_file), "follow": False}]},
    }
