"""Finding 10 (issue 16): least privilege, proven. The real operator runs a lifecycle against the
API emulator (inference with a hand edit, tuning, BYO, a failing release, delete) while the
emulator records every call by User-Agent; the chart's ClusterRole (kaito_core.operator.rbac
RULES, which tests/chart checks the chart renders) must grant each call made, and every grant
must be either used here or listed below with the code path that needs it."""

from __future__ import annotations

import copy


from kaito_core.operator.certs import self_signed
from kaito_core.operator.rbac import RULES
from kaito_core.testing.emulator import Emulator, start_operator, stop_operator
from tests.operator.conftest import OPERATOR_AGENTS, Cluster, cluster_emulator, free_port, operator_refusals, wait_for
from tests.operator.test_flow import NS, _ready_claim, _run_pod, _workspace

WS = ("kaito.sh/v1beta1", "Workspace")
# Grants no run here exercises, each with the path that needs it.
UNEXERCISED = {
    ("get", "karpenter.sh", "nodepools"): "karpenter provisioner, KARPENTER_MODE=nodepool",
    ("create", "karpenter.sh", "nodepools"): "karpenter provisioner, KARPENTER_MODE=nodepool",
    ("delete", "karpenter.sh", "nodepools"): "karpenter provisioner, KARPENTER_MODE=nodepool (release)",
    ("patch", "karpenter.sh", "nodeclaims"): "adopting upstream KAITO's NodeClaims (karpenter provisioner)",
    ("get", "karpenter.sh", "nodeclaims"): "karpenter provisioner _create_once: the NodeClaim a create answered "
                                           "409 for (already exists)",
    ("update", "kaito.sh", "workspaces/finalizers"): "no request: the API server's OwnerReferencesPermission"
                                                     "Enforcement check for blockOwnerDeletion (test below)",
    ("get", "", "nodes"): "Reconciler.observe: a node not in the watch cache (BYO nodes carry no kaito label)",
    ("list", "", "namespaces"): "kopf with KAITO_NAMESPACES patterns (chart watchNamespaces) observes namespaces",
    ("watch", "", "namespaces"): "kopf with KAITO_NAMESPACES patterns (chart watchNamespaces) observes namespaces",
    ("patch", "batch", "jobs"): "adopting upstream KAITO's tuning Job (ownership labels only)",
    ("patch", "", "configmaps"): "a hand edit of the inference ConfigMap (reverted: tests/operator/test_drift.py)",
    ("patch", "", "services"): "a hand edit of a Service (reverted: tests/operator/test_drift.py)",
}


def _grants() -> set[tuple[str, str, str]]:
    return {(v, g, r) for rule in RULES for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def _tuning(name: str) -> dict:
    raw = _workspace(name)
    raw.pop("inference")
    raw["tuning"] = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                     "input": {"urls": ["https://example.com/data.parquet"]},
                     "output": {"image": "registry.example.com/adapters/phi:1", "imagePushSecret": "push"}}
    return raw


def _lifecycle(emu: Emulator, cluster: Cluster) -> None:
    cluster.create_workspace(_workspace("inf"))
    claim = wait_for("a NodeClaim", lambda: cluster.nodeclaims("inf"), timeout=30)[0]
    _ready_claim(cluster, claim, "gpu-inf")
    sts = wait_for("the StatefulSet", lambda: cluster.kube.get(api_version="apps/v1", kind="StatefulSet",
                                                               name="inf", namespace=NS))
    _run_pod(cluster, "inf")
    cluster.kube.patch(api_version="apps/v1", kind="StatefulSet", name="inf", namespace=NS,
                       patch={"spec": {"replicas": 0}})  # a hand edit: reverted with a patch
    wait_for("the edit reverted", lambda: cluster.kube.get(api_version="apps/v1", kind="StatefulSet", name="inf",
                                                           namespace=NS)["spec"]["replicas"] == sts["spec"]["replicas"])
    byo = copy.deepcopy(_workspace("byo"))
    byo["metadata"]["annotations"] = {"kaito.sh/provisioner": "byo"}
    cluster.create_workspace(byo)
    tune = _tuning("tune")
    cluster.create_workspace(tune)
    claim = wait_for("the tuning NodeClaim", lambda: cluster.nodeclaims("tune"), timeout=30)[0]
    _ready_claim(cluster, claim, "gpu-tune")
    wait_for("the Job", lambda: cluster.kube.get(api_version="batch/v1", kind="Job", name="tune", namespace=NS))
    emu.fail("nodeclaims")
    cluster.kube.delete(api_version=WS[0], kind=WS[1], name="inf", namespace=NS)
    wait_for("a ReleaseFailed event", lambda: [e for e in cluster.events(NS) if e.get("reason") == "ReleaseFailed"])
    emu.fail()
    for name in ("inf", "byo", "tune"):
        cluster.kube.delete(api_version=WS[0], kind=WS[1], name=name, namespace=NS)
        wait_for(f"{name} to go", lambda: cluster.workspace(name, NS) is None, timeout=60)


def test_cluster_role_is_what_the_operator_uses(tmp_path):
    # as the chart runs it: with the webhook server (certificate files mounted, not managed by kopf)
    cert, key = self_signed(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    env = {"KAITO_PROVISIONER": "karpenter", "KAITO_ALLOWED_PROVISIONERS": "byo", "KAITO_RESYNC_SECONDS": "2",
           "KAITO_RELIST_SECONDS": "1", "KAITO_DELETE_GRACE_SECONDS": "60", "KAITO_WEBHOOK": "true",
           "KAITO_WEBHOOK_PORT": str(free_port()), "KAITO_WEBHOOK_ADDR": "127.0.0.1",
           "KAITO_WEBHOOK_CERT": str(tmp_path / "tls.crt"), "KAITO_WEBHOOK_KEY": str(tmp_path / "tls.key")}
    # enforced as well: a call RULES do not grant is a 403 the refusal check below reports
    with cluster_emulator(rbac={agent: RULES for agent in OPERATOR_AGENTS}) as emu:
        cluster = Cluster(emu.url)
        proc = start_operator(emu.url, env=env, log_path=str(tmp_path / "op.log"))
        try:
            wait_for("the operator", lambda: "kaito operator: provisioner=" in (tmp_path / "op.log").read_text(),
                     timeout=30)
            _lifecycle(emu, cluster)
        finally:
            stop_operator(proc)
        calls = emu.calls
        refused = operator_refusals(emu)
    assert refused == [], "the operator made requests a cluster refuses"
    used = {(verb, group, resource) for (verb, group, resource, agent) in calls
            if agent.startswith(("kopf/", "kaito-operator"))}
    assert used, "no operator calls recorded"
    granted = _grants()
    assert not used - granted, f"the operator makes calls its ClusterRole does not grant: {sorted(used - granted)}"
    idle = granted - used - set(UNEXERCISED)
    assert not idle, f"granted but never used (drop them, or name the code path in UNEXERCISED): {sorted(idle)}"
    stale = set(UNEXERCISED) - granted
    assert not stale, f"UNEXERCISED lists grants the role no longer has: {sorted(stale)}"


def test_children_can_be_created_where_owner_reference_permission_is_enforced():
    """The admission plugin of plugin/pkg/admission/gc (on by default in OpenShift): setting
    ``blockOwnerDeletion`` on a child (kaito_core.reconcile.names owner references) requires
    ``update`` on ``workspaces/finalizers``."""
    from kaito_core.operator.apply import Reconciler
    from kaito_core.operator.kube import KubeClient
    from kaito_core.operator.settings import Settings
    from kaito_core.plugins import get_registry

    with cluster_emulator(rbac={agent: RULES for agent in OPERATOR_AGENTS}, owner_references_permission=True) as emu:
        user = Cluster(emu.url)
        body = user.create_workspace(_workspace("owned"))
        Reconciler(KubeClient(emu.url), get_registry(), Settings(provisioner="karpenter")).reconcile(body)
        refused = operator_refusals(emu)
        children = user.kube.list(api_version="v1", kind="Service", namespace=NS)
    assert refused == [], refused
    assert {s["metadata"]["name"] for s in children} >= {"owned", "owned-headless"}
