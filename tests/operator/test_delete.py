"""Deletes never hang: missing provider CRDs count as nothing to release; a failing provider
is retried for the grace period, then the finalizer goes with a Warning event."""

from __future__ import annotations

import time

from kaito_core.testing.emulator import Emulator, start_operator, stop_operator
from tests.operator.conftest import NAMESPACES, Cluster, cluster_emulator, wait_for
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
    with Emulator(karpenter=False, namespaces=NAMESPACES) as emu:
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


def _events(cluster, reason: str) -> list[dict]:
    return [e for e in cluster.events(NS) if e.get("reason") == reason]


def test_failing_release_never_abandons_existing_nodes(tmp_path):
    """Finding 4: past the grace the finalizer stays while the NodeClaim may exist (ReleaseStuck,
    a condition), and once the provider answers again the node goes, then the Workspace."""
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc, log = _run(tmp_path, emu, grace="2")
        try:
            cluster.create_workspace(_workspace("stuck"))
            wait_for("a NodeClaim", lambda: cluster.nodeclaims("stuck"))
            emu.fail("nodeclaims")  # the provider's API is down from now on
            cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="stuck", namespace=NS)
            failed = wait_for("a ReleaseFailed event", lambda: _events(cluster, "ReleaseFailed"))
            assert failed[0]["type"] == "Warning" and "retrying" in failed[0]["message"]
            cond = wait_for("NodesReleased=False", lambda: cluster.conditions("stuck", NS).get("NodesReleased"))
            assert cond["status"] == "False" and cond["reason"] == "ReleaseFailed"
            stuck = wait_for("a ReleaseStuck event after the grace", lambda: _events(cluster, "ReleaseStuck"), timeout=20)
            assert "finalizer" in stuck[0]["message"] and "kaito.sh/workspace=stuck" in stuck[0]["message"]
            assert cluster.workspace("stuck", NS) is not None  # held: the node may still exist
            assert not _events(cluster, "ReleaseAbandoned")
            emu.fail()  # the provider is back
            wait_for("the Workspace to go", lambda: cluster.workspace("stuck", NS) is None, timeout=90)
            assert cluster.nodeclaims("stuck") == []  # nothing leaked
        finally:
            stop_operator(proc)


def test_grace_counts_from_the_first_failure_a_running_operator_sees(tmp_path):
    """Time the operator was down does not count: a release that failed before a restart longer
    than the grace is retried after it (ReleaseFailed), not escalated at once."""
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc, log = _run(tmp_path, emu, grace="4")
        cluster.create_workspace(_workspace("late"))
        wait_for("a NodeClaim", lambda: cluster.nodeclaims("late"))
        emu.fail("nodeclaims")
        cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="late", namespace=NS)
        wait_for("a ReleaseFailed event", lambda: _events(cluster, "ReleaseFailed"))
        stop_operator(proc)
        time.sleep(5)  # down for longer than the grace
        seen = len(_events(cluster, "ReleaseFailed"))
        proc, log = _run(tmp_path, emu, grace="4")
        try:
            wait_for("a ReleaseFailed event after the restart", lambda: len(_events(cluster, "ReleaseFailed")) > seen)
            assert not _events(cluster, "ReleaseStuck") and not _events(cluster, "ReleaseAbandoned")
            assert cluster.workspace("late", NS) is not None
        finally:
            stop_operator(proc)


def test_node_requests_of_a_vanished_workspace_are_released(tmp_path):
    """A Workspace gone without a release (finalizer removed by hand while the operator was
    down, or an abandoned release) leaves a NodeClaim: the operator's sweep releases it."""
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc, log = _run(tmp_path, emu)
        cluster.create_workspace(_workspace("vanished"))
        wait_for("a NodeClaim", lambda: cluster.nodeclaims("vanished"))
        stop_operator(proc)
        cluster.kube.patch(api_version="kaito.sh/v1beta1", kind="Workspace", name="vanished", namespace=NS,
                           patch={"metadata": {"finalizers": None}})
        cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="vanished", namespace=NS)
        wait_for("the Workspace to go", lambda: cluster.workspace("vanished", NS) is None)
        assert cluster.nodeclaims("vanished")  # leaked: nobody released it
        log = tmp_path / "operator2.log"
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RELIST_SECONDS": "1"},
                              log_path=str(log))
        try:
            try:
                wait_for("the leaked NodeClaim released", lambda: cluster.nodeclaims("vanished") == [], timeout=30)
            except AssertionError:
                print(log.read_text(errors="replace")[-3000:])
                raise
            assert "orphan sweep: flow/vanished" in log.read_text(errors="replace")
        finally:
            stop_operator(proc)
