"""Finding 3 (issue 16): the watch cache must not keep the dead alive.

A watch outage (the emulator ends every watch and leaves new ones unanswered), then the
Workspace's NodeClaim and Node are deleted and the history compacted; kopf's resumed watches
get 410 Gone and its re-list sends no DELETED event for what is gone. The operator's periodic re-list (KAITO_RELIST_SECONDS) drops them from its
cache and wakes the Workspace: the NodeClaim is requested again and the Workspace stops
reporting Ready, without a restart."""

from __future__ import annotations

import contextlib
from pathlib import Path

from kaito_core.testing.emulator import start_operator, stop_operator
from tests.operator.conftest import Cluster, cluster_emulator, wait_for
from tests.operator.test_flow import CRASH_LOOP, NS, _ready_claim, _run_pod, _workspace


@contextlib.contextmanager
def _relisting_operator(tmp_path: Path):
    """The operator (Karpenter, a resync too slow to matter, a re-list every second) against a
    fresh emulator; yields the emulator, a user's client, the process and its log file."""
    with cluster_emulator() as emu:
        log = tmp_path / "operator.log"
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "600",
                                            "KAITO_RELIST_SECONDS": "1"}, log_path=str(log))
        try:
            yield emu, Cluster(emu.url), proc, log
        finally:
            stop_operator(proc)


def _workspace_on_a_node(cluster: Cluster, name: str, node: str) -> dict:
    """Create the Workspace, make its NodeClaim ready on ``node`` and wait for its StatefulSet;
    returns the NodeClaim."""
    cluster.create_workspace(_workspace(name))
    claim = wait_for("a NodeClaim", lambda: cluster.nodeclaims(name), timeout=30)[0]
    _ready_claim(cluster, claim, node)
    wait_for("the StatefulSet", lambda: cluster.kube.get(api_version="apps/v1", kind="StatefulSet",
                                                         name=name, namespace=NS))
    return claim


def test_deletions_during_a_watch_outage_converge_without_a_restart(tmp_path):
    with _relisting_operator(tmp_path) as (emu, cluster, proc, log):
        try:
            name = "outage"
            claim = _workspace_on_a_node(cluster, name, "gpu-outage-0")
            _run_pod(cluster, name)
            wait_for("state Ready", lambda: (cluster.workspace(name, NS).get("status") or {}).get("state") == "Ready")

            assert emu.hold_watches() > 0
            cluster.kube.delete(api_version="karpenter.sh/v1", kind="NodeClaim", name=claim["metadata"]["name"])
            cluster.kube.delete(api_version="v1", kind="Node", name="gpu-outage-0")
            # etcd compacted meanwhile: kopf's resumed watches get 410 Gone and kopf re-lists,
            # which sends nothing for objects that are gone (the finding's situation)
            emu.compact()
            emu.release_watches()

            again = wait_for("the NodeClaim requested again", lambda: cluster.nodeclaims(name), timeout=20)
            assert again[0]["metadata"]["name"] == claim["metadata"]["name"]  # same name: never a second node
            assert not (again[0].get("status") or {}).get("nodeName")
            # (state is the planner's verdict; ResourceReady is what the lost node must change)
            wait_for("ResourceReady=False", lambda: cluster.conditions(name, NS)["ResourceReady"]["status"] == "False",
                     timeout=20)
            assert "relist: NodeClaim" in log.read_text(errors="replace")
            assert proc.poll() is None  # the same process: no restart
        except AssertionError:
            print(log.read_text(errors="replace")[-4000:])
            print(cluster.workspace(name, NS).get("status"))
            raise


def test_a_crash_looping_pod_deleted_during_an_outage_stops_counting(tmp_path):
    """kopf's pod index keeps a pod its re-list no longer shows: the re-list marks it gone, so
    the Workspace stops reporting the dead pod's CrashLoopBackOff."""
    with _relisting_operator(tmp_path) as (emu, cluster, proc, log):
        name = "podgone"
        _workspace_on_a_node(cluster, name, "gpu-podgone-0")
        _run_pod(cluster, name, ready=False, status=CRASH_LOOP)
        wait_for("CrashLoopBackOff", lambda: cluster.conditions(name, NS)["InferenceReady"]["reason"]
                 == "CrashLoopBackOff")
        assert emu.hold_watches() > 0
        cluster.kube.delete(api_version="v1", kind="Pod", name=f"{name}-0", namespace=NS)
        emu.compact()
        emu.release_watches()
        wait_for("the dead pod's reason to go", lambda: cluster.conditions(name, NS)["InferenceReady"]["reason"]
                 != "CrashLoopBackOff", timeout=20)
        assert "relist: Pod" in log.read_text(errors="replace")
