"""kaito_core.testing: the in-memory KubeAPI, the factories and the pytest plugin's fixtures."""

import pytest

from kaito_core.api import validate_workspace
from kaito_core.testing import AlreadyExists, FakeKube, make_requirement, make_workspace, workspace_labels
from kaito_core.types import KubeAPI, ProvisionerContext


def claim(name, **labels):
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {"name": name, "labels": labels}}


def test_fake_kube_behaves_like_an_api_server():
    kube = FakeKube()
    created = kube.create(claim("ws1", team="a"))
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    with pytest.raises(AlreadyExists, match="ws1"):
        kube.create(claim("ws1"))
    got = kube.get(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws1")
    got["metadata"]["labels"]["team"] = "changed"  # a copy: the stored object does not change
    assert kube.get(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws1")["metadata"]["labels"] == {"team": "a"}
    kube.create(claim("ws2", team="b"))
    assert [o["metadata"]["name"] for o in kube.list(api_version="karpenter.sh/v1", kind="NodeClaim",
                                                      labels={"team": "b"})] == ["ws2"]
    assert kube.list(api_version="karpenter.sh/v1beta1", kind="NodeClaim") == []
    assert kube.delete(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws2")
    assert not kube.delete(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws2")
    assert kube.count("create", "NodeClaim") == 3 and kube.count("delete") == 2


def test_fake_kube_create_keeps_the_api_servers_rules():
    """What a provisioner meets on a cluster: the server's uid and creationTimestamp, no status
    on create (a Node's excepted), no resourceVersion in a create."""
    kube = FakeKube()
    sent = {**claim("ws1"), "status": {"nodeName": "n"}}
    sent["metadata"].update(uid="mine", creationTimestamp="2000-01-01T00:00:00Z")
    made = kube.create(sent)
    assert made["metadata"]["uid"] != "mine" and made["metadata"]["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert "status" not in made and "status" not in kube.get(api_version="karpenter.sh/v1", kind="NodeClaim",
                                                             name="ws1")
    node = kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "status": {"phase": "x"}})
    assert node["status"] == {"phase": "x"}
    with pytest.raises(ValueError, match=r"ws2.*metadata.resourceVersion '7'.*drop it"):
        kube.create({**claim("ws2"), "metadata": {"name": "ws2", "resourceVersion": "7"}})
    assert kube.get(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws2") is None


def test_namespaces_scope_namespaced_kinds_only():
    kube = FakeKube()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}}
    kube.create(cm)
    kube.create({**cm, "metadata": {"name": "c", "namespace": "b"}})  # same name, other namespace
    assert len(kube.list(api_version="v1", kind="ConfigMap")) == 2
    assert len(kube.list(api_version="v1", kind="ConfigMap", namespace="a")) == 1
    kube.create({**claim("ws9"), "metadata": {"name": "ws9", "namespace": "ignored"}})
    assert kube.get(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws9")["metadata"].get("namespace") is None


def test_set_status_and_put_play_the_cluster():
    kube = FakeKube()
    kube.create(claim("ws1"))
    kube.set_status(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws1", status={"nodeName": "n"})
    assert kube.get(api_version="karpenter.sh/v1", kind="NodeClaim", name="ws1")["status"] == {"nodeName": "n"}
    with pytest.raises(KeyError, match="does not exist"):
        kube.set_status(api_version="karpenter.sh/v1", kind="NodeClaim", name="nope", status={})
    kube.put(claim("ws2"))
    assert kube.count("create") == 1, "the cluster's own writes are not the provisioner's calls"
    with pytest.raises(ValueError, match="metadata.name"):
        kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})


def test_factories_build_real_valid_objects(kaito_registry):
    ws = make_workspace("phi", "team-a", match_labels={"apps": "phi"})
    assert ws.metadata.uid and ws.resource.label_selector.match_labels == {"apps": "phi"}
    assert make_workspace("phi", "team-a").metadata.uid == ws.metadata.uid
    assert validate_workspace(ws, registry=kaito_registry).ok
    req = make_requirement("Standard_NC24ads_A100_v4", node_count=2, gpus_per_node=1, disk_gib=90)
    assert (req.instance_type, req.node_count, req.gpus_per_node, req.disk_gib) == (
        "Standard_NC24ads_A100_v4", 2, 1, 90)
    assert workspace_labels(ws) == {"kaito.sh/workspace": "phi", "kaito.sh/workspacenamespace": "team-a"}


def test_plugin_fixtures(kaito_kube, kaito_context, kaito_workspace, kaito_requirement, kaito_registry):
    assert isinstance(kaito_kube, FakeKube) and isinstance(kaito_kube, object)
    _: KubeAPI = kaito_kube  # satisfies the protocol the operator implements
    assert isinstance(kaito_context, ProvisionerContext) and kaito_context.kube is kaito_kube
    assert kaito_workspace("x").metadata.name == "x"
    assert kaito_requirement(node_count=3).node_count == 3
    # every provisioner distribution of this repository is installed through its entry point
    assert {"karpenter", "aks", "gpumachine"} <= set(kaito_registry.provisioners)


def test_conformance_tests_are_marked(request):
    # the plugin marks every collected conformance test so a run can select them: -m kaito_conformance
    markers = [line for line in request.config.getini("markers") if line.startswith("kaito_conformance")]
    assert markers
