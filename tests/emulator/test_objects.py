"""Status subresource, generation, CRD structural schema (pruning, defaulting, 422 causes),
CRDs served from the API, immutable fields and metadata validation."""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import pytest
import yaml

from kaito_core.testing.emulator import Emulator
from tests.emulator.conftest import NAMESPACES, MERGE, WS, ok, workspace

STS = "/apis/apps/v1/namespaces/{ns}/statefulsets"
REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference" / "crds"


def test_create_cannot_set_status_and_main_writes_keep_it(api):
    made = ok(api.post(WS.format(ns="s1"), json=workspace("w", "s1", status={"state": "Ready"})), 201)
    assert "status" not in made
    ok(api.patch(WS.format(ns="s1") + "/w/status", json={"status": {"state": "Pending"}}, headers=MERGE))
    main = ok(api.patch(WS.format(ns="s1") + "/w", json={"status": {"state": "Ready"}, "metadata": {
        "labels": {"a": "b"}}}, headers=MERGE))
    assert main["status"] == {"state": "Pending"} and main["metadata"]["labels"] == {"a": "b"}


def test_status_writes_change_only_status(api):
    ok(api.post(WS.format(ns="s2"), json=workspace("w", "s2")), 201)
    out = ok(api.patch(WS.format(ns="s2") + "/w/status", json={"status": {"state": "Ready"}, "metadata": {
        "labels": {"x": "y"}}, "inference": {"preset": {"name": "other"}}}, headers=MERGE))
    assert out["status"]["state"] == "Ready" and "labels" not in out["metadata"]
    assert out["inference"]["preset"]["name"] == "phi-3-mini-4k-instruct"


def test_generation_moves_on_spec_changes_only(api):
    made = ok(api.post(WS.format(ns="s3"), json=workspace("w", "s3")), 201)
    assert made["metadata"]["generation"] == 1
    meta = ok(api.patch(WS.format(ns="s3") + "/w", json={"metadata": {"annotations": {"a": "b"}}}, headers=MERGE))
    status = ok(api.patch(WS.format(ns="s3") + "/w/status", json={"status": {"state": "x"}}, headers=MERGE))
    assert meta["metadata"]["generation"] == status["metadata"]["generation"] == 1
    spec = ok(api.patch(WS.format(ns="s3") + "/w", json={"inference": {"preset": {"name": "llama-3.1-8b-instruct"}}},
                        headers=MERGE))
    assert spec["metadata"]["generation"] == 2


def test_pods_start_pending_and_nodes_keep_their_status(api):
    pod = ok(api.post("/api/v1/namespaces/s4/pods", json={"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "i"}]}, "status": {"phase": "Running"}}), 201)
    assert pod["status"]["phase"] == "Pending"
    node = ok(api.post("/api/v1/nodes", json={"metadata": {"name": "n-s4"}, "status": {"capacity": {"cpu": "4"}}}), 201)
    assert node["status"]["capacity"] == {"cpu": "4"}


def test_create_refuses_a_resource_version_and_assigns_its_own_identity(api):
    """An object read back and posted again keeps its resourceVersion: the apiserver's storage
    refuses it (storage.ErrResourceVersionSetOnCreate, a 500); uid and creationTimestamp the
    client sent are replaced by the server's."""
    sent = {"metadata": {"name": "c", "resourceVersion": "7"}, "data": {"k": "v"}}
    resp = api.post("/api/v1/namespaces/s5/configmaps", json=sent)
    assert resp.status_code == 500, resp.text
    assert resp.json()["message"] == "resourceVersion should not be set on objects to be created"
    assert api.get("/api/v1/namespaces/s5/configmaps/c").status_code == 404
    made = ok(api.post("/api/v1/namespaces/s5/configmaps", json={"metadata": {
        "name": "c", "uid": "mine", "creationTimestamp": "2000-01-01T00:00:00Z"}, "data": {"k": "v"}}), 201)
    assert made["metadata"]["uid"] != "mine" and made["metadata"]["creationTimestamp"] != "2000-01-01T00:00:00Z"
    assert made["metadata"]["resourceVersion"]


def test_core_events_live_in_their_objects_namespace(api):
    """core/v1 legacyValidateEvent: an Event about a namespaced object is in that namespace; one
    about a cluster-scoped object (a Node, a NodeClaim) is in "default"."""
    def event(ns: str, name: str, involved: dict) -> dict:
        return {"metadata": {"name": name, "namespace": ns}, "involvedObject": involved, "reason": "R",
                "message": "m", "type": "Normal"}

    pod = {"kind": "Pod", "name": "p", "namespace": "s10", "apiVersion": "v1"}
    ok(api.post("/api/v1/namespaces/s10/events", json=event("s10", "e1", pod)), 201)
    wrong = api.post("/api/v1/namespaces/s11/events", json=event("s11", "e2", pod))
    assert wrong.status_code == 422, wrong.text
    assert wrong.json()["details"]["causes"][0]["field"] == "involvedObject.namespace"
    node = {"kind": "Node", "name": "n", "apiVersion": "v1"}
    ok(api.post("/api/v1/namespaces/default/events", json=event("default", "e3", node)), 201)
    assert api.post("/api/v1/namespaces/s11/events", json=event("s11", "e4", node)).status_code == 422


def test_built_in_kinds_come_back_defaulted(api):
    """What a cluster stores is more than what was sent (SetDefaults_*): a controller comparing
    the two must tolerate it. A Job gets its generated selector and template labels."""
    tpl = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [
        {"name": "c", "image": "reg.example/img:1", "ports": [{"containerPort": 80}],
         "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
         "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
        {"name": "d", "image": "reg.example/img"}],
        "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}}
    sts = ok(api.post(STS.format(ns="s8"), json={"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "x"}}, "serviceName": "d", "template": tpl}}), 201)["spec"]
    assert (sts["replicas"], sts["podManagementPolicy"], sts["revisionHistoryLimit"]) == (1, "OrderedReady", 10)
    assert sts["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    pod = sts["template"]["spec"]
    assert (pod["restartPolicy"], pod["dnsPolicy"], pod["terminationGracePeriodSeconds"]) == ("Always", "ClusterFirst", 30)
    c, d = pod["containers"]
    assert (c["imagePullPolicy"], d["imagePullPolicy"]) == ("IfNotPresent", "Always")
    assert c["ports"][0]["protocol"] == "TCP" and c["terminationMessagePath"] == "/dev/termination-log"
    assert c["readinessProbe"]["periodSeconds"] == 10 and c["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert pod["volumes"][0]["configMap"]["defaultMode"] == 420
    svc = ok(api.post("/api/v1/namespaces/s8/services", json={"metadata": {"name": "d"}, "spec": {
        "selector": {"app": "x"}, "ports": [{"port": 80}]}}), 201)["spec"]
    assert (svc["type"], svc["sessionAffinity"], svc["ports"][0]["targetPort"]) == ("ClusterIP", "None", 80)
    job = ok(api.post("/apis/batch/v1/namespaces/s8/jobs", json={"metadata": {"name": "j"}, "spec": {
        "template": {**tpl, "spec": {**tpl["spec"], "restartPolicy": "Never"}}}}), 201)
    uid = job["metadata"]["uid"]
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "j"
    assert (job["spec"]["backoffLimit"], job["spec"]["completions"], job["spec"]["template"]["spec"]["restartPolicy"]) \
        == (6, 1, "Never")
    assert job["spec"]["podReplacementPolicy"] == "TerminatingOrFailed"


def test_schema_errors_name_every_field(api):
    bad = workspace("bad", "s6")
    bad["resource"]["count"] = "two"
    bad["inference"]["adapters"] = [{"source": {"name": "Not_Valid"}, "strength": "2"}]
    resp = api.post(WS.format(ns="s6"), json=bad)
    assert resp.status_code == 422 and resp.json()["reason"] == "Invalid"
    fields = {c["field"] for c in resp.json()["details"]["causes"]}
    assert {"resource.count", "inference.adapters[0].source.name", "inference.adapters[0].strength"} <= fields
    assert 'Workspace.kaito.sh "bad" is invalid' in resp.json()["message"]


def test_unknown_fields_are_pruned_with_a_warning_or_refused_when_strict(api, emu):
    """Server-side field validation (GA in 1.27): ``Warn`` by default, a 299 ``Warning`` header per
    pruned field; ``Strict``: 400 naming them; ``Ignore``: silent. Status through /status too."""
    extra = workspace("pruned", "s7", bogus={"a": 1})
    extra["resource"]["nope"] = True
    resp = api.post(WS.format(ns="s7"), json=extra)
    made = ok(resp, 201)
    assert "bogus" not in made and "nope" not in made["resource"]
    assert sorted(resp.headers.get_list("Warning")) == ['299 - "unknown field \\"bogus\\""',
                                                '299 - "unknown field \\"resource.nope\\""']
    agent = "python-httpx/" + httpx.__version__
    assert ("POST", WS.format(ns="s7"), agent, 'unknown field "bogus"') in emu.warnings
    strict = api.post(WS.format(ns="s7"), params={"fieldValidation": "Strict"},
                      json=workspace("strict", "s7", bogus={"a": 1}))
    assert strict.status_code == 400, strict.text
    assert strict.json()["message"] == 'strict decoding error: unknown field "bogus"'
    quiet = api.post(WS.format(ns="s7"), params={"fieldValidation": "Ignore"}, json=workspace("quiet", "s7", bogus=1))
    assert quiet.status_code == 201 and "Warning" not in quiet.headers
    status = api.patch(WS.format(ns="s7") + "/pruned/status", headers=MERGE,
                       json={"status": {"state": "Ready", "madeUp": [1]}})
    assert ok(status)["status"] == {"state": "Ready"}
    assert status.headers.get_list("Warning") == ['299 - "unknown field \\"status.madeUp\\""']
    fine = api.patch(WS.format(ns="s7") + "/pruned", headers=MERGE, json={"metadata": {"labels": {"a": "b"}}})
    assert ok(fine) and "Warning" not in fine.headers  # what is stored already passed


def test_crd_created_through_the_api_is_served_with_its_defaults(api):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "gadgets", "kind": "Gadget", "singular": "gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object", "properties": {
                            "size": {"type": "integer", "default": 3, "maximum": 10},
                            "mode": {"type": "string", "enum": ["a", "b"]}}}}}}}]}}
    made_crd = ok(api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd), 201)
    assert made_crd["metadata"]["name"] == "gadgets.example.com"
    path = "/apis/example.com/v1/namespaces/s8/gadgets"
    made = ok(api.post(path, json={"metadata": {"name": "g"}, "spec": {"mode": "a"}}), 201)
    assert made["spec"] == {"mode": "a", "size": 3}
    resp = api.post(path, json={"metadata": {"name": "h"}, "spec": {"mode": "c", "size": 11}})
    causes = {c["field"]: c["reason"] for c in resp.json()["details"]["causes"]}
    assert causes == {"spec.mode": "FieldValueNotSupported", "spec.size": "FieldValueInvalid"}
    ok(api.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com"))
    assert api.get(path).status_code == 404


def test_real_karpenter_crd_validates_node_claims():
    import httpx

    crds = [yaml.safe_load((REFERENCE / f"karpenter.sh_{n}.yaml").read_text()) for n in ("nodeclaims", "nodepools")]
    with Emulator(crds=crds, namespaces=NAMESPACES) as emu, httpx.Client(base_url=emu.url) as api:
        resp = api.post("/apis/karpenter.sh/v1/nodeclaims", json={"metadata": {"name": "nc"}, "spec": {}})
        assert resp.status_code == 422
        assert "spec.nodeClassRef" in {c["field"] for c in resp.json()["details"]["causes"]}


def test_immutable_fields(api):
    svc = ok(api.post("/api/v1/namespaces/s9/services", json={"metadata": {"name": "s"}, "spec": {"ports": [
        {"port": 80}]}}), 201)
    assert svc["spec"]["clusterIP"]
    moved = api.patch("/api/v1/namespaces/s9/services/s", json={"spec": {"clusterIP": "10.0.0.9"}}, headers=MERGE)
    assert moved.status_code == 422 and moved.json()["details"]["causes"][0]["field"] == "spec.clusterIP"
    sts = {"metadata": {"name": "st"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "serviceName": "s",
                                                "template": {"metadata": {"labels": {"a": "b"}}}}}
    ok(api.post(STS.format(ns="s9"), json=sts), 201)
    assert api.patch(STS.format(ns="s9") + "/st", json={"spec": {"selector": {"matchLabels": {"a": "c"}}}},
                     headers=MERGE).status_code == 422
    ok(api.patch(STS.format(ns="s9") + "/st", json={"spec": {"replicas": 2}}, headers=MERGE))
    job = {"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a"}]}}}}
    ok(api.post("/apis/batch/v1/namespaces/s9/jobs", json=job), 201)
    changed = copy.deepcopy(job["spec"])
    changed["template"]["spec"]["containers"][0]["image"] = "b"
    assert api.patch("/apis/batch/v1/namespaces/s9/jobs/j", json={"spec": changed},
                     headers=MERGE).status_code == 422
    ok(api.post("/api/v1/namespaces/s9/configmaps", json={"metadata": {"name": "frozen"}, "data": {"a": "1"},
                                                          "immutable": True}), 201)
    assert api.patch("/api/v1/namespaces/s9/configmaps/frozen", json={"data": {"a": "2"}},
                     headers=MERGE).status_code == 422


@pytest.mark.parametrize("name", ["Upper", "trailing-newline\n", "-dash", "x" * 254])
def test_object_names_are_validated(api, name):
    resp = api.post("/api/v1/namespaces/s10/configmaps", json={"metadata": {"name": name}})
    assert resp.status_code == 422 and resp.json()["details"]["causes"][0]["field"] == "metadata.name"


def _require_cel() -> None:
    try:
        import celpy  # noqa: F401
    except ImportError:
        pytest.fail("cel-python is not installed: pip install cel-python==0.5.0 (the test extra)", pytrace=False)


def test_crd_validation_rules_with_karpenters_crds():
    """Karpenter's NodeClaim spec is immutable (``self == oldSelf``); requirement keys in
    karpenter.sh are restricted (``self.find(...)``); ``In`` needs values."""
    import httpx

    _require_cel()
    crds = [yaml.safe_load((REFERENCE / f"karpenter.sh_{n}.yaml").read_text()) for n in ("nodeclaims", "nodepools")]
    spec = {"nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"},
            "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                              "values": ["Standard_NC24ads_A100_v4"]}]}
    with Emulator(crds=crds, namespaces=NAMESPACES) as emu, httpx.Client(base_url=emu.url) as api:
        path = "/apis/karpenter.sh/v1/nodeclaims"
        ok(api.post(path, json={"metadata": {"name": "nc"}, "spec": spec}), 201)
        moved = api.patch(path + "/nc", json={"spec": {"nodeClassRef": {"name": "other"}}}, headers=MERGE)
        assert moved.status_code == 422
        assert moved.json()["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec",
                                                      "message": 'Invalid value: "object": spec is immutable'}]
        ok(api.patch(path + "/nc", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE))
        bad = copy.deepcopy(spec)
        bad["requirements"] = [{"key": "karpenter.sh/made-up", "operator": "In", "values": []}]
        resp = api.post(path, json={"metadata": {"name": "bad"}, "spec": bad})
        fields = [c["field"] for c in resp.json()["details"]["causes"]]
        assert resp.status_code == 422 and "spec.requirements" in fields and "spec.requirements[0].key" in fields


def test_custom_resources_refuse_strategic_merge_patches(api):
    ok(api.post(WS.format(ns="s11"), json=workspace("w", "s11")), 201)
    resp = api.patch(WS.format(ns="s11") + "/w", json={"metadata": {"labels": {"a": "b"}}},
                     headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert resp.status_code == 415
