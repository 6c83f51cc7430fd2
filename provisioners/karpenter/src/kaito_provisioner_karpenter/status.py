"""A NodeClaim's status conditions -> :class:`~kaito_core.types.NodeState`.

Karpenter (v1) walks a NodeClaim through ``Launched`` (the cloud made an instance),
``Registered`` (the node joined), ``Initialized`` (startup taints gone, resources reported) and
``Ready``. When the cloud refuses, Karpenter sets ``Launched=False`` with a reason
(``LaunchFailed``, ``NodeClassNotReady`` or the provider's own, e.g. Azure's
``SKUFamilyQuotaFullyUtilized``) and the provider's message; it keeps retrying. We map those to a
small set of reasons a user can act on, because upstream users found quota errors invisible
(kaito-project/kaito#344): ``QuotaExceeded``, ``SKUNotAvailable``, ``InsufficientCapacity``,
``NodeClassNotReady``, ``LaunchFailed``, ``RegistrationFailed``, ``InitializationFailed``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from kaito_core.types import NodeState

STAGES = ("Launched", "Registered", "Initialized")
STAGE_FAILURE = {"Launched": "LaunchFailed", "Registered": "RegistrationFailed",
                 "Initialized": "InitializationFailed"}

# Checked in order against "<reason> <message>"; the first match names the cause.
_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("QuotaExceeded", re.compile(r"quota|QuotaExceeded|SubscriptionQuotaReached|LimitExceeded|"
                                 r"VcpuLimitExceeded", re.I)),
    ("SKUNotAvailable", re.compile(r"SKUNotAvailable|not available in (the )?(location|region|zone)|"
                                   r"Unsupported(InstanceType|Sku)|is not (supported|allowed) in|"
                                   r"no instance type (satisfied|met)|InstanceTypeNotAvailable", re.I)),
    ("InsufficientCapacity", re.compile(r"InsufficientCapacity|InsufficientInstanceCapacity|"
                                        r"AllocationFailed|ZonalAllocationFailed|OverconstrainedAllocation", re.I)),
    ("NodeClassNotReady", re.compile(r"NodeClassNotReady|NodeClass\b.*not (found|ready)", re.I)),
)


def condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def classify(stage: str, reason: str | None, message: str | None) -> str:
    text = f"{reason or ''} {message or ''}"
    for name, pattern in _CAUSES:
        if pattern.search(text):
            return name
    return STAGE_FAILURE[stage]


def nodeclaim_state(name: str, obj: Mapping[str, Any] | None) -> NodeState:
    """The state of the node ``name`` stands for, from its NodeClaim (None: not created yet)."""
    if obj is None:
        return NodeState(name=name, ready=False, message="NodeClaim not created yet")
    status = obj.get("status") or {}
    node_name = status.get("nodeName") or None
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return NodeState(name=name, ready=False, node_name=node_name, reason="NodeClaimTerminating",
                         message=f"NodeClaim {obj['metadata'].get('name')} is being deleted")
    ready = condition(obj, "Ready")
    if ready is not None and ready.get("status") == "True":
        return NodeState(name=name, ready=True, node_name=node_name)
    for stage in STAGES:
        cond = condition(obj, stage)
        if cond is None:
            continue
        if cond.get("status") == "False":
            message = cond.get("message") or f"{stage}=False ({cond.get('reason') or 'no reason given'})"
            return NodeState(name=name, ready=False, node_name=node_name, failed=True,
                             reason=classify(stage, cond.get("reason"), cond.get("message")), message=message)
        if cond.get("status") != "True":
            # Unknown: Karpenter is still working on this stage; say which, do not fail.
            return NodeState(name=name, ready=False, node_name=node_name, reason=f"Not{stage}",
                             message=cond.get("message") or f"waiting for the NodeClaim to be {stage.lower()}")
    if ready is not None and ready.get("status") == "False":
        return NodeState(name=name, ready=False, node_name=node_name, reason="NodeNotReady",
                         message=ready.get("message") or "the node is not Ready")
    return NodeState(name=name, ready=False, node_name=node_name, message="NodeClaim is being provisioned")
