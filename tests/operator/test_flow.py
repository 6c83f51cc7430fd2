"""Create -> node requests + children -> nodes/pods ready -> Ready; crash loop -> InferenceReady
False with the reason; delete -> node requests gone, finalizer removed. Real kopf against the
strict API emulator; Karpenter, the StatefulSet controller and the kubelet write ``/status``."""

from __future__ import annotations

import pytest

from kaito_core.reconcile import fake_node
from tests.operator.conftest import Cluster, cluster_emulator, operator_refusals, wait_for

NS = "flow"
CRASH_LOOP = {"conditions": [{"type": "Ready", "status": "False"}],
              "containerStatuses": [{"name": "inference", "image": "img", "ready": False, "restartCount": 5,
                                     "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m"}},
                                     "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}


def _workspace(name: str, instance_type: str = "Standard_NC24ads_A100_v4") -> dict:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name, "namespace": NS},
            "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": {"apps": name}}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


def _ready_claim(cluster: Cluster, claim: dict, node: str) -> None:
    cluster.ready_claim(claim, node)


def _run_pod(cluster: Cluster, name: str, *, ready: bool = True, status: dict | None = None) -> None:
    """The Workspace's StatefulSet gets its pod ``<name>-0`` (Running; Ready or not); ``status``
    then overrides what the kubelet reports for it (a crash loop)."""
    cluster.run_pods(name, NS, ready=ready)
    if status is not None:
        cluster.set_pod_status(f"{name}-0", NS, status)


@pytest.fixture(scope="module")
def emulator():
    """This module's cluster holds the operator to the chart's ClusterRole (cluster_emulator)."""
    with cluster_emulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def operator(operator_factory):
    # byo may be picked by annotation (the BYO test); aks may not (the refusal test)
    return operator_factory(env={"KAITO_ALLOWED_PROVISIONERS": "byo"})


def test_create_ready_crashloop_delete(emulator, cluster, operator):
    name = "phi"
    ws = cluster.create_workspace(_workspace(name))
    uid = ws["metadata"]["uid"]

    # 1. node requests and the children that do not need nodes
    claims = wait_for("a NodeClaim", lambda: cluster.nodeclaims(name))
    assert len(claims) == 1 and claims[0]["spec"]["requirements"]
    for kind, child in (("ConfigMap", f"{name}-inference-config"), ("Service", name), ("Service", f"{name}-headless")):
        wait_for(f"{kind}/{child}", lambda: cluster.kube.get(api_version="v1", kind=kind, name=child, namespace=NS))
    got = wait_for("finalizer and status", lambda: (lambda w: w if (w.get("status") or {}).get("conditions") else None)(
        cluster.workspace(name, NS)))
    assert "workspace.finalizer.kaito.sh" in got["metadata"]["finalizers"]
    conds = {c["type"]: c for c in got["status"]["conditions"]}
    assert conds["NodeClaimReady"]["status"] == "False"
    assert got["status"]["state"] == "Pending" and got["status"]["targetNodeCount"] == 1
    assert cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS) is None

    # 2. Karpenter launches the node -> the StatefulSet appears
    _ready_claim(cluster, claims[0], "gpu-node-0")
    sts = wait_for("the StatefulSet", lambda: cluster.kube.get(api_version="apps/v1", kind="StatefulSet",
                                                               name=name, namespace=NS))
    assert sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert sts["metadata"]["ownerReferences"][0]["uid"] == uid
    wait_for("ResourceReady", lambda: cluster.conditions(name, NS).get("ResourceReady", {}).get("status") == "True")

    # 3. the pod becomes ready -> Workspace Ready with upstream's conditions
    _run_pod(cluster, name)
    pod = cluster.kube.get(api_version="v1", kind="Pod", name=f"{name}-0", namespace=NS)
    assert pod["metadata"]["labels"]["kaito.sh/workspace-uid"] == uid  # the template's labels find it
    wait_for("state Ready", lambda: (cluster.workspace(name, NS).get("status") or {}).get("state") == "Ready")
    conds = cluster.conditions(name, NS)
    for t in ("NodeClaimReady", "NodesReady", "ResourceReady", "InferenceReady", "WorkspaceSucceeded"):
        assert conds[t]["status"] == "True", (t, conds[t])
    assert cluster.workspace(name, NS)["status"]["workerNodes"] == ["gpu-node-0"]

    # 4. crash loop -> InferenceReady False with the reason (upstream #931)
    cluster.set_pod_status(f"{name}-0", NS, CRASH_LOOP)
    inf = wait_for("InferenceReady=False", lambda: (lambda c: c if c.get("status") == "False" else None)(
        cluster.conditions(name, NS).get("InferenceReady", {})))
    assert inf["reason"] == "CrashLoopBackOff" and f"{name}-0" in inf["message"]
    assert cluster.workspace(name, NS)["status"]["state"] == "NotReady"
    events = wait_for("a CrashLoopBackOff event", lambda: [e for e in cluster.events(NS)
                                                           if e.get("reason") == "CrashLoopBackOff"])
    assert events[0]["type"] == "Warning"

    # 5. delete -> node requests gone, children gone, finalizer removed (object gone)
    cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS)
    wait_for("the Workspace to go", lambda: cluster.workspace(name, NS) is None)
    assert cluster.nodeclaims(name) == []
    assert cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS) is None
    assert cluster.kube.get(api_version="v1", kind="Service", name=name, namespace=NS) is None
    assert operator_refusals(emulator) == []  # every request the operator made, a cluster accepts


def test_sizing_failure_is_reported_without_nodes(cluster, operator):
    raw = _workspace("toosmall", "Standard_NC6s_v3")
    raw["inference"]["preset"] = {"name": "llama-3.1-8b-instruct", "presetOptions": {"modelAccessSecret": "hf"}}
    cluster.create_workspace(raw)
    rr = wait_for("ResourceReady=False", lambda: cluster.conditions("toosmall", NS).get("ResourceReady"))
    # the API's GPU-memory rule (weights > 16 GiB) refuses it before sizing: no node is asked for
    assert rr["status"] == "False" and rr["reason"] == "InvalidWorkspace"
    assert "resource.instanceType" in rr["message"] and "GiB" in rr["message"]
    assert cluster.workspace("toosmall", NS)["status"]["state"] == "Failed"
    assert cluster.nodeclaims("toosmall") == []
    cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="toosmall", namespace=NS)
    wait_for("the Workspace to go", lambda: cluster.workspace("toosmall", NS) is None)


def test_spec_change_rolls_statefulset(cluster, operator):
    name = "roll"
    cluster.create_workspace(_workspace(name))
    claims = wait_for("a NodeClaim", lambda: cluster.nodeclaims(name))
    _ready_claim(cluster, claims[0], "gpu-node-roll")
    sts = wait_for("the StatefulSet", lambda: cluster.kube.get(api_version="apps/v1", kind="StatefulSet",
                                                               name=name, namespace=NS))
    before = sts["metadata"]["annotations"]["kaito.sh/revision"]
    generation = cluster.workspace(name, NS)["metadata"]["generation"]
    edited = cluster.kube.patch(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS, patch={
        "inference": {"adapters": [{"source": {"name": "a1", "image": "example.com/a1:1"}, "strength": "1.0"}]}})
    assert edited["metadata"]["generation"] == generation + 1  # the API server moves it on a spec change

    def rolled():
        cur = cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS)
        rev = cur["metadata"]["annotations"]["kaito.sh/revision"]
        return cur if rev != before else None
    cur = wait_for("a new revision", rolled)
    tpl = cur["spec"]["template"]
    assert tpl["metadata"]["annotations"]["kaito.sh/revision"] == cur["metadata"]["annotations"]["kaito.sh/revision"]
    assert any(c["args"][:2] == ["pull", "example.com/a1:1"] for c in tpl["spec"]["initContainers"])
    cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS)
    wait_for("the Workspace to go", lambda: cluster.workspace(name, NS) is None)


def test_byo_node_becoming_ready_wakes_the_workspace(cluster, operator):
    """BYO nodes carry the user's labels, not kaito's: a matching node turning Ready wakes the
    Workspace (the resync is 30 s in these tests, so only the watch can make this pass)."""
    name = "byo1"
    node = fake_node("byo-node-1", 1, labels={"apps": name}, ready=False)
    cluster.kube.create(node)  # the kubelet registers its Node with its status (NotReady)
    raw = _workspace(name)
    raw["metadata"]["annotations"] = {"kaito.sh/provisioner": "byo"}
    cluster.create_workspace(raw)
    # upstream's BYO reports no NodeClaimReady: ResourceReady says the nodes are not ready yet
    rr = wait_for("ResourceReady=False", lambda: cluster.conditions(name, NS).get("ResourceReady"))
    assert rr["status"] == "False", rr
    assert cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS) is None
    cluster.kube.patch(api_version="v1", kind="Node", name="byo-node-1", subresource="status",
                       patch={"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    sts = wait_for("the StatefulSet", lambda: cluster.kube.get(api_version="apps/v1", kind="StatefulSet",
                                                               name=name, namespace=NS), timeout=10)
    assert sts["spec"]["replicas"] == 1
    assert cluster.nodeclaims(name) == []  # byo creates nothing
    cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS)
    wait_for("the Workspace to go", lambda: cluster.workspace(name, NS) is None)


def test_provisioner_annotation_outside_the_admins_list_is_refused(cluster, operator):
    """Finding 5: a Workspace author cannot override the admin's provisioner (no webhook here:
    the operator itself refuses, and asks for no node)."""
    name = "sneaky"
    raw = _workspace(name)
    raw["metadata"]["annotations"] = {"kaito.sh/provisioner": "aks"}
    cluster.create_workspace(raw)
    cond = wait_for("the refusal", lambda: [c for c in cluster.conditions(name, NS).values()
                                            if "not allowed by the cluster admin" in c.get("message", "")])
    assert "kaito.sh/provisioner" in cond[0]["message"] and "'aks'" in cond[0]["message"]
    assert cond[0]["status"] == "False" and cluster.workspace(name, NS)["status"]["state"] == "Failed"
    assert cluster.nodeclaims(name) == []
    cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS)
    wait_for("the Workspace to go", lambda: cluster.workspace(name, NS) is None)


# -- the Workspace's ConfigMaps reach the one planner (issue 12) -------------------------------


def _tuning(name: str, config: str | None) -> dict:
    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name, "namespace": NS},
           "resource": {"instanceType": "Standard_NV36ads_A10_v5", "labelSelector": {"matchLabels": {"apps": name}}},
           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                      "input": {"urls": ["https://example.com/d.jsonl"]}, "output": {"volumeSource": {"emptyDir": {}}}}}
    if config:
        raw["tuning"]["config"] = config
    return raw


def test_tuning_configmap_batch_size_sizes_the_workspace(cluster, operator):
    """A QLoRA Workspace whose tuning ConfigMap asks per_device_train_batch_size 8 does not fit
    one A10 (kaito plan: "cannot place"); the operator sizes it with the ConfigMap too, so it
    never reports ResourceReady True nor asks for a node. The same Workspace without the
    ConfigMap (batch 1) fits: the ConfigMap is what decides."""
    cluster.kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qlora-b8", "namespace": NS},
                         "data": {"training_config.yaml": "training_config:\n  TrainingArguments:\n"
                                                          "    per_device_train_batch_size: 8\n"}})
    cluster.create_workspace(_tuning("tune-b8", "qlora-b8"))
    cluster.create_workspace(_tuning("tune-b1", None))
    rr = wait_for("ResourceReady=False", lambda: cluster.conditions("tune-b8", NS).get("ResourceReady"))
    assert rr["status"] == "False" and rr["reason"] == "SizingFailed", rr
    assert "GiB" in rr["message"]
    assert cluster.workspace("tune-b8", NS)["status"]["state"] == "Failed"
    wait_for("a NodeClaim for the batch-1 Workspace", lambda: cluster.nodeclaims("tune-b1"))
    assert cluster.nodeclaims("tune-b8") == []
    assert cluster.conditions("tune-b8", NS)["ResourceReady"]["status"] == "False"
    for name in ("tune-b8", "tune-b1"):
        cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS)
    for name in ("tune-b8", "tune-b1"):
        wait_for("the Workspace to go", lambda: cluster.workspace(name, NS) is None)


def test_missing_inference_configmap_is_a_condition(emulator, cluster, operator):
    """inference.config names a ConfigMap that does not exist: no exception, the nodes are
    asked for, the StatefulSet waits, and InferenceReady says which ConfigMap to create."""
    name = "nocfg"
    raw = _workspace(name)
    raw["inference"]["config"] = "absent-params"
    cluster.create_workspace(raw)
    ir = wait_for("InferenceReady=False", lambda: cluster.conditions(name, NS).get("InferenceReady"))
    assert ir["status"] == "False" and ir["reason"] == "ConfigMapNotFound", ir
    assert "inference.config" in ir["message"] and "'absent-params'" in ir["message"] and NS in ir["message"]
    claims = wait_for("the NodeClaim", lambda: cluster.nodeclaims(name))
    _ready_claim(cluster, claims[0], "nocfg-node")
    wait_for("ResourceReady=True", lambda: cluster.conditions(name, NS).get("ResourceReady", {}).get("status")
             == "True")
    assert cluster.conditions(name, NS)["InferenceReady"]["reason"] == "ConfigMapNotFound"
    assert cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS) is None
    events = [e for e in cluster.events(NS) if e.get("reason") == "ConfigMapNotFound"]
    assert events and "absent-params" in events[0]["message"]
    cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS)
    wait_for("the Workspace to go", lambda: cluster.workspace(name, NS) is None)
    assert operator_refusals(emulator) == []  # this module's Workspaces so far included
