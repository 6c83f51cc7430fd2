"""The Workspace status local mode writes: the operator's condition types, reasons and states.

The shape is the Workspace CRD's ``status`` (``conditions[]`` with type/status/reason/message/
lastTransitionTime, ``state``, ``workerNodes``, ``targetNodeCount``), so ``kaito ps -o json``
reads like ``kubectl get workspace -o json``. A condition's ``lastTransitionTime`` only moves
when its status changes (Kubernetes' meta.SetStatusCondition rule).
"""

from __future__ import annotations

import time
from typing import Any

# Upstream's condition types, shared with the operator's reconciler.
from kaito_core.reconcile.status import (  # noqa: E402,F401
    INFERENCE_READY, JOB_STARTED, R_RESOURCES_READY, R_SUCCEEDED, RESOURCE_READY, WORKSPACE_DELETING,
    WORKSPACE_SUCCEEDED)

# v1beta1 status.state values.
PENDING, READY, NOT_READY, RUNNING, SUCCEEDED, FAILED = "Pending", "Ready", "NotReady", "Running", "Succeeded", "Failed"
STOPPED = "Stopped"  # local only: the supervisor is gone (kaito ps shows it; kaito down cleans it)

# Reasons: the reconciler's where the situation is the same (a crash-looping runtime process is
# reported like a crash-looping pod), local ones where it is not.
R_SIZING_FAILED = "SizingFailed"
R_STARTING = "ProcessStarting"
R_LOADING = "InferenceNotReady"
R_HEALTHY = "InferenceReady"
R_UNHEALTHY = "HealthCheckFailed"
R_CRASHED = "CrashLoopBackOff"
R_LOAD_FAILED = "ModelLoadFailed"
R_JOB_STARTED = "JobStarted"
R_JOB_RUNNING = "JobRunning"
R_JOB_DONE = R_SUCCEEDED  # upstream's reason, as the operator sets it
R_JOB_FAILED = "JobFailed"
R_STOPPING = "Stopped"
R_SUPERVISOR_GONE = "SupervisorGone"


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def set_condition(status: dict[str, Any], ctype: str, value: bool | None, reason: str, message: str) -> bool:
    """Set one condition in ``status['conditions']``; return True when anything changed."""
    text = "Unknown" if value is None else ("True" if value else "False")
    conds: list[dict[str, Any]] = status.setdefault("conditions", [])
    for cond in conds:
        if cond.get("type") == ctype:
            changed = (cond.get("status"), cond.get("reason"), cond.get("message")) != (text, reason, message)
            if cond.get("status") != text:
                cond["lastTransitionTime"] = now_rfc3339()
            cond.update(status=text, reason=reason, message=message)
            return changed
    conds.append({"type": ctype, "status": text, "reason": reason, "message": message,
                  "lastTransitionTime": now_rfc3339(), "observedGeneration": 1})
    return True


def condition(status: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in (status or {}).get("conditions", []) or []:
        if cond.get("type") == ctype:
            return cond
    return None


def condition_status(status: dict[str, Any] | None, ctype: str) -> str:
    cond = condition(status, ctype)
    return str(cond.get("status")) if cond else ""


def new_status(mode: str, node: str) -> dict[str, Any]:
    """The status right after ``kaito up`` accepted the Workspace (before the process starts)."""
    status: dict[str, Any] = {"state": PENDING, "workerNodes": [node], "targetNodeCount": 1, "conditions": []}
    if mode == "inference":
        set_condition(status, INFERENCE_READY, False, R_STARTING, "the runtime process is starting")
    else:
        set_condition(status, JOB_STARTED, False, R_STARTING, "the tuning process is starting")
    return status
