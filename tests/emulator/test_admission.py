"""Admission webhooks: the emulator calls the webhooks its Validating/Mutating
WebhookConfigurations name, over HTTPS trusting their caBundle, as kube-apiserver does."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kaito_core.operator.certs import self_signed
from tests.emulator.conftest import CM, MERGE, ok

VWC = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
MWC = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


class Hook(BaseHTTPRequestHandler):
    """Denies ConfigMaps labelled deny=yes; adds label mutated=yes; records every review."""

    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/slow":
            time.sleep(2)  # longer than the configuration's timeoutSeconds
        req = review["request"]
        Hook.seen.append(req)
        obj = req.get("object") or req.get("oldObject") or {}
        response = {"uid": req["uid"], "allowed": True}
        if self.path == "/validate" and (obj.get("metadata", {}).get("labels") or {}).get("deny") == "yes":
            response = {"uid": req["uid"], "allowed": False, "status": {"code": 403, "message": "labelled deny"}}
        if self.path == "/mutate" and req["operation"] == "CREATE":
            ops = [{"op": "add", "path": "/metadata/labels", "value": {**(obj["metadata"].get("labels") or {}),
                                                                       "mutated": "yes"}}]
            response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode())
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory):
    cert, key = self_signed(["127.0.0.1"])
    d = tmp_path_factory.mktemp("hook")
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "tls.crt", d / "tls.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", base64.b64encode(cert).decode()
    server.shutdown()
    server.server_close()


def config(name: str, url: str, ca: str, *, namespace: str, policy: str = "Fail",
           operations: tuple = ("CREATE", "UPDATE", "DELETE"), timeout: int = 5) -> dict:
    return {"metadata": {"name": name}, "webhooks": [{
        "name": f"{name}.example.com", "clientConfig": {"url": url, "caBundle": ca}, "failurePolicy": policy,
        "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": timeout,
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"],
                   "operations": list(operations), "scope": "Namespaced"}]}]}


def test_validating_webhook_denies_with_its_message(api, hook_server):
    url, ca = hook_server
    ok(api.post(VWC, json=config("deny", url + "/validate", ca, namespace="a1")), 201)
    Hook.seen.clear()
    resp = api.post(CM.format(ns="a1"), json={"metadata": {"name": "x", "labels": {"deny": "yes"}}})
    assert resp.status_code == 403
    assert resp.json()["message"] == 'admission webhook "deny.example.com" denied the request: labelled deny'
    made = ok(api.post(CM.format(ns="a1"), json={"metadata": {"name": "y"}}), 201)
    assert made["metadata"]["name"] == "y"
    upd = api.patch(CM.format(ns="a1") + "/y", json={"metadata": {"labels": {"deny": "yes"}}}, headers=MERGE)
    assert upd.status_code == 403
    ok(api.delete(CM.format(ns="a1") + "/y"))
    ops = [(r["operation"], r["name"]) for r in Hook.seen]
    assert ops == [("CREATE", "x"), ("CREATE", "y"), ("UPDATE", "y"), ("DELETE", "y")]
    assert Hook.seen[2]["oldObject"]["metadata"]["name"] == "y" and Hook.seen[3]["object"] is None
    # other namespaces do not match the namespaceSelector
    ok(api.post(CM.format(ns="elsewhere"), json={"metadata": {"name": "z", "labels": {"deny": "yes"}}}), 201)


def test_mutating_webhook_patch_is_applied(api, hook_server):
    url, ca = hook_server
    ok(api.post(MWC, json=config("mutate", url + "/mutate", ca, namespace="a2")), 201)
    made = ok(api.post(CM.format(ns="a2"), json={"metadata": {"name": "m", "labels": {"a": "b"}}}), 201)
    assert made["metadata"]["labels"] == {"a": "b", "mutated": "yes"}


def test_failure_policy(api, hook_server):
    url, ca = hook_server
    dead = "https://127.0.0.1:1/validate"
    ok(api.post(VWC, json=config("dead-fail", dead, ca, namespace="a3")), 201)
    resp = api.post(CM.format(ns="a3"), json={"metadata": {"name": "x"}})
    assert resp.status_code == 500 and 'failed calling webhook "dead-fail.example.com"' in resp.json()["message"]
    ok(api.post(VWC, json=config("dead-ignore", dead, ca, namespace="a4", policy="Ignore")), 201)
    ok(api.post(CM.format(ns="a4"), json={"metadata": {"name": "x"}}), 201)


def test_untrusted_certificate_fails_the_call(api, hook_server):
    url, _ = hook_server
    other_ca = base64.b64encode(self_signed(["127.0.0.1"])[0]).decode()
    ok(api.post(VWC, json=config("wrong-ca", url + "/validate", other_ca, namespace="a5")), 201)
    resp = api.post(CM.format(ns="a5"), json={"metadata": {"name": "x"}})
    assert resp.status_code == 500 and "certificate" in resp.json()["message"].lower()


def test_webhook_configurations_are_not_sent_to_webhooks(api, hook_server, emu):
    url, ca = hook_server
    every = config("everything", url + "/validate", ca, namespace="a6")
    every["webhooks"][0]["rules"][0].update(apiGroups=["*"], apiVersions=["*"], resources=["*"])
    del every["webhooks"][0]["namespaceSelector"]
    before = len(emu.webhook_calls)
    ok(api.post(VWC, json=every), 201)
    ok(api.delete(VWC + "/everything"))
    assert len(emu.webhook_calls) == before


def test_webhook_timeout_fails_the_request(api, hook_server):
    url, ca = hook_server
    ok(api.post(VWC, json=config("slow", url + "/slow", ca, namespace="a7", timeout=1)), 201)
    resp = api.post(CM.format(ns="a7"), json={"metadata": {"name": "x"}})
    assert resp.status_code == 500 and 'failed calling webhook "slow.example.com"' in resp.json()["message"]
    assert api.get(CM.format(ns="a7") + "/x").status_code == 404


# -- authorization: RBAC for a named client, OwnerReferencesPermissionEnforcement ---------------

ROLE = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]},
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["create", "delete"]}]


def test_rbac_forbids_what_no_rule_grants_to_the_named_client():
    import httpx

    from kaito_core.testing.emulator import Emulator

    with Emulator(namespaces=("rb",), rbac={"role-user": ROLE}) as emu, \
            httpx.Client(base_url=emu.url, headers={"User-Agent": "role-user/1"}) as sa, \
            httpx.Client(base_url=emu.url) as admin:
        ok(sa.post(CM.format(ns="rb"), json={"metadata": {"name": "a"}}), 201)
        ok(sa.get(CM.format(ns="rb")))
        denied = sa.delete(CM.format(ns="rb") + "/a")
        assert denied.status_code == 403 and denied.json()["reason"] == "Forbidden"
        assert denied.json()["message"] == ('configmaps "a" is forbidden: User "role-user/1" cannot delete resource '
                                            '"configmaps" in API group "" in the namespace "rb"')
        nodes = sa.get("/api/v1/nodes").json()
        assert nodes["code"] == 403 and nodes["message"].endswith('cannot list resource "nodes" in API group "" '
                                                                  'at the cluster scope')
        assert admin.delete(CM.format(ns="rb") + "/a").status_code == 200  # other clients: not restricted


def test_owner_references_need_delete_and_block_owner_deletion_needs_the_owners_finalizers():
    """plugin/pkg/admission/gc: an ownerReference needs ``delete`` on the object; one with
    blockOwnerDeletion needs ``update`` on the owner's ``finalizers`` subresource."""
    import httpx

    from kaito_core.testing.emulator import Emulator

    sts = "/apis/apps/v1/namespaces/rb/statefulsets"
    with Emulator(namespaces=("rb",), rbac={"role-user": ROLE}, owner_references_permission=True) as emu, \
            httpx.Client(base_url=emu.url, headers={"User-Agent": "role-user/1"}) as sa, \
            httpx.Client(base_url=emu.url) as admin:
        owner = ok(admin.post(CM.format(ns="rb"), json={"metadata": {"name": "owner"}}), 201)["metadata"]
        ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["uid"]}
        body = {"spec": {"selector": {"matchLabels": {"a": "b"}}, "serviceName": "s", "template": {
            "metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}
        ok(sa.post(sts, json={"metadata": {"name": "plain", "ownerReferences": [ref]}, **body}), 201)
        blocked = sa.post(sts, json={"metadata": {"name": "blocking", "ownerReferences": [
            {**ref, "blockOwnerDeletion": True}]}, **body})
        assert blocked.status_code == 403, blocked.text
        assert "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers " \
               'on: User "role-user/1" cannot update resource "configmaps/finalizers"' in blocked.json()["message"]
        no_delete = sa.post(CM.format(ns="rb"), json={"metadata": {"name": "child", "ownerReferences": [ref]}})
        assert no_delete.status_code == 403 and "cannot set an ownerRef on a resource you can't delete" \
            in no_delete.json()["message"]
