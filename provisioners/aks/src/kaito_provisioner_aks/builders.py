"""Pure builders: the core's NodeRequests -> AKS agent-pool bodies (the planner names and counts them).

Upstream's gpu-provisioner turns each NodeClaim into one agent pool (a VM scale set of one
node): pool name = the NodeClaim name, ``vmSize`` = the instance type, Linux with the Ubuntu or
AzureLinux OS SKU, OS disk = the storage request, node labels and taints copied from the claim.
We build the same pool straight from the node request. The pool is tagged with its Workspace so
that ``release`` and the garbage collector find it (ARM tag names may not contain '/', so the
tags spell the labels with dashes).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from kaito_core.reconcile.names import LABEL_NAMESPACE as WORKSPACE_NAMESPACE_LABEL  # the core's labels
from kaito_core.reconcile.names import LABEL_WORKSPACE as WORKSPACE_LABEL
from kaito_core.types import NodeRequest

from kaito_provisioner_aks.settings import AKSSettings

POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
ARM_API_VERSION = "2026-08-01"  # azure-mgmt-containerservice 41.8.0's default
TAG_CREATOR, TAG_WORKSPACE, TAG_NAMESPACE = "kaito-creator", "kaito-workspace", "kaito-workspace-namespace"
CREATOR = "kaito"
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
# AKS accepts OS disks of 30..2048 GiB.
MIN_OS_DISK_GIB, MAX_OS_DISK_GIB = 30, 2048


class PlanError(ValueError):
    """The Workspace cannot be turned into agent pools."""


def _taint(t: Mapping[str, str]) -> str:
    value = f"={t['value']}" if t.get("value") else ""
    return f"{t['key']}{value}:{t.get('effect', 'NoSchedule')}"


def workspace_tags(name: str, namespace: str) -> dict[str, str]:
    return {TAG_CREATOR: CREATOR, TAG_WORKSPACE: name, TAG_NAMESPACE: namespace}


def agent_pool(request: NodeRequest, settings: AKSSettings) -> dict[str, Any]:
    """The ARM ``AgentPool`` body to PUT for one node."""
    if not request.instance_type:
        raise PlanError(f"node request {request.name!r}: resource.instanceType is empty; the aks provisioner "
                        "needs an Azure VM size such as Standard_NC24ads_A100_v4")
    if not request.instance_type.startswith("Standard_"):
        raise PlanError(f"node request {request.name!r}: resource.instanceType {request.instance_type!r} is not an "
                        "Azure VM size (expected Standard_..., e.g. Standard_NC24ads_A100_v4)")
    if not POOL_NAME.match(request.name):
        raise PlanError(f"agent pool name {request.name!r} does not match ^[a-z][a-z0-9]{{0,11}}$ (AKS's rule)")
    props: dict[str, Any] = {
        "count": 1,
        "vmSize": request.instance_type,
        "osType": "Linux",
        "osSKU": settings.os_sku,
        "mode": "User",
        "type": "VirtualMachineScaleSets",
        "nodeLabels": dict(request.labels),
        "nodeTaints": [_taint(t) for t in request.taints],
        "tags": workspace_tags(request.workspace, request.namespace),
    }
    if request.disk_gib > 0:
        props["osDiskSizeGB"] = max(MIN_OS_DISK_GIB, min(MAX_OS_DISK_GIB, request.disk_gib))
    return {"properties": props}


def desired_objects(requests: Sequence[NodeRequest], settings: AKSSettings) -> list[dict[str, Any]]:
    """The pools as ``kaito render`` shows them: the ARM body in a Kubernetes-style envelope."""
    out = []
    for r in requests:
        body = agent_pool(r, settings)
        out.append({"apiVersion": f"containerservice.azure.com/{ARM_API_VERSION}", "kind": "AgentPool",
                    "metadata": {"name": r.name, "labels": {WORKSPACE_LABEL: r.workspace,
                                                            WORKSPACE_NAMESPACE_LABEL: r.namespace}},
                    **body})
    return out
