"""The AKS provisioner's whole lifecycle: the real SDK against the fake ARM over HTTPS."""

import time

import pytest

from kaito_core.types import ProvisionerContext
from kaito_provisioner_aks import AKSProvisioner
from kaito_core.testing import make_node_requests

QUOTA = ("Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family Cores "
         "quota. Additional details - Deployment Model: Resource Manager, Location: eastus, Current Limit: 0, "
         "Current Usage: 0, Additional Required: 24")


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def aks(token):
    return lambda settings: AKSProvisioner(settings, credential=token)


def plan(prov, kaito_workspace, kaito_requirement, name="phi", nodes=2, it="Standard_NC24ads_A100_v4", **ws):
    w = kaito_workspace(name, "team-a", instance_type=it, **ws)
    return w, make_node_requests(workspace=w, requirement=kaito_requirement(it, node_count=nodes, disk_gib=150))


def test_full_lifecycle(arm, arm_settings, aks, token, kaito_kube, kaito_workspace, kaito_requirement):
    arm.polls_to_finish = 2
    prov = aks(arm_settings)
    ctx = ProvisionerContext(kube=kaito_kube, settings=arm_settings)
    ws, reqs = plan(prov, kaito_workspace, kaito_requirement, match_labels={"apps": "phi-3"})
    states = prov.ensure(requests=reqs, ctx=ctx)
    assert [s.reason for s in states] == ["PoolCreating", "PoolCreating"]
    assert arm.count("PUT") == 2
    body = arm.pools[reqs[0].name]["properties"]
    assert body["vmSize"] == "Standard_NC24ads_A100_v4" and body["count"] == 1
    assert (body["osType"], body["osSKU"], body["mode"], body["osDiskSizeGB"]) == ("Linux", "Ubuntu", "User", 150)
    assert body["nodeLabels"] == {"apps": "phi-3", "kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "team-a"}
    assert body["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert body["tags"] == {"kaito-creator": "kaito", "kaito-workspace": "phi", "kaito-workspace-namespace": "team-a"}
    # the SDK follows Azure-AsyncOperation in the background until ARM says Succeeded
    wait_for(lambda: all(s.ready for s in prov.observe(requests=reqs, ctx=ctx)), what="pools ready")
    assert arm.count("GET", "/operations/") >= 2
    assert all(scopes == (f"{arm.url}/.default",) for scopes in token.scopes)
    prov.ensure(requests=reqs, ctx=ctx)
    assert arm.count("PUT") == 2, "ready pools are adopted, never PUT again"
    prov.release(workspace=ws, ctx=ctx)
    assert arm.count("DELETE") == 2
    wait_for(lambda: not arm.pools, what="pools deleted")
    assert not any(s.ready for s in prov.observe(requests=reqs, ctx=ctx))
    prov.release(workspace=ws, ctx=ctx)  # nothing left: no error, no DELETE
    assert arm.count("DELETE") == 2


def test_quota_error_surfaces_and_retry_does_not_duplicate(arm, arm_settings, aks, kaito_kube, kaito_workspace,
                                                          kaito_requirement):
    arm.put_failures["Standard_NC24ads_A100_v4"] = (400, "QuotaExceeded", QUOTA)
    prov = aks(arm_settings)
    ctx = ProvisionerContext(kube=kaito_kube, settings=arm_settings)
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    [state] = prov.ensure(requests=reqs, ctx=ctx)
    assert state.failed and state.reason == "QuotaExceeded" and "Cores quota" in state.message
    [seen] = prov.observe(requests=reqs, ctx=ctx)
    assert (seen.failed, seen.reason) == (True, "QuotaExceeded"), "observe keeps showing the refusal"
    prov.ensure(requests=reqs, ctx=ctx)
    assert arm.count("PUT") == 1, "no retry before AKS_RETRY_BACKOFF_S"
    # the user raises the quota; the next pass (backoff over) creates the pool, once
    del arm.put_failures["Standard_NC24ads_A100_v4"]
    retry_ctx = ProvisionerContext(kube=kaito_kube, settings={**arm_settings, "AKS_RETRY_BACKOFF_S": "0"})
    [state] = prov.ensure(requests=reqs, ctx=retry_ctx)
    assert not state.failed and state.reason == "PoolCreating"
    wait_for(lambda: prov.observe(requests=reqs, ctx=retry_ctx)[0].ready, what="pool ready")
    prov.ensure(requests=reqs, ctx=retry_ctx)
    assert arm.count("PUT") == 2 and list(arm.pools) == [reqs[0].name]


@pytest.mark.parametrize("code, message, reason", [
    ("ErrCode_InsufficientVCPUQuota", "Insufficient regional vcpu quota left for location eastus", "QuotaExceeded"),
    ("BadRequest", "The VM size of Standard_NC24ads_A100_v4 is not allowed in your subscription in location "
                   "'eastus'", "SKUNotAvailable"),
    ("SKUNotAvailable", "The requested VM size is currently not available in location 'eastus'", "SKUNotAvailable"),
    ("InvalidParameter", "osDiskSizeGB must be at most 2048", "LaunchFailed"),
])
def test_synchronous_refusals_become_reasons(code, message, reason, arm, arm_settings, aks, kaito_kube,
                                             kaito_workspace, kaito_requirement):
    arm.put_failures["Standard_NC24ads_A100_v4"] = (400, code, message)
    prov = aks(arm_settings)
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    [state] = prov.ensure(requests=reqs, ctx=ProvisionerContext(kube=kaito_kube, settings=arm_settings))
    assert (state.failed, state.reason) == (True, reason)
    assert message in state.message


def test_operation_failure_is_reported_and_retried_in_place(arm, arm_settings, aks, kaito_kube, kaito_workspace,
                                                            kaito_requirement):
    arm.hold_creates = True
    prov = aks(arm_settings)
    ctx = ProvisionerContext(kube=kaito_kube, settings=arm_settings)
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    prov.ensure(requests=reqs, ctx=ctx)
    arm.fail(reqs[0].name, "ZonalAllocationFailed", "Allocation failed. We do not have sufficient capacity for "
                                                     "the requested VM size in this zone.")
    [state] = prov.observe(requests=reqs, ctx=ctx)
    assert (state.failed, state.reason) == (True, "InsufficientCapacity")
    arm.hold_creates = False
    retry_ctx = ProvisionerContext(kube=kaito_kube, settings={**arm_settings, "AKS_RETRY_BACKOFF_S": "0"})
    prov.ensure(requests=reqs, ctx=retry_ctx)
    assert arm.count("PUT") == 2 and list(arm.pools) == [reqs[0].name], "the same pool is re-PUT, not a new one"
    wait_for(lambda: prov.observe(requests=reqs, ctx=retry_ctx)[0].ready, what="pool ready after retry")


def test_restarted_operator_adopts_existing_pools(arm, arm_settings, aks, kaito_kube, kaito_workspace,
                                                  kaito_requirement):
    first = aks(arm_settings)
    ctx = ProvisionerContext(kube=kaito_kube, settings=arm_settings)
    _, reqs = plan(first, kaito_workspace, kaito_requirement, nodes=3)
    first.ensure(requests=reqs, ctx=ctx)
    puts = arm.count("PUT")
    second = aks(arm_settings)  # a new process knows nothing of the first one's operations
    second.ensure(requests=reqs, ctx=ctx)
    assert arm.count("PUT") == puts == 3 and len(arm.pools) == 3


def test_conflicting_operation_is_transient(arm, arm_settings, aks, kaito_kube, kaito_workspace, kaito_requirement):
    prov = aks({**arm_settings, "AKS_RETRY_BACKOFF_S": "0"})
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    arm.add_pool(reqs[0].name, vm_size="Standard_NC24ads_A100_v4", state="Failed")
    with arm.lock:
        arm._operation(reqs[0].name, "create")  # someone else's operation still runs on the pool
    arm.hold_creates = True
    [state] = prov.ensure(requests=reqs, ctx=ProvisionerContext(kube=kaito_kube))
    assert (state.failed, state.reason) == (False, "OperationInProgress")
    assert ("PUT", f"/subscriptions/{arm.subscription}/resourceGroups/{arm.resource_group}/providers/"
                   f"Microsoft.ContainerService/managedClusters/{arm.cluster}/agentPools/{reqs[0].name}", 409) \
        in arm.requests


def test_throttling_is_retried_by_the_sdk(arm, arm_settings, aks, kaito_kube, kaito_workspace, kaito_requirement):
    arm.throttle = 2
    prov = aks(arm_settings)
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    [state] = prov.ensure(requests=reqs, ctx=ProvisionerContext(kube=kaito_kube))
    assert not state.failed and sum(1 for *_, status in arm.requests if status == 429) == 2
    assert list(arm.pools) == [reqs[0].name]


def test_persistent_throttling_is_transient(arm, arm_settings, aks, kaito_kube, kaito_workspace, kaito_requirement):
    arm.throttle = 100
    prov = aks({**arm_settings, "ARM_RETRY_TOTAL": "1"})
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    [state] = prov.ensure(requests=reqs, ctx=ProvisionerContext(kube=kaito_kube))
    assert (state.failed, state.reason) == (False, "Throttled")


def test_bad_token_is_an_authorization_failure(arm, arm_settings, kaito_kube, kaito_workspace, kaito_requirement):
    from aks_fake_arm import StaticToken

    prov = AKSProvisioner(arm_settings, credential=StaticToken("expired"))
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    [state] = prov.ensure(requests=reqs, ctx=ProvisionerContext(kube=kaito_kube))
    assert (state.failed, state.reason) == (True, "AuthorizationFailed")
    assert "InvalidAuthenticationToken" in state.message
    assert not arm.pools


def test_wrong_cluster_is_named(arm, arm_settings, aks, kaito_kube, kaito_workspace, kaito_requirement):
    prov = aks({**arm_settings, "AZURE_CLUSTER_NAME": "no-such-cluster"})
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    [state] = prov.ensure(requests=reqs, ctx=ProvisionerContext(kube=kaito_kube))
    assert (state.failed, state.reason) == (True, "ClusterNotFound")
    assert "AZURE_CLUSTER_NAME" in state.message


def test_node_readiness_comes_from_the_cluster_when_visible(arm, arm_settings, aks, kaito_kube, kaito_workspace,
                                                           kaito_requirement):
    prov = aks(arm_settings)
    ctx = ProvisionerContext(kube=kaito_kube, settings=arm_settings)
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    name = reqs[0].name
    arm.add_pool(name, vm_size="Standard_NC24ads_A100_v4", state="Succeeded", mode="User")
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"aks-{name}-12345678-vmss000000", "labels": {"kubernetes.azure.com/agentpool": name}},
            "status": {"conditions": [{"type": "Ready", "status": "False", "message": "NVIDIA driver installing"}]}}
    kaito_kube.put(node)
    [state] = prov.observe(requests=reqs, ctx=ctx)
    assert (state.ready, state.reason, state.message) == (False, "NodeNotReady", "NVIDIA driver installing")
    node["status"]["conditions"][0]["status"] = "True"
    kaito_kube.put(node)
    [state] = prov.observe(requests=reqs, ctx=ctx)
    assert state.ready and state.node_name == f"aks-{name}-12345678-vmss000000"


def _workspace_object(ws):
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": ws.metadata.name, "namespace": ws.metadata.namespace, "uid": ws.metadata.uid}}


def test_gc_deletes_only_orphaned_kaito_pools(arm, arm_settings, aks, kaito_kube, kaito_workspace, kaito_requirement):
    arm.page_size = 2  # the SDK must follow nextLink to see every pool
    prov = aks(arm_settings)
    ctx = ProvisionerContext(kube=kaito_kube, settings=arm_settings)
    live, live_reqs = plan(prov, kaito_workspace, kaito_requirement, name="live", nodes=2)
    gone, gone_reqs = plan(prov, kaito_workspace, kaito_requirement, name="gone", nodes=1)
    old, old_reqs = plan(prov, kaito_workspace, kaito_requirement, name="again", nodes=1, uid="old-uid")
    prov.ensure(requests=live_reqs + gone_reqs + old_reqs, ctx=ctx)
    arm.add_pool("nodepool1")  # the cluster's own system pool: never ours to touch
    arm.add_pool("userpool", tags={"kaito-workspace": "gone"})  # tagged by someone else
    kaito_kube.put(_workspace_object(live))
    kaito_kube.put(_workspace_object(kaito_workspace("again", "team-a", uid="new-uid")))  # re-created
    deleted = prov.collect_garbage(ctx=ctx)
    assert sorted(deleted) == sorted([gone_reqs[0].name, old_reqs[0].name])
    wait_for(lambda: arm.live_pools() == sorted([*(r.name for r in live_reqs), "nodepool1", "userpool"]),
             what="orphans deleted")


def test_gc_keeps_pools_when_workspaces_cannot_be_read(arm, arm_settings, aks, kaito_workspace, kaito_requirement):
    class Down:
        def get(self, **_):
            raise ConnectionError("API server unavailable")

    prov = aks(arm_settings)
    _, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    prov.ensure(requests=reqs, ctx=ProvisionerContext(settings=arm_settings))
    assert prov.collect_garbage(ctx=ProvisionerContext(kube=Down(), settings=arm_settings)) == []
    assert arm.count("DELETE") == 0


def test_gc_runs_periodically(arm, arm_settings, aks, kaito_kube, kaito_workspace, kaito_requirement):
    prov = aks({**arm_settings, "AKS_GC_INTERVAL_S": "0.05"})
    ctx = ProvisionerContext(kube=kaito_kube, settings={**arm_settings, "AKS_GC_INTERVAL_S": "0.05"})
    ws, reqs = plan(prov, kaito_workspace, kaito_requirement, nodes=1)
    kaito_kube.put(_workspace_object(ws))
    try:
        prov.ensure(requests=reqs, ctx=ctx)
        wait_for(lambda: arm.live_pools() == [reqs[0].name], what="pool created")
        kaito_kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=ws.metadata.name,
                          namespace=ws.metadata.namespace)  # deleted while the operator was down
        wait_for(lambda: arm.live_pools() == [], what="GC to delete the orphaned pool")
    finally:
        prov.stop_gc()
