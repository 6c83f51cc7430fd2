"""Release decisions (kaito_core.operator.release) with a test clock."""

from __future__ import annotations

from kaito_core.operator.release import ProvisionerMissing, ReleaseTracker, failing_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grace_and_never_abandoning_a_node_that_may_exist():
    clock = Clock()
    t = ReleaseTracker(clock)
    args = {"grace": 10.0, "workspace": "w", "namespace": "ns"}
    first = t.failed("u", RuntimeError("500"), attempt=0, **args)
    assert (first.action, first.event_reason, first.delay) == ("retry", "ReleaseFailed", 1.0)
    clock.now += 5
    assert t.failed("u", RuntimeError("500"), attempt=3, **args).delay == 8.0
    clock.now += 6  # 11 s after the first failure: past the grace
    late = t.failed("u", RuntimeError("500"), attempt=9, **args)
    assert (late.action, late.event_reason, late.delay) == ("retry", "ReleaseStuck", 60.0)
    assert "kaito.sh/workspace=w" in late.message and "workspace.finalizer.kaito.sh" in late.message
    gone = t.failed("u", ProvisionerMissing("provisioner 'aks' is not installed"), attempt=10, **args)
    assert gone.action == "abandon" and gone.event_reason == "ReleaseAbandoned" and "by hand" in gone.message
    # a success forgets the first failure: the next failure starts a new grace
    t.succeeded("u")
    assert t.failed("u", RuntimeError("500"), attempt=0, **args).event_reason == "ReleaseFailed"


def test_failing_status_keeps_other_conditions_and_the_first_transition():
    status = {"conditions": [{"type": "InferenceReady", "status": "True"}], "state": "Ready"}
    once = failing_status(status, "boom", "2026-01-01T00:00:00Z")
    twice = failing_status(once, "boom again", "2026-01-01T00:05:00Z")
    by_type = {c["type"]: c for c in twice["conditions"]}
    assert by_type["InferenceReady"]["status"] == "True"
    assert by_type["NodesReleased"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert by_type["NodesReleased"]["message"] == "boom again" and twice["state"] == "Deleting"
