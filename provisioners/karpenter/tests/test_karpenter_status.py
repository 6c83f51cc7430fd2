"""NodeClaim conditions -> ready / reasons a user can act on."""

import pytest

from kaito_provisioner_karpenter.status import nodeclaim_state
from kaito_provisioner_karpenter.testing import launch_failed_status, launching_status, ready_status


def claim(status=None, **meta):
    return {"metadata": {"name": "ws123456789", **meta}, "status": status or {}}


def cond(type_, status, reason="", message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def test_missing_claim_is_pending_not_failed():
    s = nodeclaim_state("ws1", None)
    assert (s.ready, s.failed, s.reason) == (False, False, None)


def test_ready_claim_reports_its_node():
    s = nodeclaim_state("ws1", claim(ready_status("aks-node-0")))
    assert s.ready and s.node_name == "aks-node-0" and not s.failed


def test_launching_claim_says_what_it_waits_for():
    s = nodeclaim_state("ws1", claim(launching_status()))
    assert (s.ready, s.failed, s.reason) == (False, False, "NotLaunched")


@pytest.mark.parametrize("reason, message, expected", [
    ("LaunchFailed", "Operation could not be completed as it results in exceeding approved "
                     "standardNCADSA100v4Family Cores quota", "QuotaExceeded"),
    ("SKUFamilyQuotaFullyUtilized", "family quota fully used", "QuotaExceeded"),
    ("LaunchFailed", "SKUNotAvailable: The requested VM size Standard_NC24ads_A100_v4 is currently not "
                     "available in location 'westus'", "SKUNotAvailable"),
    ("LaunchFailed", "InsufficientInstanceCapacity: We currently do not have sufficient p5.48xlarge capacity",
     "InsufficientCapacity"),
    ("LaunchFailed", "AllocationFailed: allocation failed", "InsufficientCapacity"),
    ("NodeClassNotReady", "NodeClass default is not ready", "NodeClassNotReady"),
    ("LaunchFailed", "the VM extension timed out", "LaunchFailed"),
])
def test_launch_failures_become_reasons(reason, message, expected):
    s = nodeclaim_state("ws1", claim(launch_failed_status(reason, message)))
    assert s.failed and not s.ready
    assert s.reason == expected
    assert s.message == message


def test_registration_failure():
    s = nodeclaim_state("ws1", claim({"conditions": [cond("Launched", "True"),
                                                     cond("Registered", "False", "RegistrationTimeout",
                                                          "node did not join in 15m")]}))
    assert s.failed and s.reason == "RegistrationFailed" and "15m" in s.message


def test_initialization_failure():
    s = nodeclaim_state("ws1", claim({"conditions": [cond("Launched", "True"), cond("Registered", "True"),
                                                     cond("Initialized", "False", "StartupTaintsExist", "")]}))
    assert s.failed and s.reason == "InitializationFailed" and s.message


def test_registered_but_not_initialised_is_pending():
    s = nodeclaim_state("ws1", claim({"nodeName": "n1", "conditions": [
        cond("Launched", "True"), cond("Registered", "True"), cond("Initialized", "Unknown", "", "")]}))
    assert (s.ready, s.failed, s.reason, s.node_name) == (False, False, "NotInitialized", "n1")


def test_node_not_ready_after_init():
    s = nodeclaim_state("ws1", claim({"conditions": [cond("Launched", "True"), cond("Registered", "True"),
                                                     cond("Initialized", "True"),
                                                     cond("Ready", "False", "KubeletNotReady", "kubelet down")]}))
    assert (s.ready, s.failed, s.reason) == (False, False, "NodeNotReady")


def test_terminating_claim_is_not_ready():
    s = nodeclaim_state("ws1", claim(ready_status("n"), deletionTimestamp="2026-01-01T00:00:00Z"))
    assert not s.ready and s.reason == "NodeClaimTerminating"
