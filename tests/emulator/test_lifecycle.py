"""Finalizers, deletion and the garbage collector's ownerReference rules (background,
foreground with blockOwnerDeletion, orphan, unresolvable owners)."""

from __future__ import annotations

from tests.emulator.conftest import CM, MERGE, ok, wait_for

SVC = "/api/v1/namespaces/{ns}/services"


def owner_ref(owner: dict, block: bool = True) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block}


def make(api, ns: str, name: str, **meta) -> dict:
    return ok(api.post(CM.format(ns=ns), json={"metadata": {"name": name, **meta}}), 201)


def gone(api, ns: str, name: str) -> bool:
    return api.get(CM.format(ns=ns) + f"/{name}").status_code == 404


def test_finalizers_hold_deletion_until_removed(api):
    make(api, "f1", "held", finalizers=["example.com/x"])
    resp = api.delete(CM.format(ns="f1") + "/held")
    assert resp.status_code == 202 and resp.json()["metadata"]["deletionTimestamp"]
    adding = api.patch(CM.format(ns="f1") + "/held", json={"metadata": {"finalizers": ["example.com/x", "new"]}},
                       headers=MERGE)
    assert adding.status_code == 422 and "no new finalizers" in adding.text
    ok(api.patch(CM.format(ns="f1") + "/held", json={"metadata": {"finalizers": None}}, headers=MERGE))
    assert gone(api, "f1", "held")


def test_background_deletion_collects_dependents(api):
    owner = make(api, "g1", "owner")
    make(api, "g1", "child", ownerReferences=[owner_ref(owner)])
    make(api, "g1", "grandchild", ownerReferences=[owner_ref(ok(api.get(CM.format(ns="g1") + "/child")))])
    ok(api.delete(CM.format(ns="g1") + "/owner"))
    wait_for("the dependents to be collected", lambda: gone(api, "g1", "child") and gone(api, "g1", "grandchild"))


def test_dependent_with_a_live_owner_left_loses_only_the_dead_reference(api):
    a, b = make(api, "g2", "a"), make(api, "g2", "b")
    make(api, "g2", "shared", ownerReferences=[owner_ref(a), owner_ref(b)])
    ok(api.delete(CM.format(ns="g2") + "/a"))
    refs = wait_for("the dead reference to go", lambda: len(ok(api.get(CM.format(ns="g2") + "/shared"))["metadata"][
        "ownerReferences"]) == 1 and ok(api.get(CM.format(ns="g2") + "/shared"))["metadata"]["ownerReferences"])
    assert refs[0]["name"] == "b"


def test_foreground_deletion_waits_for_blocking_dependents(api):
    owner = make(api, "g3", "owner")
    make(api, "g3", "blocker", ownerReferences=[owner_ref(owner)], finalizers=["example.com/slow"])
    resp = api.delete(CM.format(ns="g3") + "/owner", params={"propagationPolicy": "Foreground"})
    assert resp.status_code == 202
    assert "foregroundDeletion" in resp.json()["metadata"]["finalizers"]
    wait_for("the blocker to be marked", lambda: ok(api.get(CM.format(ns="g3") + "/blocker"))["metadata"].get(
        "deletionTimestamp"))
    assert not gone(api, "g3", "owner")  # blockOwnerDeletion: the owner waits
    ok(api.patch(CM.format(ns="g3") + "/blocker", json={"metadata": {"finalizers": None}}, headers=MERGE))
    wait_for("the owner to go once the blocker went", lambda: gone(api, "g3", "owner"))


def test_orphan_deletion_keeps_dependents(api):
    owner = make(api, "g4", "owner")
    make(api, "g4", "kept", ownerReferences=[owner_ref(owner)])
    api.request("DELETE", CM.format(ns="g4") + "/owner", json={"propagationPolicy": "Orphan"})
    wait_for("the owner to go", lambda: gone(api, "g4", "owner"))
    assert not ok(api.get(CM.format(ns="g4") + "/kept"))["metadata"].get("ownerReferences")


def test_created_after_its_owner_went_is_collected(api):
    owner = make(api, "g5", "owner")
    ok(api.delete(CM.format(ns="g5") + "/owner"))
    make(api, "g5", "late", ownerReferences=[owner_ref(owner)])
    wait_for("the late dependent to be collected", lambda: gone(api, "g5", "late"))


def test_cluster_scoped_dependent_of_a_namespaced_owner_is_never_collected(api, emu):
    owner = make(api, "g6", "owner")
    node = ok(api.post("/api/v1/nodes", json={"metadata": {"name": "n-g6", "ownerReferences": [owner_ref(owner)]}}),
              201)
    ok(api.delete(CM.format(ns="g6") + "/owner"))
    emu.collect_garbage()
    assert ok(api.get("/api/v1/nodes/n-g6"))["metadata"]["uid"] == node["metadata"]["uid"]


def test_preconditions_on_delete(api):
    made = make(api, "g7", "pre")
    resp = api.request("DELETE", CM.format(ns="g7") + "/pre", json={"preconditions": {"uid": "other"}})
    assert resp.status_code == 409
    ok(api.request("DELETE", CM.format(ns="g7") + "/pre", json={"preconditions": {"uid": made["metadata"]["uid"]}}))


def test_namespace_deletion_removes_its_objects(api):
    ok(api.post("/api/v1/namespaces", json={"metadata": {"name": "doomed"}}), 201)
    make(api, "doomed", "inside")
    make(api, "doomed", "held", finalizers=["example.com/x"])
    ns = api.delete("/api/v1/namespaces/doomed").json()
    assert ns["status"]["phase"] == "Terminating"
    assert gone(api, "doomed", "inside")
    refused = api.post(CM.format(ns="doomed"), json={"metadata": {"name": "new"}})
    assert refused.status_code == 403 and "being terminated" in refused.json()["message"]
    assert api.get("/api/v1/namespaces/doomed").status_code == 200  # held by the finalizer inside
    ok(api.patch(CM.format(ns="doomed") + "/held", json={"metadata": {"finalizers": None}}, headers=MERGE))
    wait_for("the namespace to go", lambda: api.get("/api/v1/namespaces/doomed").status_code == 404)


def test_objects_need_their_namespace(api, emu):
    """NamespaceLifecycle admission: 404 until a Namespace names it; a cluster's own exist."""
    missing = api.post(CM.format(ns="nowhere"), json={"metadata": {"name": "x"}})
    assert missing.status_code == 404 and missing.json()["message"] == 'namespaces "nowhere" not found'
    ok(api.post("/api/v1/namespaces", json={"metadata": {"name": "nowhere"}}), 201)
    ok(api.post(CM.format(ns="nowhere"), json={"metadata": {"name": "x"}}), 201)
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert ok(api.get(f"/api/v1/namespaces/{ns}"))["status"]["phase"] == "Active"
    emu.add_namespaces("later", "default")  # an existing one is kept
    ok(api.post(CM.format(ns="later"), json={"metadata": {"name": "x"}}), 201)


def test_delete_collection_by_label(api):
    for name, team in (("a", "x"), ("b", "x"), ("c", "y")):
        make(api, "g8", name, labels={"team": team})
    out = ok(api.delete(CM.format(ns="g8"), params={"labelSelector": "team=x"}))
    assert sorted(i["metadata"]["name"] for i in out["items"]) == ["a", "b"]
    assert [i["metadata"]["name"] for i in ok(api.get(CM.format(ns="g8")))["items"]] == ["c"]
