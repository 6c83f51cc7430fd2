"""resourceVersion: one global counter, optimistic concurrency (409), no-op writes, JSON-patch
tests (422, what kopf's finalizer patches rely on), server-owned identity."""

from __future__ import annotations

import pytest

from tests.emulator.conftest import NAMESPACES, CM, JSON_PATCH, MERGE, ok


def test_resource_version_increments_on_every_write(api):
    a = ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "a"}, "data": {"k": "1"}}), 201)
    b = ok(api.patch(CM.format(ns="rv") + "/a", json={"data": {"k": "2"}}, headers=MERGE))
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    listed = ok(api.get(CM.format(ns="rv")))
    assert int(listed["metadata"]["resourceVersion"]) >= int(b["metadata"]["resourceVersion"])


def test_stale_resource_version_is_a_conflict(api):
    made = ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "stale"}, "data": {"k": "1"}}), 201)
    old = made["metadata"]["resourceVersion"]
    ok(api.patch(CM.format(ns="rv") + "/stale", json={"data": {"k": "2"}}, headers=MERGE))
    resp = api.patch(CM.format(ns="rv") + "/stale", json={"metadata": {"resourceVersion": old}, "data": {"k": "3"}},
                     headers=MERGE)
    assert resp.status_code == 409 and resp.json()["reason"] == "Conflict"
    assert "the object has been modified" in resp.json()["message"]
    put = api.put(CM.format(ns="rv") + "/stale", json={**made, "data": {"k": "4"}})
    assert put.status_code == 409
    assert ok(api.get(CM.format(ns="rv") + "/stale"))["data"] == {"k": "2"}


def test_put_of_a_custom_resource_needs_a_resource_version(api):
    from tests.emulator.conftest import WS, workspace

    made = ok(api.post(WS.format(ns="rv"), json=workspace("put", "rv")), 201)
    del made["metadata"]["resourceVersion"]
    resp = api.put(WS.format(ns="rv") + "/put", json=made)
    assert resp.status_code == 422 and resp.json()["details"]["causes"][0]["field"] == "metadata.resourceVersion"


def test_no_op_patch_keeps_the_version(api):
    made = ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "noop"}, "data": {"k": "1"}}), 201)
    same = ok(api.patch(CM.format(ns="rv") + "/noop", json={"data": {"k": "1"}}, headers=MERGE))
    assert same["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]


def test_json_patch_test_failure_is_422(api):
    made = ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "jp"}, "data": {"k": "1"}}), 201)
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}]
    assert api.patch(CM.format(ns="rv") + "/jp", json=ops, headers=JSON_PATCH).status_code == 422
    ops[0]["value"] = made["metadata"]["resourceVersion"]
    assert ok(api.patch(CM.format(ns="rv") + "/jp", json=ops, headers=JSON_PATCH))["metadata"]["finalizers"] == ["x"]
    ok(api.patch(CM.format(ns="rv") + "/jp", json=[{"op": "remove", "path": "/metadata/finalizers"}],
                 headers=JSON_PATCH))


def test_server_assigns_identity_and_refuses_duplicates(api):
    body = {"metadata": {"name": "id", "uid": "mine"}, "data": {}}
    made = ok(api.post(CM.format(ns="rv"), json=body), 201)
    assert made["metadata"]["uid"] != "mine" and int(made["metadata"]["resourceVersion"]) > 0
    again = api.post(CM.format(ns="rv"), json=body)
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
    gen = ok(api.post(CM.format(ns="rv"), json={"metadata": {"generateName": "ev-"}}), 201)
    assert gen["metadata"]["name"].startswith("ev-") and len(gen["metadata"]["name"]) > 3


def test_not_found_distinguishes_objects_from_resources(api):
    missing = api.get(CM.format(ns="rv") + "/nope").json()
    assert missing["reason"] == "NotFound" and missing["details"]["name"] == "nope"
    unknown = api.get("/apis/example.com/v1/widgets").json()
    assert unknown["code"] == 404 and unknown["message"] == "the server could not find the requested resource"


def test_server_side_apply_is_refused_not_misapplied(api):
    ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "ssa"}}), 201)
    resp = api.patch(CM.format(ns="rv") + "/ssa", content=b"data: {k: v}",
                     headers={"Content-Type": "application/apply-patch+yaml"})
    assert resp.status_code == 415


def test_kubernetes_client_sees_the_conflict(emu):
    import kubernetes

    cfg = kubernetes.client.Configuration()
    cfg.host = emu.url
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))
    made = core.create_namespaced_config_map("rv", {"metadata": {"name": "k8s"}, "data": {"a": "1"}})
    made.data = {"a": "2"}
    core.replace_namespaced_config_map("k8s", "rv", made)
    made.data = {"a": "3"}  # still the first resourceVersion
    with pytest.raises(kubernetes.client.ApiException) as info:
        core.replace_namespaced_config_map("k8s", "rv", made)
    assert info.value.status == 409
    assert core.read_namespaced_config_map("k8s", "rv").data == {"a": "2"}


def test_injected_faults_answer_once_each(api, emu):
    ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "fault"}}), 201)
    emu.inject("get", "configmaps", 429, times=2)
    first, second = api.get(CM.format(ns="rv") + "/fault"), api.get(CM.format(ns="rv") + "/fault")
    assert (first.status_code, second.status_code) == (429, 429) and first.headers["Retry-After"] == "1"
    assert ok(api.get(CM.format(ns="rv") + "/fault"))["metadata"]["name"] == "fault"
    emu.fail("configmaps")
    assert api.get(CM.format(ns="rv") + "/fault").status_code == 500
    assert emu.clear_faults() == 0
    ok(api.get(CM.format(ns="rv") + "/fault"))


def test_a_write_for_a_previous_incarnation_is_a_conflict(api):
    """Same name, new uid (deleted and re-created): a PUT of the old object is refused."""
    old = ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "reborn"}, "data": {"v": "1"}}), 201)
    ok(api.delete(CM.format(ns="rv") + "/reborn"))
    ok(api.post(CM.format(ns="rv"), json={"metadata": {"name": "reborn"}, "data": {"v": "2"}}), 201)
    del old["metadata"]["resourceVersion"]
    resp = api.put(CM.format(ns="rv") + "/reborn", json=old)
    assert resp.status_code == 409 and "UID in precondition" in resp.json()["message"]


def test_resources_of_absent_crds_are_not_served():
    import httpx

    from kaito_core.testing.emulator import Emulator

    with Emulator(karpenter=False, namespaces=NAMESPACES) as emu, httpx.Client(base_url=emu.url) as api:
        resp = api.get("/apis/karpenter.sh/v1/nodeclaims")
        assert resp.status_code == 404 and resp.json()["details"] == {}
        assert "karpenter.sh" not in {g["name"] for g in ok(api.get("/apis"))["groups"]}
