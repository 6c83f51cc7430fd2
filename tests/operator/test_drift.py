"""Finding 6 (issue 16): manual edits of owned objects are undone (or reported), and a
Workspace whose StatefulSet was changed by hand does not report Ready. Real kopf, strict emulator."""

from __future__ import annotations

from kaito_core.testing.emulator import start_operator, stop_operator
from tests.operator.conftest import Cluster, cluster_emulator, operator_refusals, wait_for
from tests.operator.test_flow import NS, _ready_claim, _run_pod, _workspace

EVIL = "evil.example/miner:1"


def _ready_workspace(cluster: Cluster, name: str) -> dict:
    cluster.create_workspace(_workspace(name))
    claim = wait_for("a NodeClaim", lambda: cluster.nodeclaims(name), timeout=30)[0]
    _ready_claim(cluster, claim, f"gpu-{name}")
    sts = wait_for("the StatefulSet", lambda: cluster.kube.get(api_version="apps/v1", kind="StatefulSet",
                                                               name=name, namespace=NS))
    _run_pod(cluster, name)
    wait_for("state Ready", lambda: (cluster.workspace(name, NS).get("status") or {}).get("state") == "Ready")
    return sts


def _swap_image(cluster: Cluster, name: str, sts: dict, replicas: int = 1) -> None:
    containers = sts["spec"]["template"]["spec"]["containers"]
    evil = [{**containers[0], "image": EVIL}] + containers[1:]
    cluster.kube.patch(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS, patch={
        "spec": {"replicas": replicas, "template": {"spec": {"containers": evil}}}})


def _operator(emu, tmp_path, drift: str):
    log = tmp_path / f"operator-{drift}.log"
    proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "600",
                                        "KAITO_DRIFT": drift}, log_path=str(log))
    wait_for("the operator to start", lambda: "kaito operator: provisioner=" in log.read_text(errors="replace"),
             timeout=30)
    return proc


def test_manual_edits_are_reverted(tmp_path):
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc = _operator(emu, tmp_path, "revert")
        try:
            name = "drift"
            sts = _ready_workspace(cluster, name)
            image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
            _swap_image(cluster, name, sts, replicas=0)

            def restored():
                cur = cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS)
                return cur["spec"]["replicas"] == 1 and cur["spec"]["template"]["spec"]["containers"][0]["image"] == image
            wait_for("the StatefulSet restored", restored, timeout=15)
            events = wait_for("a DriftReverted event", lambda: [e for e in cluster.events(NS)
                                                                if e.get("reason") == "DriftReverted"])
            assert EVIL in events[0]["message"] and "spec.replicas" in events[0]["message"]

            cluster.kube.patch(api_version="v1", kind="Service", name=name, namespace=NS,
                               patch={"spec": {"type": "LoadBalancer"}})
            wait_for("the Service back to ClusterIP", lambda: cluster.kube.get(
                api_version="v1", kind="Service", name=name, namespace=NS)["spec"]["type"] == "ClusterIP", timeout=15)

            cm = f"{name}-inference-config"
            original = cluster.kube.get(api_version="v1", kind="ConfigMap", name=cm, namespace=NS)["data"]
            key = next(iter(original))
            cluster.kube.patch(api_version="v1", kind="ConfigMap", name=cm, namespace=NS,
                               patch={"data": {key: "vllm: {max-model-len: 1}\n"}})
            wait_for("the ConfigMap restored", lambda: cluster.kube.get(
                api_version="v1", kind="ConfigMap", name=cm, namespace=NS)["data"][key] == original[key], timeout=15)
            assert operator_refusals(emu) == []  # the reverts are writes a cluster accepts
        finally:
            stop_operator(proc)


def test_report_mode_leaves_edits_and_a_swapped_image_is_not_ready(tmp_path):
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc = _operator(emu, tmp_path, "report")
        try:
            name = "watched"
            sts = _ready_workspace(cluster, name)
            _swap_image(cluster, name, sts)
            cond = wait_for("ResourceDrifted", lambda: cluster.conditions(name, NS).get("ResourceDrifted"), timeout=15)
            assert cond["status"] == "True" and EVIL in cond["message"] and "KAITO_DRIFT=report" in cond["message"]
            conds = cluster.conditions(name, NS)
            assert conds["InferenceReady"]["status"] == "False" and conds["InferenceReady"]["reason"] == "WorkloadDrifted"
            assert cluster.workspace(name, NS)["status"]["state"] == "NotReady"
            cur = cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS)
            assert cur["spec"]["template"]["spec"]["containers"][0]["image"] == EVIL  # left as found
        finally:
            stop_operator(proc)
