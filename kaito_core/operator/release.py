"""Deleting a Workspace never gives up silently on its nodes (issue 16, finding 4).

Upstream keeps its finalizer until every NodeClaim of the Workspace is gone. So do we, with
what its users asked for on top:

- a failing release is retried with exponential backoff (1 s doubling to 60 s), and says so
  while it fails: a Warning Event and a ``NodesReleased=False`` condition with the error;
- the grace period (``KAITO_DELETE_GRACE_SECONDS``) counts from the first failure *this running
  operator* saw (not from the deletion, so time the operator was down never counts, and one
  error right after a restart does not escalate at once);
- past the grace the release goes on (GPU nodes cost money while they exist), now with a
  ``ReleaseStuck`` Event that says how to finish by hand;
- only when the Workspace's provisioner plugin is not installed at all (nothing can check or
  delete its nodes) does the finalizer go after the grace, with a ``ReleaseAbandoned`` Event
  naming the labels of what may be left.

No kopf import: the handler in :mod:`kaito_core.operator.handlers` applies the decision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from kaito_core.errors import KaitoError
from kaito_core.reconcile import names

CONDITION = "NodesReleased"
MAX_BACKOFF = 60.0


class ProvisionerMissing(KaitoError):
    """The Workspace's provisioner plugin is not installed: nothing can release its nodes."""


@dataclass
class Decision:
    action: str  # "retry" (raise a temporary error after ``delay``) or "abandon" (let the finalizer go)
    delay: float
    event_reason: str
    message: str
    elapsed: float


class ReleaseTracker:
    """First failure seen by this process, per Workspace uid (process memory on purpose)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.first_failure: dict[str, float] = {}

    def succeeded(self, uid: str) -> None:
        self.first_failure.pop(uid, None)

    def failed(self, uid: str, exc: BaseException, *, attempt: int, grace: float, workspace: str,
               namespace: str) -> Decision:
        now = self.clock()
        elapsed = now - self.first_failure.setdefault(uid, now)
        delay = min(MAX_BACKOFF, 2.0 ** min(max(attempt, 0), 6))
        labels = f"{names.LABEL_WORKSPACE}={workspace},{names.LABEL_NAMESPACE}={namespace}"
        if elapsed < grace:
            return Decision("retry", delay, "ReleaseFailed",
                            f"cannot release the nodes yet (attempt {attempt + 1}, retrying in {delay:.0f}s): {exc}",
                            elapsed)
        if isinstance(exc, ProvisionerMissing):
            self.succeeded(uid)
            return Decision("abandon", 0.0, "ReleaseAbandoned",
                            f"gave up releasing after {elapsed:.0f}s: {exc}; nodes it made may still exist: delete "
                            f"the node objects labelled {labels} by hand", elapsed)
        return Decision("retry", delay, "ReleaseStuck",
                        f"still cannot release the nodes after {elapsed:.0f}s (attempt {attempt + 1}): {exc}; the "
                        "finalizer stays while they may exist. Fix the provider, or if you deleted the node objects "
                        f"labelled {labels} yourself, remove the finalizer {names.FINALIZER}", elapsed)


def failing_status(status: Mapping[str, Any] | None, message: str, now: str) -> dict[str, Any]:
    """``status`` with ``NodesReleased=False`` (reason ReleaseFailed) set or updated."""
    out = dict(status or {})
    conditions = [c for c in out.get("conditions") or [] if c.get("type") != CONDITION]
    before = next((c for c in out.get("conditions") or [] if c.get("type") == CONDITION), None)
    since = before.get("lastTransitionTime") if before and before.get("status") == "False" else now
    conditions.append({"type": CONDITION, "status": "False", "reason": "ReleaseFailed", "message": message[:1000],
                       "lastTransitionTime": since or now})
    out["conditions"] = conditions
    out["state"] = "Deleting"
    return out
