"""Pure builders: Workspace + requirement -> NodeRequests -> NodeClaims / a NodePool.

The NodeClaim has upstream KAITO's shape (pkg/utils/nodeclaim): name ``ws`` + 9 hex digits,
labels ``karpenter.sh/nodepool: kaito``, ``kaito.sh/workspace``, ``kaito.sh/workspacenamespace``
and the selector's matchLabels, annotation ``karpenter.sh/do-not-disrupt: "true"``, taint
``sku=gpu:NoSchedule``, instance-type and OS requirements, and a storage request of the disk
the model needs. One difference: upstream hashes the time into the name; we hash the
Workspace uid and the node's index, so a crash between "create" and "record" can never lead
to a second NodeClaim for the same node.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Sequence

from kaito_core.types import NodeRequest

from kaito_provisioner_karpenter.settings import KarpenterSettings

API_VERSION = "karpenter.sh/v1"
WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
OS_LABEL = "kubernetes.io/os"
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


class PlanError(ValueError):
    """The Workspace cannot be turned into NodeClaims (e.g. no instance type)."""


def node_name(workspace: Any, index: int) -> str:
    """``ws`` + 9 hex digits of sha256(uid/index): deterministic, 11 characters.

    11 characters also fit AKS agent-pool names (``^[a-z][a-z0-9]{0,11}$``), which is why
    upstream's gpu-provisioner can use the NodeClaim name as the pool name.
    """
    meta = workspace.metadata
    seed = meta.uid or f"{meta.namespace or 'default'}/{meta.name}"
    return "ws" + hashlib.sha256(f"{seed}/{index}".encode()).hexdigest()[:9]


def match_labels(workspace: Any) -> dict[str, str]:
    resource = getattr(workspace, "resource", None)
    selector = getattr(resource, "label_selector", None)
    return dict(getattr(selector, "match_labels", None) or {})


def workspace_labels(name: str, namespace: str) -> dict[str, str]:
    return {WORKSPACE_LABEL: name, WORKSPACE_NAMESPACE_LABEL: namespace}


def node_requests(workspace: Any, requirement: Any) -> list[NodeRequest]:
    """One request per node the requirement counts; labels and taints every node carries."""
    instance_type = getattr(requirement, "instance_type", None) or getattr(
        getattr(workspace, "resource", None), "instance_type", None)
    ws_name = workspace.metadata.name
    namespace = workspace.metadata.namespace or "default"
    if not instance_type:
        raise PlanError(f"Workspace {namespace}/{ws_name}: resource.instanceType is empty and sizing chose none; "
                        "the karpenter provisioner needs an instance type (e.g. Standard_NC24ads_A100_v4 or "
                        "g5.2xlarge), or use the 'byo' provisioner for existing nodes")
    count = int(requirement.node_count)
    if count < 0:
        raise PlanError(f"Workspace {namespace}/{ws_name}: node_count is {count}, expected >= 0")
    labels = {**match_labels(workspace), **workspace_labels(ws_name, namespace)}
    return [NodeRequest(name=node_name(workspace, i), workspace=ws_name, namespace=namespace,
                        instance_type=instance_type, index=i, labels=labels, taints=(GPU_TAINT,),
                        disk_gib=int(getattr(requirement, "disk_gib", 0) or 0),
                        gpu_count=int(getattr(requirement, "gpus_per_node", 1) or 1))
            for i in range(count)]


def _requirements(instance_type: str) -> list[dict[str, Any]]:
    return [
        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [instance_type]},
        {"key": OS_LABEL, "operator": "In", "values": ["linux"]},
    ]


def _taints(request: NodeRequest) -> list[dict[str, str]]:
    return [dict(t) for t in request.taints]


def _storage(request: NodeRequest) -> dict[str, Any]:
    return {"requests": {"storage": f"{request.disk_gib}Gi"}} if request.disk_gib > 0 else {}


def build_nodeclaim(request: NodeRequest, settings: KarpenterSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "nodeClassRef": settings.node_class_ref,
        "taints": _taints(request),
        "requirements": [{"key": NODEPOOL_LABEL, "operator": "In", "values": [settings.nodepool_label]},
                         *_requirements(request.instance_type)],
    }
    resources = _storage(request)
    if resources:
        spec["resources"] = resources
    return {
        "apiVersion": API_VERSION,
        "kind": "NodeClaim",
        "metadata": {
            "name": request.name,
            "labels": {NODEPOOL_LABEL: settings.nodepool_label, **dict(request.labels)},
            "annotations": {DO_NOT_DISRUPT: "true"},
        },
        "spec": spec,
    }


def nodepool_name(namespace: str, workspace: str) -> str:
    """``kaito-<namespace>-<workspace>``, shortened with a hash when over 63 characters."""
    name = f"kaito-{namespace}-{workspace}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return re.sub(r"-+$", "", name[:54]) + "-" + digest


def build_nodepool(requests: Sequence[NodeRequest], settings: KarpenterSettings) -> dict[str, Any]:
    """One NodePool per Workspace (NodePool mode): Karpenter makes the nodes when the pods ask.

    ``limits.nodes`` caps the pool at the Workspace's node count; the disruption budget of
    0 nodes and the do-not-disrupt annotation keep Karpenter from consolidating GPU nodes that
    serve a model. With ``KARPENTER_NODEPOOL_STATIC`` the pool holds ``replicas`` nodes even
    before the pods exist (Karpenter's static capacity).
    """
    first = requests[0]
    template_spec: dict[str, Any] = {
        "nodeClassRef": settings.node_class_ref,
        "taints": _taints(first),
        "requirements": _requirements(first.instance_type),
        "expireAfter": "Never",
    }
    spec: dict[str, Any] = {
        "template": {
            "metadata": {"labels": dict(first.labels), "annotations": {DO_NOT_DISRUPT: "true"}},
            "spec": template_spec,
        },
        "limits": {"nodes": str(len(requests))},
        "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never",
                       "budgets": [{"nodes": "0"}]},
    }
    if settings.static_nodepool:
        spec["replicas"] = len(requests)
    return {
        "apiVersion": API_VERSION,
        "kind": "NodePool",
        "metadata": {"name": nodepool_name(first.namespace, first.workspace),
                     "labels": workspace_labels(first.workspace, first.namespace)},
        "spec": spec,
    }


def desired_objects(requests: Sequence[NodeRequest], settings: KarpenterSettings) -> list[dict[str, Any]]:
    if not requests:
        return []
    if settings.mode == "nodepool":
        return [build_nodepool(requests, settings)]
    return [build_nodeclaim(r, settings) for r in requests]
