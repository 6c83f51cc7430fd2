"""Status tells the truth: reasons from pods and provisioners reach the conditions."""

from __future__ import annotations

import pytest

from kaito_core.builtins.byo import PROVISIONER as BYO
from kaito_core.reconcile import Observed, fake_node, plan
from kaito_core.reconcile.inputs import resolve
from kaito_core.types import NodeState
from tests.reconcile.test_plan import PHI, _ws


def _sts(ready: int, replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "phi"},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "readyReplicas": ready, "currentRevision": "r1", "updateRevision": "r1"}}


def _pod(container_state: dict | None = None, ready: bool = False, conditions: list | None = None,
         last: dict | None = None, init: bool = False) -> dict:
    cs = {"name": "inference", "image": "img", "restartCount": 4, "state": container_state or {"running": {}}}
    if last:
        cs["lastState"] = last
    conds = conditions or [{"type": "Ready", "status": "True" if ready else "False"}]
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": "phi-0"}, "status": {"phase": "Running", key: [cs], "conditions": conds}}


def _conds(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


@pytest.fixture(params=["karpenter"])
def setup(registry, request):
    return _setup(registry, registry.provisioners[request.param])


def _setup(registry, prov):
    ws = _ws(PHI)
    inputs = resolve(ws, registry)
    first = plan(ws, inputs.preset, inputs.requirement, prov)
    req = first.node_requests[0]
    states = (NodeState(name=req.name, ready=True, node_name="gpu-0"),)
    nodes = (fake_node("gpu-0", 1),)

    def run(**kw):
        prev = kw.pop("prev", None)
        base = {"node_states": states, "nodes": nodes, "now": "2026-01-01T00:00:00Z"}
        base.update(kw)
        return plan(ws, inputs.preset, inputs.requirement, prov, Observed(**base), previous_status=prev)
    return run


CASES = [
    # (pod, workload ready replicas, InferenceReady reason, state)
    (_pod(ready=True), 1, "InferenceReady", "Ready"),
    (_pod({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
          last={"terminated": {"reason": "Error", "exitCode": 3, "message": "CUDA out of memory"}}), 0,
     "CrashLoopBackOff", "NotReady"),
    (_pod({"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}), 0, "ImagePullError",
     "NotReady"),
    (_pod({"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "hf" not found'}}), 0,
     "ContainerConfigError", "NotReady"),
    (_pod({"waiting": {"reason": "ContainerCreating"}},
          conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                       "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]), 0,
     "PodUnschedulable", "NotReady"),
    (_pod({"waiting": {"reason": "ErrImagePull"}}, init=True), 0, "ImagePullError", "NotReady"),
    (_pod({"running": {}}), 0, "InferenceNotReady", "NotReady"),
]


@pytest.mark.parametrize("pod,ready,reason,state", CASES, ids=[c[2] for c in CASES])
def test_pod_reasons_reach_inference_ready(setup, pod, ready, reason, state):
    p = setup(workload=_sts(ready), pods=(pod,))
    inf = _conds(p.status)["InferenceReady"]
    assert inf["reason"] == reason
    assert (inf["status"] == "True") == (reason == "InferenceReady")
    assert p.status["state"] == state
    assert p.status["workerNodes"] == ["gpu-0"]


def test_crash_loop_message_names_pod_and_exit(setup):
    pod = CASES[1][0]
    msg = _conds(setup(workload=_sts(1), pods=(pod,)).status)["InferenceReady"]["message"]
    # even with readyReplicas reported 1, a crash-looping pod is not "ready" (upstream #931)
    assert "phi-0" in msg and "exit Error code 3" in msg and "CUDA out of memory" in msg


def test_provisioner_quota_error_is_visible(setup):
    p = setup(node_states=(NodeState(name="x", ready=False, failed=True, reason="QuotaExceeded",
                                     message="Operation could not be completed as it results in exceeding quota"),),
              nodes=())
    c = _conds(p.status)
    assert c["NodeClaimReady"]["reason"] == "QuotaExceeded" and "quota" in c["NodeClaimReady"]["message"]
    assert c["ResourceReady"]["status"] == "False" and c["ResourceReady"]["reason"] == "QuotaExceeded"
    assert p.status["state"] == "Failed"
    assert any(e.reason == "QuotaExceeded" and e.type == "Warning" for e in p.events)
    assert p.deferred and p.workload["kind"] == "StatefulSet" and p.workload not in p.objects


def test_serving_pods_on_a_lost_node_are_not_ready(setup):
    """The NodeClaim and Node went away while the pod still reports ready: ResourceReady is False,
    and so are WorkspaceSucceeded and the state (upstream needs both ResourceReady and InferenceReady)."""
    p = setup(workload=_sts(1), pods=(_pod(ready=True),), node_states=(), nodes=())
    c = _conds(p.status)
    assert c["InferenceReady"]["status"] == "True"
    assert c["ResourceReady"]["status"] == "False"
    assert c["WorkspaceSucceeded"]["status"] == "False"
    assert c["WorkspaceSucceeded"]["reason"] == c["ResourceReady"]["reason"]
    assert p.status["state"] != "Ready"


def test_provisioner_exception_is_a_condition(setup):
    p = setup(node_states=(), nodes=(), provisioner_error="karpenter: nodeclaims.karpenter.sh not found")
    c = _conds(p.status)
    assert c["NodeClaimReady"]["reason"] == "ProvisioningError" and "nodeclaims" in c["NodeClaimReady"]["message"]


def test_without_nodeclaims_the_failure_stays_in_resource_ready():
    """Upstream's BYO mode makes no NodeClaims: build(node_claims=False) reports no NodeClaimReady
    and keeps the failure's reason in ResourceReady."""
    from kaito_core.reconcile import status as st

    observed = Observed(node_states=(NodeState(name="x", ready=False, reason="NoMatchingNodes",
                                               message="0 of 1 ready node(s) match resource.labelSelector"),))
    status, ok = st.build(mode="inference", observed=observed, target=1, gpus_per_node=1, node_claims=False)
    c = _conds(status)
    assert not ok and "NodeClaimReady" not in c
    assert c["ResourceReady"]["status"] == "False" and c["ResourceReady"]["reason"] == "NoMatchingNodes"


@pytest.mark.parametrize("prov,has_claims", [("byo", False), ("karpenter", True)])
def test_nodeclaim_ready_only_where_the_provisioner_makes_nodes(registry, prov, has_claims):
    p = _setup(registry, registry.provisioners[prov])(node_states=(), nodes=())
    c = _conds(p.status)
    assert ("NodeClaimReady" in c) is has_claims
    assert c["ResourceReady"]["status"] == "False"


def test_upstream_reason_strings(setup):
    c = _conds(setup(workload=_sts(1), pods=(_pod(ready=True),)).status)
    assert c["ResourceReady"]["reason"] == "workspaceResourceStatusSuccess"
    assert c["WorkspaceSucceeded"]["reason"] == "workspaceSucceeded"
    oom = _pod({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
               last={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
    assert _conds(setup(workload=_sts(0), pods=(oom,)).status)["InferenceReady"]["reason"] == "ContainerOOMKilled"


def test_node_without_gpu_capacity_is_not_ready(setup):
    p = setup(nodes=(fake_node("gpu-0", 0),))
    c = _conds(p.status)
    assert c["NodesReady"]["status"] == "False" and c["NodesReady"]["reason"] == "InsufficientGPUs"
    assert "device plugin" in c["NodesReady"]["message"]


def test_transition_time_kept_while_status_unchanged(setup):
    first = setup(workload=_sts(1), pods=(_pod(ready=True),))
    later = setup(workload=_sts(1), pods=(_pod(ready=True),), now="2026-01-02T00:00:00Z", prev=first.status)
    assert _conds(later.status)["InferenceReady"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert later.events == []
    broken = setup(workload=_sts(0), pods=(CASES[1][0],), now="2026-01-03T00:00:00Z", prev=later.status)
    assert _conds(broken.status)["InferenceReady"]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert [e.reason for e in broken.events] == ["CrashLoopBackOff"]



def test_normal_events_are_the_outcome_and_recoveries_not_every_condition(setup):
    """Conditions turning True on the way to Ready post one Normal Event, the Workspace's outcome
    (upstream posts none per condition); a condition recovering from a reported problem posts one."""
    pending = setup(workload=_sts(0), pods=(_pod(ready=False),))
    ready = setup(workload=_sts(1), pods=(_pod(ready=True),), now="2026-01-02T00:00:00Z", prev=pending.status)
    assert [(e.type, e.reason) for e in ready.events if e.type == "Normal"] == [("Normal", "workspaceSucceeded")]
    broken = setup(workload=_sts(0), pods=(CASES[1][0],), now="2026-01-03T00:00:00Z", prev=ready.status)
    healed = setup(workload=_sts(1), pods=(_pod(ready=True),), now="2026-01-04T00:00:00Z", prev=broken.status)
    normal = [e for e in healed.events if e.type == "Normal"]
    assert {e.message.split(":")[0] for e in normal} >= {"InferenceReady"}, [e.message for e in normal]
    assert all(e.type == "Normal" for e in healed.events)


def test_tuning_job_states(registry):
    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "t"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                      "input": {"urls": ["https://example.com/d.json"]},
                      "output": {"volumeSource": {"emptyDir": {}}}}}
    ws = _ws(raw)
    inputs = resolve(ws, registry)
    first = plan(ws, inputs.preset, inputs.requirement, BYO)
    base = Observed.nodes_ready(first.node_requests, 1)

    def state(job_status, pods=()):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t"}, "status": job_status}
        obs = Observed(node_states=base.node_states, nodes=base.nodes, workload=job, pods=pods)
        p = plan(ws, inputs.preset, inputs.requirement, BYO, obs)
        return p.status["state"], _conds(p.status)

    assert state({})[0] == "Pending"
    s, c = state({"active": 1, "startTime": "x"})
    assert s == "Running" and c["JobStarted"]["status"] == "True"
    s, c = state({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    assert s == "Succeeded" and c["WorkspaceSucceeded"]["status"] == "True"
    s, c = state({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]})
    assert s == "Failed" and c["WorkspaceSucceeded"]["reason"] == "JobFailed"


def test_refused_children_land_on_their_conditions_once():
    from kaito_core.reconcile.status import refused

    base = {"state": "Ready", "conditions": [
        {"type": t, "status": "True", "reason": "ok", "message": "", "lastTransitionTime": "t0"}
        for t in ("ResourceReady", "InferenceReady", "WorkspaceSucceeded")]}
    svc = {"Service/ws": (403, 'services "ws" is forbidden: exceeded quota')}
    first, events = refused(base, svc, mode="inference", previous=base, now="t1")
    by = {c["type"]: c for c in first["conditions"]}
    assert by["InferenceReady"]["status"] == "True"  # the pods serve; only the Service is missing
    assert by["WorkspaceSucceeded"]["reason"] == "ApplyFailed" and by["WorkspaceSucceeded"]["lastTransitionTime"] == "t1"
    assert "Service/ws: HTTP 403: services \"ws\" is forbidden: exceeded quota" in by["WorkspaceSucceeded"]["message"]
    assert first["state"] == "NotReady" and [e.reason for e in events] == ["ApplyFailed"]
    again, events = refused(base, svc, mode="inference", previous=first, now="t2")
    assert events == []  # the same refusal on the next retry: no second Event
    assert {c["type"]: c for c in again["conditions"]}["WorkspaceSucceeded"]["lastTransitionTime"] == "t1"
    job = {"Job/ws": (422, "spec.template: Invalid value")}
    tuned, events = refused(base, job, mode="tuning", previous=first, now="t3")
    assert tuned["state"] == "Failed" and len(events) == 1  # a new message: a new Event
    assert base["conditions"][2]["reason"] == "ok"  # the input is not changed
