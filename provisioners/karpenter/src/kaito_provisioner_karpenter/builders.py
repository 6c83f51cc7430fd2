"""Pure builders: the core's NodeRequests -> NodeClaims / a NodePool (the planner names and counts them).

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

from kaito_core.reconcile.names import LABEL_NAMESPACE as WORKSPACE_NAMESPACE_LABEL  # the core's labels
from kaito_core.reconcile.names import LABEL_WORKSPACE as WORKSPACE_LABEL
from kaito_core.types import NodeRequest

from kaito_provisioner_karpenter.settings import KarpenterSettings

API_VERSION = "karpenter.sh/v1"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
OS_LABEL = "kubernetes.io/os"
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


class PlanError(ValueError):
    """The Workspace cannot be turned into NodeClaims (e.g. no instance type)."""


def match_labels(workspace: Any) -> dict[str, str]:
    resource = getattr(workspace, "resource", None)
    selector = getattr(resource, "label_selector", None)
    return dict(getattr(selector, "match_labels", None) or {})


def workspace_labels(name: str, namespace: str) -> dict[str, str]:
    return {WORKSPACE_LABEL: name, WORKSPACE_NAMESPACE_LABEL: namespace}


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
    if not request.instance_type:
        raise PlanError(f"node request {request.name!r} names no instance type; the karpenter provisioner needs "
                        "one (set resource.instanceType, e.g. Standard_NC24ads_A100_v4 or g5.2xlarge)")
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
