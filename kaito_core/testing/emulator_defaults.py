"""Built-in defaulting, as kube-apiserver applies it when it decodes a request: what a client
reads back from a cluster is more than it sent. A controller that compares what it wants with
what it reads must tolerate these fields (or it rewrites the object on every pass).

Sources: k8s.io/kubernetes pkg/apis/core/v1/defaults.go (SetDefaults_PodSpec, _Container,
_Probe, _Service, _ObjectFieldSelector, _ConfigMapVolumeSource, _SecretVolumeSource),
pkg/apis/apps/v1/defaults.go (SetDefaults_StatefulSet), pkg/apis/batch/v1/defaults.go
(SetDefaults_Job) and the Job strategy's generated selector (pkg/registry/batch/job).
"""

from __future__ import annotations

from typing import Any

_PROBE = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}


def _container(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image") or "")
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    c.setdefault("imagePullPolicy", "IfNotPresent" if tagged and not image.endswith(":latest") else "Always")
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(name)
        if isinstance(probe, dict):
            for key, value in _PROBE.items():
                probe.setdefault(key, value)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")


def pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if isinstance(c, dict):
            _container(c)
    for vol in spec.get("volumes") or []:
        for source in ("configMap", "secret", "projected", "downwardAPI"):
            if isinstance(vol.get(source), dict):
                vol[source].setdefault("defaultMode", 420)
        if isinstance(vol.get("hostPath"), dict):
            vol["hostPath"].setdefault("type", "")


def _template(spec: dict[str, Any]) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        pod_spec(template.setdefault("spec", {}))


def statefulset(spec: dict[str, Any]) -> None:
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {"partition": 0})
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _template(spec)


def service(spec: dict[str, Any]) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def job(meta: dict[str, Any], spec: dict[str, Any], uid: str | None) -> None:
    """SetDefaults_Job, then (on create, ``uid`` given) the strategy's generated selector: the
    template is labelled with the Job's uid and name and ``selector`` matches the uid."""
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    # Failed where a podFailurePolicy is set (required by it), TerminatingOrFailed otherwise
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    if uid and not spec.get("manualSelector") and isinstance(spec.get("template"), dict):
        labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"controller-uid": uid, "batch.kubernetes.io/controller-uid": uid,
                       "job-name": meta["name"], "batch.kubernetes.io/job-name": meta["name"]})
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    _template(spec)


def apply(kind: str, obj: dict[str, Any], *, created_uid: str | None = None) -> None:
    """Default ``obj`` (a built-in kind) in place; ``created_uid``: the uid a create assigns."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if kind == "StatefulSet":
        statefulset(spec)
    elif kind == "Service":
        service(spec)
    elif kind == "Job":
        job(obj.get("metadata") or {}, spec, created_uid)
    elif kind == "Pod":
        pod_spec(spec)
    elif kind == "Deployment":
        _template(spec)
