"""The operator's reconcile pass with the aks provisioner, against the strict API emulator and
the fake ARM:
a quota refusal surfaces in the Workspace's conditions, a retry creates the pool once, the
Workspace becomes ResourceReady when the node is up, and deleting it deletes the pool."""

import time

import pytest

from kaito_core.operator.apply import Reconciler
from kaito_core.operator.kube import KubeClient
from kaito_core.operator.settings import Settings
from kaito_core.plugins import get_plugin_manager
from kaito_core.testing.emulator import Emulator

QUOTA = ("Operation could not be completed as it results in exceeding approved standardNCADSA100v4Family Cores "
         "quota. Current Limit: 0, Additional Required: 24")


@pytest.fixture
def kube():
    with Emulator(karpenter=False) as emu:
        client = KubeClient(emu.url)
        yield client
        client.close()


def conditions(status):
    return {c["type"]: c for c in status.get("conditions") or []}


def wait_for(fn, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_quota_error_in_workspace_status_then_retry_then_ready_then_delete(kube, arm, arm_settings, token):
    registry = get_plugin_manager(cached=False).registry
    registry.provisioners["aks"] = registry.provisioners["aks"].configured(credential=token)
    settings = Settings(provisioner="aks", provisioner_settings={**arm_settings, "AKS_RETRY_BACKOFF_S": "0.2"})
    rec = Reconciler(kube, registry, settings)
    body = kube.create({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "phi", "namespace": "default"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "phi"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}})

    arm.put_failures["Standard_NC24ads_A100_v4"] = (400, "QuotaExceeded", QUOTA)
    cond = conditions(rec.reconcile(body).status)
    assert cond["NodeClaimReady"]["status"] == "False"
    assert cond["NodeClaimReady"]["reason"] == "QuotaExceeded" and "Cores quota" in cond["NodeClaimReady"]["message"]
    assert cond["ResourceReady"]["reason"] == "QuotaExceeded"
    assert not arm.pools

    del arm.put_failures["Standard_NC24ads_A100_v4"]  # the user raised the quota
    time.sleep(0.25)  # AKS_RETRY_BACKOFF_S
    rec.reconcile(body)
    [pool] = wait_for(lambda: [n for n, p in arm.pools.items() if p["properties"]["provisioningState"] == "Succeeded"],
                      "the pool to be created")
    for _ in range(3):
        rec.reconcile(body)
    assert arm.count("PUT") == 2 and list(arm.pools) == [pool], "retries adopt the pool, never a second one"

    # the pool's node joins the cluster with a GPU
    kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": f"aks-{pool}-vmss000000", "labels": {"kubernetes.azure.com/agentpool": pool, "apps": "phi"}},
        "status": {"capacity": {"nvidia.com/gpu": "1"}, "conditions": [{"type": "Ready", "status": "True"}]}})
    cond = conditions(rec.reconcile(body).status)
    assert cond["ResourceReady"]["status"] == "True", cond

    rec.release(body)
    wait_for(lambda: not arm.pools, "the pool to be deleted")
