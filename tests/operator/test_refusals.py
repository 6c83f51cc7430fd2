"""A child the API server refuses (a quota or policy: 403; an admission policy or schema: 422)
shows on the Workspace's conditions with the code, the server's message and what to check, is
retried with backoff, is posted as one Warning Event (not one per retry), and clears once the
server accepts it. Real kopf, strict emulator."""

from __future__ import annotations

import contextlib

from kaito_core.testing.emulator import start_operator, stop_operator
from tests.operator.conftest import Cluster, cluster_emulator, wait_for
from tests.operator.test_flow import NS, _ready_claim, _run_pod, _workspace


def _conditions(cluster: Cluster, name: str) -> dict:
    status = cluster.workspace(name, NS).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []} | {"state": status.get("state")}


def _apply_failed(cluster: Cluster) -> list[dict]:
    return [e for e in cluster.events(NS) if e.get("reason") == "ApplyFailed"]


@contextlib.contextmanager
def _operator(tmp_path):
    """The emulated cluster and a started operator whose resync is far away: only the backoff
    can retry a refused child in a test's time."""
    with cluster_emulator() as emu:
        log = tmp_path / "operator.log"
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "600"},
                              log_path=str(log))
        try:
            wait_for("the operator to start",
                     lambda: "kaito operator: provisioner=" in log.read_text(errors="replace"), timeout=30)
            yield emu, Cluster(emu.url)
        finally:
            stop_operator(proc)


def test_a_refused_child_is_a_condition_retried_with_backoff_and_one_event(tmp_path):
    with _operator(tmp_path) as (emu, cluster):
        name = "refused"
        emu.inject("create", "statefulsets", 422, times=3, reason="Invalid")
        cluster.create_workspace(_workspace(name))
        claim = wait_for("a NodeClaim", lambda: cluster.nodeclaims(name), timeout=30)[0]
        _ready_claim(cluster, claim, f"gpu-{name}")

        cond = wait_for("InferenceReady=False ApplyFailed", lambda: (
            c := _conditions(cluster, name)).get("InferenceReady", {}).get("reason") == "ApplyFailed" and c)
        inference, succeeded = cond["InferenceReady"], cond["WorkspaceSucceeded"]
        assert inference["status"] == "False" and succeeded["reason"] == "ApplyFailed"
        assert f"StatefulSet/{name}: HTTP 422" in inference["message"]
        assert "injected 422 for create statefulsets" in inference["message"]  # the server's own words
        assert "admission policy" in inference["message"]  # and what to check
        assert cond["state"] == "Failed"
        assert cond["ResourceReady"]["status"] == "True"  # the nodes are fine: not blamed

        # retried with backoff (2, 4, 8 s) well before the 600 s resync; then accepted
        wait_for("the StatefulSet created", lambda: cluster.statefulset(name, NS), timeout=45)
        assert sum(f.times for f in emu.handler.faults) == 0  # all three refusals were used
        _run_pod(cluster, name)
        wait_for("state Ready", lambda: _conditions(cluster, name)["state"] == "Ready", timeout=15)
        assert _conditions(cluster, name)["InferenceReady"]["reason"] != "ApplyFailed"
        events = _apply_failed(cluster)
        assert len(events) == 1 and events[0]["type"] == "Warning"
        assert sum(int(e.get("count") or 1) for e in events) == 1  # one Event for three refused tries


def test_a_refused_service_fails_the_workspace_not_its_inference(tmp_path):
    with _operator(tmp_path) as (emu, cluster):
        name = "quota"
        emu.inject("create", "services", 403, times=1000, reason="Forbidden")
        cluster.create_workspace(_workspace(name))
        claim = wait_for("a NodeClaim", lambda: cluster.nodeclaims(name), timeout=30)[0]
        _ready_claim(cluster, claim, f"gpu-{name}")
        wait_for("the StatefulSet", lambda: cluster.statefulset(name, NS), timeout=30)
        _run_pod(cluster, name)
        cond = wait_for("WorkspaceSucceeded=False ApplyFailed", lambda: (
            c := _conditions(cluster, name)).get("InferenceReady", {}).get("status") == "True"
            and c["WorkspaceSucceeded"].get("reason") == "ApplyFailed" and c)
        assert f"Service/{name}: HTTP 403" in cond["WorkspaceSucceeded"]["message"]
        assert "ResourceQuota" in cond["WorkspaceSucceeded"]["message"]
        assert cond["state"] == "NotReady"  # serving pods, but no Service to reach them
        emu.clear_faults()
        wait_for("the Service created", lambda: cluster.kube.get(api_version="v1", kind="Service", name=name,
                                                                 namespace=NS), timeout=40)
        wait_for("state Ready", lambda: _conditions(cluster, name)["state"] == "Ready", timeout=15)
        assert len(_apply_failed(cluster)) == 1
