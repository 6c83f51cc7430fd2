"""Issue 17, migration from upstream KAITO v0.12: a Workspace with upstream-made NodeClaim,
Node, StatefulSet and Services exists when kaito's operator starts. No second NodeClaim is
created (the karpenter provisioner adopts upstream's), the Service and StatefulSet are adopted
and updated (not reported as a conflict), and the Workspace becomes Ready."""

from __future__ import annotations

from kaito_core.reconcile import fake_node
from kaito_core.testing.emulator import start_operator, stop_operator
from tests.operator.conftest import Cluster, cluster_emulator, operator_refusals, wait_for
from tests.operator.test_flow import NS, _run_pod, _workspace

NAME = "phi-3"


def _owner(uid: str) -> list[dict]:
    return [{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "name": NAME, "uid": uid,
             "controller": True, "blockOwnerDeletion": True}]


def _upstream_objects(uid: str) -> list[dict]:
    """What upstream KAITO v0.12 leaves for an inference Workspace (names, labels, owners)."""
    labels = {"kaito.sh/workspace": NAME}
    claim_labels = {"kaito.sh/workspace": NAME, "kaito.sh/workspacenamespace": NS, "karpenter.sh/nodepool": "kaito",
                    "apps": NAME}
    claim = {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
             "metadata": {"name": "ws1a2b3c4d5", "labels": claim_labels,
                          "annotations": {"karpenter.sh/do-not-disrupt": "true"}},
             "spec": {"requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                        "values": ["Standard_NC24ads_A100_v4"]},
                                       {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}],
                      "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                      "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "image-family-ubuntu"},
                      "resources": {"requests": {"storage": "120Gi"}}},
             "status": {"nodeName": "aks-ws1a2b3c4d5-0", "conditions": [
                 {"type": t, "status": "True", "reason": t, "lastTransitionTime": "2026-01-01T00:00:00Z"}
                 for t in ("Launched", "Registered", "Initialized", "Ready")]}}
    node = fake_node("aks-ws1a2b3c4d5-0", 1, labels={**claim_labels,
                                                     "node.kubernetes.io/instance-type": "Standard_NC24ads_A100_v4"})
    container = {"name": NAME, "image": "mcr.microsoft.com/aks/kaito/kaito-phi-3-mini-4k-instruct:0.0.1",
                 "ports": [{"containerPort": 5000}], "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": NAME, "namespace": NS, "labels": labels, "ownerReferences": _owner(uid),
                        "annotations": {"workspace.kaito.io/revision": "1"}},
           "spec": {"replicas": 1, "serviceName": f"{NAME}-headless", "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}},
           "status": {"replicas": 1, "readyReplicas": 1, "currentRevision": "u1", "updateRevision": "u1"}}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": NAME, "namespace": NS, "labels": labels, "ownerReferences": _owner(uid)},
           "spec": {"selector": labels, "type": "ClusterIP",
                    "ports": [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}]}}
    headless = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": f"{NAME}-headless", "namespace": NS, "labels": labels,
                             "ownerReferences": _owner(uid)},
                "spec": {"selector": labels, "clusterIP": "None", "publishNotReadyAddresses": True,
                         "ports": [{"name": "torchrun", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]}}
    return [claim, node, sts, svc, headless]


def _create_with_status(cluster: Cluster, obj: dict) -> None:
    """Create ``obj`` as its controller left it: created without status (the API server drops
    it, except a Node's), then ``/status`` written the way Karpenter and the StatefulSet
    controller write it."""
    created = cluster.kube.create(obj)
    if "status" in obj and created.get("status") != obj["status"]:
        meta = obj["metadata"]
        cluster.kube.patch(api_version=obj["apiVersion"], kind=obj["kind"], name=meta["name"],
                           namespace=meta.get("namespace"), patch={"status": obj["status"]}, subresource="status")


def test_operator_adopts_an_upstream_install(tmp_path):
    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        ws = cluster.create_workspace(_workspace(NAME))  # the same Workspace object upstream served
        uid = ws["metadata"]["uid"]
        for obj in _upstream_objects(uid):
            _create_with_status(cluster, obj)
        log = tmp_path / "operator.log"
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "600"},
                              log_path=str(log))
        try:
            def adopted():
                sts = cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=NAME, namespace=NS)
                return sts if (sts["metadata"].get("labels") or {}).get("kaito.sh/workspace-uid") == uid else None
            sts = wait_for("the StatefulSet adopted", adopted, timeout=30)
            assert sts["metadata"]["annotations"].get("kaito.sh/object-hash")
            svc = cluster.kube.get(api_version="v1", kind="Service", name=NAME, namespace=NS)
            assert svc["metadata"]["labels"]["kaito.sh/workspace-uid"] == uid
            wait_for("an Adopted event", lambda: [e for e in cluster.events(NS) if e.get("reason") == "Adopted"])
            events = cluster.events(NS)
            assert not [e for e in events if e.get("reason") == "NameConflict"], \
                [e["message"] for e in events if e.get("reason") == "NameConflict"]
            # the StatefulSet controller rolls the pod onto kaito's template; the set reports it
            _run_pod(cluster, NAME)
            wait_for("state Ready", lambda: (cluster.workspace(NAME, NS).get("status") or {}).get("state") == "Ready",
                     timeout=20)
            claims = cluster.nodeclaims(NAME)
            assert [c["metadata"]["name"] for c in claims] == ["ws1a2b3c4d5"]  # no second GPU node
            assert cluster.workspace(NAME, NS)["status"]["workerNodes"] == ["aks-ws1a2b3c4d5-0"]
            assert operator_refusals(emu) == []  # adopting upstream's objects: writes a cluster accepts
        except AssertionError:
            print(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            stop_operator(proc)
