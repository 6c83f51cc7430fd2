"""NodeClaims and NodePools: upstream's shape, and valid against Karpenter's real CRDs."""

import re
from pathlib import Path

import pytest

from kaito_provisioner_karpenter import KarpenterProvisioner, KarpenterSettings, builders, schema
from kaito_provisioner_karpenter.settings import SettingsError
from kaito_core.testing import make_node_requests

REFERENCE_CRDS = Path(__file__).resolve().parents[3] / "tests" / "data" / "reference" / "crds"


def test_nodeclaim_has_upstreams_shape(kaito_workspace, kaito_requirement):
    ws = kaito_workspace("phi", "team-a", match_labels={"apps": "phi-3", "tier": "gpu"})
    prov = KarpenterProvisioner({})
    reqs = make_node_requests(workspace=ws, requirement=kaito_requirement(node_count=2, disk_gib=150))
    objs = prov.desired_objects(requests=reqs)
    assert [o["metadata"]["name"] for o in objs] == [r.name for r in reqs]
    claim = objs[0]
    assert claim["apiVersion"] == "karpenter.sh/v1" and claim["kind"] == "NodeClaim"
    assert re.fullmatch(r"ws[0-9a-f]{9}", claim["metadata"]["name"])
    assert "namespace" not in claim["metadata"]  # NodeClaims are cluster-scoped
    assert claim["metadata"]["labels"] == {
        "karpenter.sh/nodepool": "kaito", "kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "team-a",
        "apps": "phi-3", "tier": "gpu"}
    assert claim["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    spec = claim["spec"]
    assert spec["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert {"key": "node.kubernetes.io/instance-type", "operator": "In",
            "values": ["Standard_NC24ads_A100_v4"]} in spec["requirements"]
    assert {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]} in spec["requirements"]
    assert spec["resources"] == {"requests": {"storage": "150Gi"}}
    assert spec["nodeClassRef"] == {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}


def test_names_are_deterministic_per_uid_and_index(kaito_workspace, kaito_requirement):
    req = kaito_requirement(node_count=3)
    a = [r.name for r in make_node_requests(workspace=kaito_workspace("w", uid="uid-1"), requirement=req)]
    b = [r.name for r in make_node_requests(workspace=kaito_workspace("w", uid="uid-1"), requirement=req)]
    c = [r.name for r in make_node_requests(workspace=kaito_workspace("w", uid="uid-2"), requirement=req)]
    assert a == b and len(set(a)) == 3
    assert not set(a) & set(c), "a re-created Workspace (new uid) must get new node names"
    assert all(re.fullmatch(r"^[a-z][a-z0-9]{0,11}$", n) for n in a), "names must also fit AKS pool names"


@pytest.mark.parametrize("settings, ref", [
    ({}, {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"}),
    ({"CLOUD_PROVIDER": "aws"}, {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}),
    ({"CLOUD_PROVIDER": "aws", "KARPENTER_NODECLASS_NAME": "gpu"},
     {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}),
    ({"KARPENTER_NODECLASS_KIND": "EC2NodeClass"}, {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                                    "name": "default"}),
    ({"KARPENTER_NODECLASS_KIND": "MyNodeClass", "KARPENTER_NODECLASS_GROUP": "example.com"},
     {"group": "example.com", "kind": "MyNodeClass", "name": "default"}),
])
def test_node_class_ref_is_configurable(settings, ref, kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner(settings)
    reqs = make_node_requests(workspace=kaito_workspace(), requirement=kaito_requirement())
    assert prov.desired_objects(requests=reqs)[0]["spec"]["nodeClassRef"] == ref


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLOUD_PROVIDER", "aws")
    monkeypatch.setenv("KARPENTER_MODE", "nodepool")
    s = KarpenterProvisioner().settings
    assert (s.cloud, s.node_class_kind, s.mode) == ("aws", "EC2NodeClass", "nodepool")
    assert KarpenterSettings.from_mapping({"CLOUD_PROVIDER": "azure"}).cloud == "azure"  # settings win


@pytest.mark.parametrize("settings, key", [
    ({"CLOUD_PROVIDER": "gcp"}, "CLOUD_PROVIDER"),
    ({"KARPENTER_MODE": "pools"}, "KARPENTER_MODE"),
    ({"KARPENTER_NODECLASS_GROUP": "karpenter.azure.com/v1beta1"}, "KARPENTER_NODECLASS_GROUP"),
    ({"KARPENTER_NODEPOOL_STATIC": "maybe"}, "KARPENTER_NODEPOOL_STATIC"),
])
def test_bad_settings_name_the_setting(settings, key):
    with pytest.raises(SettingsError, match=key):
        KarpenterSettings.from_mapping(settings, environ={})


def test_no_instance_type_is_a_plan_error(kaito_workspace, kaito_requirement):
    reqs = make_node_requests(workspace=kaito_workspace(instance_type=None), requirement=kaito_requirement(None))
    with pytest.raises(builders.PlanError, match="resource.instanceType"):
        KarpenterProvisioner({}).desired_objects(requests=reqs)


# -- validation against Karpenter's CRDs -------------------------------------------------------


def test_bundled_crds_are_upstreams():
    for kind, filename in schema.CRD_FILES.items():
        assert (REFERENCE_CRDS / filename).exists(), f"reference CRD {filename} is missing"
        bundled = schema._crd(kind)
        import yaml
        assert bundled == yaml.safe_load((REFERENCE_CRDS / filename).read_text())


@pytest.mark.parametrize("settings", [{}, {"CLOUD_PROVIDER": "aws"}, {"KARPENTER_MODE": "nodepool"},
                                      {"KARPENTER_MODE": "nodepool", "KARPENTER_NODEPOOL_STATIC": "true",
                                       "CLOUD_PROVIDER": "aws"}])
@pytest.mark.parametrize("instance_type, nodes", [("Standard_NC24ads_A100_v4", 1), ("Standard_NC6s_v3", 3),
                                                  ("g5.12xlarge", 2), ("p5.48xlarge", 1)])
def test_every_generated_object_is_valid(settings, instance_type, nodes, kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner(settings)
    ws = kaito_workspace("llama-70b", "inference", instance_type=instance_type,
                         match_labels={"apps": "llama", "kaito.sh/tier": "gpu"})
    reqs = make_node_requests(workspace=ws, requirement=kaito_requirement(instance_type, node_count=nodes,
                                                                          disk_gib=220))
    objs = prov.desired_objects(requests=reqs)
    assert objs, "nothing generated"
    for obj in objs:
        assert schema.problems(obj) == []


def test_validation_catches_what_the_api_server_refuses(kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner({})
    good = prov.desired_objects(requests=make_node_requests(workspace=kaito_workspace(),
                                                            requirement=kaito_requirement()))[0]
    import copy

    def broken(edit):
        obj = copy.deepcopy(good)
        edit(obj)
        return schema.problems(obj)

    assert any("nodeClassRef" in p for p in broken(lambda o: o["spec"].pop("nodeClassRef")))
    assert any("surprise" in p for p in broken(lambda o: o["spec"].update(surprise=1)))
    assert any("effect" in p or "Sometimes" in p for p in broken(
        lambda o: o["spec"]["taints"][0].update(effect="Sometimes")))
    assert any("restricted" in p for p in broken(lambda o: o["spec"]["requirements"].append(
        {"key": "karpenter.sh/custom", "operator": "Exists"})))
    assert any("must have a value" in p for p in broken(lambda o: o["spec"]["requirements"].append(
        {"key": "example.com/x", "operator": "In", "values": []})))
    assert any("label value" in p for p in broken(lambda o: o["metadata"]["labels"].update(bad="a b")))
    assert any("DNS-1123" in p for p in broken(lambda o: o["metadata"].update(name="WS_1")))
    assert any("storage" in p for p in broken(lambda o: o["spec"]["resources"]["requests"].update(storage="lots")))
    with pytest.raises(schema.SchemaError, match="nodeClassRef"):
        bad = copy.deepcopy(good)
        del bad["spec"]["nodeClassRef"]
        schema.validate(bad)


def test_nodepool_has_the_workspaces_shape(kaito_workspace, kaito_requirement):
    prov = KarpenterProvisioner({"KARPENTER_MODE": "nodepool"})
    ws = kaito_workspace("phi", "team-a", match_labels={"apps": "phi-3"})
    reqs = make_node_requests(workspace=ws, requirement=kaito_requirement(node_count=3))
    [pool] = prov.desired_objects(requests=reqs)
    assert pool["kind"] == "NodePool" and pool["metadata"]["name"] == "kaito-team-a-phi"
    tmpl = pool["spec"]["template"]
    assert tmpl["metadata"]["labels"] == {"apps": "phi-3", "kaito.sh/workspace": "phi",
                                          "kaito.sh/workspacenamespace": "team-a"}
    assert tmpl["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert pool["spec"]["limits"] == {"nodes": "3"}
    assert "replicas" not in pool["spec"]


def test_long_nodepool_names_are_shortened_and_distinct():
    a = builders.nodepool_name("n" * 40, "w" * 40 + "a")
    b = builders.nodepool_name("n" * 40, "w" * 40 + "b")
    assert len(a) <= 63 and len(b) <= 63 and a != b
    assert schema.DNS1123_SUBDOMAIN.match(a)
