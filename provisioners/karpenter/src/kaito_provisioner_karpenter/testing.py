"""Playing Karpenter in tests: the status Karpenter writes on a NodeClaim, and a conformance harness.

``ready_status`` / ``launch_failed_status`` give the ``status`` Karpenter v1 writes (conditions
with ``lastTransitionTime``, as the CRD requires), for the operator's system tests and ours.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kaito_core.types import NodeRequest, ProvisionerContext

from kaito_provisioner_karpenter import builders

STAGES = ("Launched", "Registered", "Initialized", "Ready")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": _now()}


def ready_status(node_name: str, *, gpus: int = 1) -> dict[str, Any]:
    """A NodeClaim whose node launched, joined, initialised and is Ready."""
    return {
        "nodeName": node_name,
        "providerID": f"azure:///subscriptions/0/resourceGroups/mc/providers/Microsoft.Compute/virtualMachines/{node_name}",
        "capacity": {"nvidia.com/gpu": str(gpus)},
        "allocatable": {"nvidia.com/gpu": str(gpus)},
        "conditions": [_cond(t, "True", t) for t in STAGES],
    }


def launch_failed_status(reason: str, message: str) -> dict[str, Any]:
    """Karpenter could not launch: ``Launched=False`` with the cloud provider's reason and words."""
    return {"conditions": [_cond("Launched", "False", reason, message),
                           _cond("Ready", "Unknown", "NotLaunched", "")]}


def launching_status() -> dict[str, Any]:
    return {"conditions": [_cond("Launched", "Unknown", "AwaitingReconciliation", "object is awaiting reconciliation"),
                           _cond("Ready", "Unknown", "NotLaunched", "")]}


class KarpenterHarness:
    """The conformance suite's view of Karpenter over a :class:`~kaito_core.testing.FakeKube`."""

    QUOTA_MESSAGE = ("creating instance, insufficient quota: Operation could not be completed as it results in "
                     "exceeding approved standardNCADSA100v4Family Cores quota. Current Limit: 0")

    def __init__(self, kube: Any, settings: dict[str, str] | None = None) -> None:
        self.kube = kube
        self.settings = dict(settings or {})

    def context(self) -> ProvisionerContext:
        return ProvisionerContext(kube=self.kube, settings=self.settings)

    def backing(self, workspace: Any) -> list[str]:
        labels = builders.workspace_labels(workspace.metadata.name, workspace.metadata.namespace or "default")
        return (self.kube.names(api_version=builders.API_VERSION, kind="NodeClaim", labels=labels)
                + self.kube.names(api_version=builders.API_VERSION, kind="NodePool", labels=labels))

    def make_ready(self, request: NodeRequest) -> None:
        self.kube.set_status(api_version=builders.API_VERSION, kind="NodeClaim", name=request.name,
                             status=ready_status(f"aks-{request.name}-vmss000000", gpus=request.gpu_count))

    def fail(self, request: NodeRequest) -> str:
        self.kube.set_status(api_version=builders.API_VERSION, kind="NodeClaim", name=request.name,
                             status=launch_failed_status("LaunchFailed", self.QUOTA_MESSAGE))
        return "QuotaExceeded"
