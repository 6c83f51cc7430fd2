"""Pieces every KAITO pod shares: placement on the Workspace's nodes, GPU tolerations,
non-root security, /dev/shm (pure)."""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
# Upstream's GPU nodes carry the taint sku=gpu:NoSchedule (NodeClaims) and the NVIDIA device
# plugin's nvidia.com/gpu taint on some clouds; KAITO pods tolerate both.
TOLERATIONS = [
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    # Azure spot node pools carry this taint; upstream tolerates it so spot GPU nodes can serve.
    {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"},
]
RUN_AS_USER = 1000


def node_affinity(label_selector: dict[str, Any] | None) -> dict[str, Any] | None:
    """Required node affinity from ``resource.labelSelector`` (matchLabels become ``In``)."""
    if not label_selector:
        return None
    exprs = [{"key": k, "operator": "In", "values": [v]}
             for k, v in sorted((label_selector.get("matchLabels") or {}).items())]
    for e in label_selector.get("matchExpressions") or []:
        expr = {"key": e["key"], "operator": e["operator"]}
        if e.get("values"):
            expr["values"] = list(e["values"])
        exprs.append(expr)
    if not exprs:
        return None
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": exprs}]}}}


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def shm_volume(size_gib: int | None = None) -> dict[str, Any]:
    # NCCL and the tokenizer workers use /dev/shm; the container default (64 MiB) is too small.
    empty: dict[str, Any] = {"medium": "Memory"}
    if size_gib:
        empty["sizeLimit"] = f"{size_gib}Gi"
    return {"name": "dshm", "emptyDir": empty}


def gpu_resources(gpus: int, cpu: str, memory_gib: int, resource: str = GPU_RESOURCE) -> dict[str, Any]:
    """Requests and limits. GPUs are an extended resource: request == limit. No memory limit:
    loading weights briefly needs more host memory than serving, and an OOM kill there would
    read as a crash loop."""
    requests: dict[str, Any] = {"cpu": cpu, "memory": f"{memory_gib}Gi"}
    limits: dict[str, Any] = {}
    if gpus > 0:
        requests[resource] = str(gpus)
        limits[resource] = str(gpus)
    out: dict[str, Any] = {"requests": requests}
    if limits:
        out["limits"] = limits
    return out


def image_pull_secrets(names: list[str]) -> list[dict[str, str]]:
    seen: list[str] = []
    for n in names:
        if n and n not in seen:
            seen.append(n)
    return [{"name": n} for n in seen]


def finish_spec(spec: dict[str, Any], label_selector: dict[str, Any] | None, pull_secrets: list[str]) -> dict[str, Any]:
    """The parts every kaito pod spec shares: no empty initContainers, node affinity from the
    Workspace's selector, and image pull secrets (preset, adapters, data) when there are any."""
    if not spec.get("initContainers"):
        spec.pop("initContainers", None)
    aff = node_affinity(label_selector)
    if aff:
        spec["affinity"] = aff
    if pull_secrets:
        spec["imagePullSecrets"] = image_pull_secrets(pull_secrets)
    return spec
