"""Admission webhooks served by kopf over HTTPS: validation (field messages, immutability,
GPU memory) and defaulting, exercised with real AdmissionReview requests."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import urllib.request
import uuid

import pytest

from kaito_core.operator.certs import self_signed
from tests.operator.conftest import free_port, wait_for

GOOD = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "good", "namespace": "hooks"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


@pytest.fixture(scope="module")
def webhook(operator_factory, tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(["127.0.0.1"])
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    port = free_port()
    operator_factory(env={"KAITO_WEBHOOK": "true", "KAITO_WEBHOOK_PORT": str(port), "KAITO_WEBHOOK_ADDR": "127.0.0.1",
                          "KAITO_WEBHOOK_HOST": "127.0.0.1", "KAITO_WEBHOOK_CERT": str(d / "tls.crt"),
                          "KAITO_WEBHOOK_KEY": str(d / "tls.key")})
    context = ssl.create_default_context(cadata=cert.decode())

    def review(path: str, obj: dict, old: dict | None = None, operation: str = "CREATE") -> dict:
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": str(uuid.uuid4()), "operation": operation, "namespace": "hooks", "name": obj["metadata"]["name"],
            "kind": {"group": "kaito.sh", "version": "v1beta1", "kind": "Workspace"},
            "resource": {"group": "kaito.sh", "version": "v1beta1", "resource": "workspaces"},
            "userInfo": {"username": "test"}, "object": obj, "oldObject": old, "dryRun": False}}
        req = urllib.request.Request(f"https://127.0.0.1:{port}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, context=context, timeout=10) as resp:
            return json.loads(resp.read())["response"]

    wait_for("the webhook to listen", lambda: review("validate", GOOD), timeout=30)
    return review


def test_valid_workspace_is_allowed(webhook):
    assert webhook("validate", GOOD)["allowed"] is True


def test_bad_workspace_rejected_with_field_messages(webhook):
    bad = copy.deepcopy(GOOD)
    bad["inference"]["preset"]["name"] = "mistral-7b-instruct"
    bad["inference"]["adapters"] = [{"source": {"name": "x", "image": "example.com/x:1"}, "strength": "2"}]
    resp = webhook("validate", bad)
    assert resp["allowed"] is False
    msg = resp["status"]["message"]
    assert "inference.preset.name" in msg and "kaito-preset-mistral" in msg
    assert "inference.adapters[0].strength" in msg
    assert resp["status"]["code"] == 422


def test_unknown_field_rejected_with_suggestion(webhook):
    bad = copy.deepcopy(GOOD)
    bad["resource"]["instanceTyp"] = bad["resource"].pop("instanceType")
    msg = webhook("validate", bad)["status"]["message"]
    assert "resource.instanceTyp" in msg and "instanceType" in msg


def test_immutable_fields_on_update(webhook):
    new = copy.deepcopy(GOOD)
    new["resource"]["instanceType"] = "Standard_NC48ads_A100_v4"
    resp = webhook("validate", new, old=GOOD, operation="UPDATE")
    assert resp["allowed"] is False and "resource.instanceType" in resp["status"]["message"]
    assert "immutable" in resp["status"]["message"]
    same = copy.deepcopy(GOOD)
    same["metadata"]["annotations"] = {"kaito.sh/enablelb": "True"}
    assert webhook("validate", same, old=GOOD, operation="UPDATE")["allowed"] is True


def test_gpu_memory_check(webhook):
    small = copy.deepcopy(GOOD)
    small["resource"]["instanceType"] = "Standard_NC6s_v3"
    small["inference"]["preset"] = {"name": "llama-3.1-8b-instruct", "presetOptions": {"modelAccessSecret": "hf"}}
    resp = webhook("validate", small)
    assert resp["allowed"] is False and "GiB" in resp["status"]["message"]
    small["metadata"]["annotations"] = {"kaito.sh/bypass-resource-checks": "True"}
    assert webhook("validate", small)["allowed"] is True


def test_defaulting_makes_runtime_explicit(webhook):
    resp = webhook("defaults", GOOD)
    assert resp["allowed"] is True
    patch = json.loads(base64.b64decode(resp["patch"]))
    ops = {(p["op"], p["path"]) for p in patch}
    assert ("add", "/metadata/annotations") in ops or any(p["path"].startswith("/metadata/annotations") for p in patch)
    assert any("vllm" in json.dumps(p.get("value")) for p in patch)
