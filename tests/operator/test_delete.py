"""Deletes never hang: missing provider CRDs count as nothing to release; a failing provider
is retried for the grace period, then the finalizer goes with a Warning event."""

from __future__ import annotations

from kaito_core.operator.emulator import Emulator, start_operator, stop_operator
from tests.operator.conftest import Cluster, wait_for
from tests.operator.test_flow import _workspace

NS = "flow"


def _run(tmp_path, emu, grace="2"):
    log = tmp_path / "operator.log"
    proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_DELETE_GRACE_SECONDS": grace,
                                        "KAITO_RESYNC_SECONDS": "30"}, log_path=str(log))
    wait_for("the operator to start", lambda: "kaito operator: provisioner=" in log.read_text(errors="replace"),
             timeout=30)
    return proc, log


def test_missing_karpenter_crds_visible_and_delete_does_not_hang(tmp_path):
    with Emulator(karpenter=False) as emu:
        cluster = Cluster(emu.url)
        proc, log = _run(tmp_path, emu)
        try:
            cluster.create_workspace(_workspace("nocrd"))
            nc = wait_for("NodeClaimReady=False", lambda: cluster.conditions("nocrd", NS).get("NodeClaimReady"))
            assert nc["reason"] == "ProvisioningError" and "404" in nc["message"], nc
            cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="nocrd", namespace=NS)
            wait_for("the Workspace to go", lambda: cluster.workspace("nocrd", NS) is None, timeout=10)
        finally:
            stop_operator(proc)


def test_failing_release_gives_up_after_grace(tmp_path):
    with Emulator() as emu:
        cluster = Cluster(emu.url)
        proc, log = _run(tmp_path, emu, grace="2")
        try:
            cluster.create_workspace(_workspace("stuck"))
            wait_for("a NodeClaim", lambda: cluster.nodeclaims("stuck"))
            emu.fail("nodeclaims")  # the provider's API is down from now on
            cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="stuck", namespace=NS)
            wait_for("a ReleaseFailed event", lambda: [e for e in cluster.events(NS) if e.get("reason") == "ReleaseFailed"])
            assert cluster.workspace("stuck", NS) is not None  # still held while within the grace
            wait_for("the Workspace to go after the grace", lambda: cluster.workspace("stuck", NS) is None, timeout=15)
            abandoned = [e for e in cluster.events(NS) if e.get("reason") == "ReleaseAbandoned"]
            assert abandoned and "by hand" in abandoned[0]["message"] and abandoned[0]["type"] == "Warning"
        finally:
            stop_operator(proc)
