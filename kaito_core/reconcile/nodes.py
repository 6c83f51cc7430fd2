"""The node requests of a Workspace, built once by the core (pure); provisioners receive them.

:func:`standard_node_requests` gives names from
the Workspace uid (never a second node after a crash), upstream's labels
(``kaito.sh/workspace``, ``kaito.sh/workspacenamespace`` + the selector's matchLabels, so the
pods' node affinity matches the new nodes), upstream's taint ``sku=gpu:NoSchedule``, the disk
sizing asked for, one request per node of ``requirement.node_count``.
"""

from __future__ import annotations

from typing import Any

from kaito_core.reconcile import names
from kaito_core.types import NodeRequest

GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


def _estimated(workspace: Any, requirement: Any) -> bool:
    """Whether sizing counted the nodes from the model and the instance type's GPUs."""
    return (workspace.preset_name is not None and requirement is not None
            and int(getattr(requirement, "gpus_per_node", 0) or 0) > 0
            and int(getattr(requirement, "node_count", 0) or 0) > 0)


def ignored_count(workspace: Any, requirement: Any) -> int | None:
    """The ``resource.count`` the node count does not follow, if any (see :func:`target_node_count`)."""
    res = workspace.resource
    count = int(res.count) if res is not None and res.count else None
    if workspace.tuning is not None or count is None or not _estimated(workspace, requirement):
        return None
    return count if count != int(requirement.node_count) else None


def target_node_count(workspace: Any, requirement: Any) -> int:
    """Nodes the Workspace needs: exactly one for tuning; for a preset whose instance type's GPUs
    are known, sizing's count whatever ``resource.count`` says (upstream's node estimator starts
    from the requested count and replaces it with the GPUs the model needs; the field is
    deprecated in v1beta1); otherwise (a template, GPUs unknown) ``resource.count``, default 1."""
    if workspace.tuning is not None:
        return 1
    count = int(getattr(requirement, "node_count", 0) or 0) if requirement is not None else 0
    res = workspace.resource
    if res is not None and res.count and not _estimated(workspace, requirement):
        count = max(count, int(res.count))
    return max(count, 1)


def workspace_node_labels(workspace: Any) -> dict[str, str]:
    labels = {names.LABEL_WORKSPACE: workspace.name, names.LABEL_NAMESPACE: workspace.namespace}
    res = workspace.resource
    if res is not None and res.label_selector is not None:
        labels.update(res.label_selector.match_labels or {})
    return labels


def standard_node_requests(workspace: Any, requirement: Any) -> list[NodeRequest]:
    uid = names.uid_of(workspace.namespace, workspace.name, workspace.metadata.uid)
    instance_type = (getattr(requirement, "instance_type", None)
                     or (workspace.resource.instance_type if workspace.resource is not None else None) or "")
    gpus = int(getattr(requirement, "gpus_per_node", 0) or 0)
    disk = int(getattr(requirement, "disk_gib", 0) or 0)
    labels = workspace_node_labels(workspace)
    return [NodeRequest(name=names.node_request_name(uid, i), workspace=workspace.name,
                        namespace=workspace.namespace, instance_type=instance_type, index=i, labels=labels,
                        taints=(GPU_TAINT,), disk_gib=disk, gpu_count=max(gpus, 1) if gpus else 0)
            for i in range(target_node_count(workspace, requirement))]
