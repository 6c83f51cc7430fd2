"""What the operator (or ``kaito render``) saw in the cluster, handed to the pure planner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kaito_core.reconcile.pods import GPU_RESOURCE
from kaito_core.types import NodeRequest, NodeState


@dataclass(frozen=True)
class Observed:
    """Observed state of one Workspace.

    :param node_states: the provisioner's ``observe``/``ensure`` answer, one per node request.
    :param nodes: the Node objects those states name (readiness, GPU capacity).
    :param workload: the StatefulSet or Job as the API server returns it (with ``status``).
    :param pods: the Workspace's pods (for reasons: unschedulable, image pull, crash loop).
    :param provisioner_error: text of an exception the provisioner raised (e.g. its CRD is absent).
    :param deleting: the Workspace has a deletionTimestamp.
    :param now: RFC 3339 time for new condition transitions (callers pass the clock; pure here).
    """

    node_states: tuple[NodeState, ...] = ()
    nodes: tuple[Mapping[str, Any], ...] = ()
    workload: Mapping[str, Any] | None = None
    pods: tuple[Mapping[str, Any], ...] = ()
    provisioner_error: str | None = None
    deleting: bool = False
    now: str = "1970-01-01T00:00:00Z"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def nothing(cls, now: str = "1970-01-01T00:00:00Z") -> "Observed":
        return cls(now=now)

    @classmethod
    def nodes_ready(cls, requests: Sequence[NodeRequest], gpus_per_node: int,
                    now: str = "1970-01-01T00:00:00Z") -> "Observed":
        """As if every node request had become a Ready node with its GPUs (``kaito render``)."""
        states = tuple(NodeState(name=r.name, ready=True, node_name=r.name) for r in requests)
        nodes = tuple(fake_node(r.name, gpus_per_node, labels=dict(r.labels)) for r in requests)
        return cls(node_states=states, nodes=nodes, now=now)


def fake_node(name: str, gpus: int, labels: Mapping[str, str] | None = None, ready: bool = True) -> dict[str, Any]:
    """A minimal Node object (render's ``--observed nodes-ready``, tests, benchmarks)."""
    cap = {"cpu": "8", "memory": "64Gi"}
    if gpus:
        cap[GPU_RESOURCE] = str(gpus)
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": dict(labels or {})},
            "status": {"capacity": cap, "allocatable": dict(cap),
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def node_is_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def node_gpus(node: Mapping[str, Any]) -> int:
    """GPUs a node reports: allocatable/capacity ``nvidia.com/gpu``, else GPU feature discovery's
    ``nvidia.com/gpu.count`` label."""
    status = node.get("status") or {}
    for key in ("allocatable", "capacity"):
        value = (status.get(key) or {}).get(GPU_RESOURCE)
        if value is not None:
            try:
                return int(str(value))
            except ValueError:
                return 0
    label = ((node.get("metadata") or {}).get("labels") or {}).get(f"{GPU_RESOURCE}.count")
    try:
        return int(label) if label is not None else 0
    except ValueError:
        return 0
