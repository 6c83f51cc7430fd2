"""System test: the real operator (kopf) against the strict API emulator with the karpenter
provisioner.

A Workspace gets NodeClaims (valid against Karpenter's CRDs); the test plays Karpenter and the
kubelet as they act on a cluster (NodeClaim ``/status`` Ready or LaunchFailed, Nodes registered
with their GPUs), the Workspace becomes ResourceReady; a launch failure shows up as a condition
reason; deleting the Workspace removes its NodeClaims.
"""

import time

import pytest

from kaito_core.operator.kube import KubeClient
from kaito_core.testing.emulator import start_operator, stop_operator
from kaito_provisioner_karpenter import schema
from kaito_provisioner_karpenter.testing import launch_failed_status, ready_status
from tests.operator.conftest import cluster_emulator

V1 = "karpenter.sh/v1"
NS = "default"


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def workspace(name, labels):
    return {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": NS},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": labels}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    }


def condition(kube, name, type_):
    ws = kube.get(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS) or {}
    return next((c for c in (ws.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def claims(kube, name):
    return kube.list(api_version=V1, kind="NodeClaim", labels={"kaito.sh/workspace": name})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # Karpenter's real CRDs: the operator's NodeClaims and the statuses written here pass them
    with cluster_emulator(namespaces=()) as emu:
        kube = KubeClient(emu.url)
        kube.headers["User-Agent"] = "kaito-tests"  # the user and Karpenter, not the operator (held to its role)
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "CLOUD_PROVIDER": "azure",
                                            "KAITO_DELETE_GRACE_SECONDS": "20"}, log_path=str(log))
        try:
            yield kube, log
        finally:
            stop_operator(proc)
            kube.close()


def set_claim_status(kube, name, status):
    """What Karpenter writes: the NodeClaim's ``/status`` (a write to the claim itself keeps it)."""
    kube.patch(api_version=V1, kind="NodeClaim", name=name, patch={"status": status}, subresource="status")


def test_workspace_gets_nodeclaims_becomes_ready_and_releases_them(cluster):
    kube, log = cluster
    kube.create(workspace("phi", {"apps": "phi-3"}))
    found = wait_for(lambda: claims(kube, "phi"), "the operator to create NodeClaims")
    assert len(found) == 1
    claim = found[0]
    assert claim["metadata"]["labels"]["apps"] == "phi-3"
    assert claim["spec"]["nodeClassRef"]["kind"] == "AKSNodeClass"
    assert schema.problems({k: v for k, v in claim.items() if k != "status"}) == [], "must pass Karpenter's CRD"
    waiting = wait_for(lambda: condition(kube, "phi", "ResourceReady"), "a ResourceReady condition")
    assert waiting["status"] == "False"

    # play Karpenter and the kubelet: the claim launches, its node joins with a GPU
    node = f"aks-{claim['metadata']['name']}-vmss000000"
    set_claim_status(kube, claim["metadata"]["name"], ready_status(node))
    # the kubelet registers its Node with its status (nodeStrategy keeps status on create)
    kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": {"apps": "phi-3"}},
                 "status": {"capacity": {"nvidia.com/gpu": "1"}, "allocatable": {"nvidia.com/gpu": "1"},
                            "conditions": [{"type": "Ready", "status": "True"}]}})
    ready = wait_for(lambda: (c := condition(kube, "phi", "ResourceReady")) and c["status"] == "True" and c,
                     "ResourceReady=True")
    assert ready["reason"]

    kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="phi", namespace=NS)
    wait_for(lambda: not claims(kube, "phi"), "the NodeClaims to be deleted")
    wait_for(lambda: kube.get(api_version="kaito.sh/v1beta1", kind="Workspace", name="phi", namespace=NS) is None,
             "the finalizer to go")


def test_launch_failure_reaches_the_workspace_status(cluster):
    kube, log = cluster
    kube.create(workspace("quota", {"apps": "quota"}))
    [claim] = wait_for(lambda: claims(kube, "quota"), "NodeClaims")
    set_claim_status(kube, claim["metadata"]["name"], launch_failed_status(
        "LaunchFailed", "creating instance: exceeding approved standardNCADSA100v4Family Cores quota"))
    cond = wait_for(lambda: (c := condition(kube, "quota", "NodeClaimReady")) and c["reason"] == "QuotaExceeded" and c,
                    "NodeClaimReady reason QuotaExceeded")
    assert cond["status"] == "False" and "quota" in cond["message"]
    kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="quota", namespace=NS)
    wait_for(lambda: not claims(kube, "quota"), "the NodeClaims to be deleted")
