"""Workspaces and sizing requirements for provisioner tests, built through the real types.

``make_workspace`` goes through :class:`kaito_core.api.models.Workspace` (the same model the
operator parses), ``make_requirement`` through :class:`kaito_core.sizing.Requirement`, so a
provisioner tested with them sees exactly what the reconciler hands it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

from kaito_core.reconcile.names import LABEL_NAMESPACE as WORKSPACE_NAMESPACE_LABEL  # the core's labels
from kaito_core.reconcile.names import LABEL_WORKSPACE as WORKSPACE_LABEL

__all__ = ["make_workspace", "make_requirement", "make_node_requests", "workspace_labels"]


def _uid(namespace: str, name: str) -> str:
    h = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def make_workspace(name: str = "ws-test", namespace: str = "default", *, uid: str | None = None,
                   instance_type: str | None = "Standard_NC24ads_A100_v4",
                   match_labels: Mapping[str, str] | None = None, preset: str = "phi-3-mini-4k-instruct",
                   annotations: Mapping[str, str] | None = None) -> Any:
    """A ``kaito.sh/v1beta1`` Workspace as the operator sees it (uid set, like the API server does).

    The uid defaults to a value derived from namespace/name, so two calls give the same object.
    """
    from kaito_core.api.models import Workspace

    labels = dict(match_labels) if match_labels is not None else {"apps": name}
    raw: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or _uid(namespace, name)},
        "resource": {"labelSelector": {"matchLabels": labels}},
        "inference": {"preset": {"name": preset}},
    }
    if instance_type is not None:
        raw["resource"]["instanceType"] = instance_type
    if annotations:
        raw["metadata"]["annotations"] = dict(annotations)
    return Workspace.model_validate(raw)


def make_requirement(instance_type: str | None = "Standard_NC24ads_A100_v4", *, node_count: int = 1,
                     gpus_per_node: int = 1, disk_gib: int = 100, preset: str = "phi-3-mini-4k-instruct",
                     runtime: str = "vllm") -> Any:
    """A :class:`kaito_core.sizing.Requirement` with the fields a provisioner reads."""
    from kaito_core.sizing import Requirement

    return Requirement(preset=preset, runtime=runtime, instance_type=instance_type, gpus_per_node=gpus_per_node,
                       node_count=node_count, gpu_memory_required_gib=1.0,
                       gpu_memory_available_gib=float(gpus_per_node * node_count * 60), disk_gib=disk_gib)


def workspace_labels(workspace: Any) -> dict[str, str]:
    """The two labels upstream puts on everything it makes for a Workspace."""
    return {WORKSPACE_LABEL: workspace.metadata.name, WORKSPACE_NAMESPACE_LABEL: workspace.metadata.namespace}


def make_node_requests(*, workspace: Any, requirement: Any) -> list[Any]:
    """The NodeRequests the core's planner hands a provisioner for ``workspace`` and ``requirement``
    (names from the uid, one per node, the labelSelector's labels, upstream's taint)."""
    from kaito_core.reconcile.nodes import standard_node_requests

    return standard_node_requests(workspace, requirement)
