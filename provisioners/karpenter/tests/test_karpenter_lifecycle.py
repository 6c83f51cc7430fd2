"""ensure / observe / release through the KubeAPI protocol, in both modes; registration."""

import pytest

from kaito_core.plugins import get_plugin_manager
from kaito_core.types import ProvisionerContext
from kaito_provisioner_karpenter import KarpenterProvisioner, schema
from kaito_provisioner_karpenter.testing import launch_failed_status, ready_status
from kaito_core.testing import make_node_requests

V1 = "karpenter.sh/v1"


def test_ensure_creates_valid_claims_and_adopts_existing(kaito_kube, kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner({})
    ctx = ProvisionerContext(kube=kaito_kube, settings={"CLOUD_PROVIDER": "aws"})
    reqs = make_node_requests(workspace=kaito_workspace(instance_type="g5.xlarge"),
                              requirement=kaito_requirement("g5.xlarge", node_count=2))
    prov.ensure(requests=reqs, ctx=ctx)
    stored = kaito_kube.list(api_version=V1, kind="NodeClaim")
    assert [c["metadata"]["name"] for c in stored] == sorted(r.name for r in reqs)
    for c in stored:
        assert c["spec"]["nodeClassRef"]["kind"] == "EC2NodeClass"  # the context's settings apply
        c.pop("status", None)
        assert schema.problems({k: v for k, v in c.items()}) == []
    creates = kaito_kube.count("create")
    KarpenterProvisioner({}).ensure(requests=reqs, ctx=ctx)  # a restarted operator
    assert kaito_kube.count("create") == creates


def test_lost_create_race_is_adopted(kaito_kube, kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner({})
    reqs = make_node_requests(workspace=kaito_workspace(), requirement=kaito_requirement())
    real_get = kaito_kube.get
    calls = {"n": 0}

    def get_then_race(**kw):
        calls["n"] += 1
        if calls["n"] == 1:  # another reconcile creates it between our get and our create
            kaito_kube.put(prov.desired_objects(requests=reqs)[0])
            return None
        return real_get(**kw)

    kaito_kube.get = get_then_race
    states = prov.ensure(requests=reqs, ctx=ProvisionerContext(kube=kaito_kube))
    assert len(kaito_kube.list(api_version=V1, kind="NodeClaim")) == 1 and not states[0].failed


def test_quota_failure_reaches_the_state(kaito_kube, kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner({})
    ctx = ProvisionerContext(kube=kaito_kube)
    reqs = make_node_requests(workspace=kaito_workspace(), requirement=kaito_requirement(node_count=2))
    prov.ensure(requests=reqs, ctx=ctx)
    kaito_kube.set_status(api_version=V1, kind="NodeClaim", name=reqs[1].name,
                          status=launch_failed_status("LaunchFailed", "exceeding approved Cores quota"))
    kaito_kube.set_status(api_version=V1, kind="NodeClaim", name=reqs[0].name, status=ready_status("n0"))
    s0, s1 = prov.observe(requests=reqs, ctx=ctx)
    assert s0.ready and s0.node_name == "n0"
    assert s1.failed and s1.reason == "QuotaExceeded" and "quota" in s1.message


def test_nodepool_mode_lifecycle(kaito_kube, kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner({"KARPENTER_MODE": "nodepool"})
    ctx = ProvisionerContext(kube=kaito_kube)
    ws = kaito_workspace("big", "team-b")
    reqs = make_node_requests(workspace=ws, requirement=kaito_requirement(node_count=2))
    states = prov.ensure(requests=reqs, ctx=ctx)
    prov.ensure(requests=reqs, ctx=ctx)
    pools = kaito_kube.list(api_version=V1, kind="NodePool")
    assert [p["metadata"]["name"] for p in pools] == ["kaito-team-b-big"]
    assert not any(s.ready for s in states) and kaito_kube.list(api_version=V1, kind="NodeClaim") == []
    # Karpenter launches claims from the pool's template, named by itself
    template = pools[0]["spec"]["template"]
    for i, name in enumerate(["big-x7k2p", "big-a9m3q"]):
        kaito_kube.put({"apiVersion": V1, "kind": "NodeClaim",
                        "metadata": {"name": name, "creationTimestamp": f"2026-01-01T00:00:0{i}Z",
                                     "labels": {**template["metadata"]["labels"],
                                                "karpenter.sh/nodepool": "kaito-team-b-big"}},
                        "spec": template["spec"]})
    kaito_kube.set_status(api_version=V1, kind="NodeClaim", name="big-x7k2p", status=ready_status("node-a"))
    states = prov.observe(requests=reqs, ctx=ctx)
    assert [s.ready for s in states] == [True, False] and states[0].node_name == "node-a"
    assert [s.name for s in states] == [r.name for r in reqs]
    prov.release(workspace=ws, ctx=ctx)
    assert kaito_kube.list(api_version=V1, kind="NodePool") == []
    assert kaito_kube.list(api_version=V1, kind="NodeClaim") == []


class NotFound(Exception):
    status = 404


class Forbidden(Exception):
    status = 403


class NoKarpenterCRDs:
    """An API server without the Karpenter CRDs: every NodeClaim call is a 404."""

    def __init__(self, exc):
        self.exc = exc

    def list(self, **_):
        raise self.exc

    def get(self, **_):
        raise self.exc

    def delete(self, **_):
        raise self.exc

    def create(self, obj):
        raise self.exc


def test_release_does_not_hang_without_karpenter_crds(kaito_workspace):
    # upstream kaito-project/kaito#1899: Workspaces stuck Terminating when the CRDs are missing
    KarpenterProvisioner({}).release(workspace=kaito_workspace(), ctx=ProvisionerContext(kube=NoKarpenterCRDs(NotFound())))
    with pytest.raises(Forbidden):  # other errors are not swallowed
        KarpenterProvisioner({}).release(workspace=kaito_workspace(),
                                         ctx=ProvisionerContext(kube=NoKarpenterCRDs(Forbidden())))


def test_missing_kube_is_explained(kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner({})
    reqs = make_node_requests(workspace=kaito_workspace(), requirement=kaito_requirement())
    with pytest.raises(ValueError, match="ProvisionerContext.kube"):
        prov.ensure(requests=reqs, ctx=ProvisionerContext())


def test_registered_with_instance_types_identical_to_the_core():
    pm = get_plugin_manager(cached=False)
    reg = pm.registry
    assert reg.plugin_of("provisioners", "karpenter") == "karpenter"
    assert pm.infos["karpenter"].distribution == "kaito-provisioner-karpenter"
    assert not pm.infos["karpenter"].errors
    mine = pm.infos["karpenter"].registered["instance_types"]
    assert "Standard_NC24ads_A100_v4" in mine and "p5.48xlarge" in mine and "g5.12xlarge" in mine
    assert reg.instance_types["g5.12xlarge"].cloud == "aws"


def test_nodeclaims_upstream_made_are_adopted_never_duplicated(kaito_workspace, kaito_requirement, kaito_kube):
    """Issue 17: a Workspace migrated from upstream KAITO keeps its NodeClaims (upstream names them
    from the time: ``ws`` + 9 hex of its own), and no second node is made for it."""
    from kaito_provisioner_karpenter.testing import KarpenterHarness, ready_status

    prov = KarpenterProvisioner({})
    ws = kaito_workspace("phi", "team-a")
    reqs = make_node_requests(workspace=ws, requirement=kaito_requirement(node_count=2))
    upstream = {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
                "metadata": {"name": "ws0a1b2c3d4", "creationTimestamp": "2026-01-01T00:00:00Z",
                             "labels": {"karpenter.sh/nodepool": "kaito", "kaito.sh/workspace": "phi",
                                        "kaito.sh/workspacenamespace": "team-a", "apps": "phi"}},
                "spec": {"requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                           "values": [reqs[0].instance_type]}]}}
    other_type = {**upstream, "metadata": {**upstream["metadata"], "name": "ws0ffffffff"},
                  "spec": {"requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                             "values": ["g5.xlarge"]}]}}
    kaito_kube.create(upstream)
    kaito_kube.create(other_type)
    harness = KarpenterHarness(kaito_kube)
    states = prov.ensure(requests=reqs, ctx=harness.context())
    names = sorted(harness.backing(ws))
    assert names == sorted(["ws0a1b2c3d4", "ws0ffffffff", reqs[1].name]), names  # one new claim, not two
    kaito_kube.set_status(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws0a1b2c3d4",
                          status=ready_status("aks-upstream-0"))
    states = {s.name: s for s in prov.observe(requests=reqs, ctx=harness.context())}
    assert states[reqs[0].name].ready and states[reqs[0].name].node_name == "aks-upstream-0"
    assert not states[reqs[1].name].ready
    prov.ensure(requests=reqs, ctx=harness.context())
    assert sorted(harness.backing(ws)) == names
