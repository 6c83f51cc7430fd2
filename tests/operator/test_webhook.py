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
                          "KAITO_WEBHOOK_KEY": str(d / "tls.key"), "KAITO_ALLOWED_PROVISIONERS": "byo"})
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
    bad["inference"]["preset"]["name"] = "no-such-model-7b"
    bad["inference"]["adapters"] = [{"source": {"name": "x", "image": "example.com/x:1"}, "strength": "2"}]
    resp = webhook("validate", bad)
    assert resp["allowed"] is False
    msg = resp["status"]["message"]
    assert "inference.preset.name" in msg and "is not a known preset" in msg
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


# -- UPDATE: only immutable and changed fields (upstream's validateUpdate) ---------------------


def _gone_plugin() -> dict:
    """A Workspace whose preset's plugin has since been uninstalled or blocked."""
    ws = copy.deepcopy(GOOD)
    ws["metadata"]["name"] = "orphan"
    ws["inference"]["preset"]["name"] = "no-such-model-7b"
    ws["metadata"]["finalizers"] = ["workspace.finalizer.kaito.sh"]
    return ws


def test_update_finalizer_removal_passes_when_the_plugin_is_gone(webhook):
    old = _gone_plugin()
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    assert webhook("validate", new, old=old, operation="UPDATE")["allowed"] is True
    # the same object on CREATE is refused: the preset is unknown (so the test can fail)
    assert webhook("validate", old)["allowed"] is False


def test_update_of_a_workspace_being_deleted_always_passes(webhook):
    old = _gone_plugin()
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    new["inference"]["adapters"] = [{"source": {"name": "x", "image": "example.com/x:1"}, "strength": "9"}]
    assert webhook("validate", new, old=old, operation="UPDATE")["allowed"] is True


def test_metadata_update_passes_when_sizing_no_longer_fits(webhook):
    old = copy.deepcopy(GOOD)
    old["resource"]["instanceType"] = "Standard_NC6s_v3"  # 16 GiB: too small for llama-3.1-8b
    old["inference"]["preset"] = {"name": "llama-3.1-8b-instruct", "presetOptions": {"modelAccessSecret": "hf"}}
    assert webhook("validate", old)["allowed"] is False
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "ml"}
    new["metadata"]["annotations"] = {"example.com/owner": "me"}
    assert webhook("validate", new, old=old, operation="UPDATE")["allowed"] is True


def test_update_checks_the_changed_fields(webhook):
    old = _gone_plugin()
    new = copy.deepcopy(old)
    new["inference"]["adapters"] = [{"source": {"name": "x", "image": "example.com/x:1"}, "strength": "2"}]
    resp = webhook("validate", new, old=old, operation="UPDATE")
    assert resp["allowed"] is False
    msg = resp["status"]["message"]
    # the changed field is named; the unchanged (unknown) preset is not held against the update
    assert "inference.adapters[0].strength" in msg and "inference.preset.name" not in msg


def test_update_cannot_change_the_preset(webhook):
    new = copy.deepcopy(GOOD)
    new["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"
    resp = webhook("validate", new, old=GOOD, operation="UPDATE")
    assert resp["allowed"] is False and "inference.preset.name" in resp["status"]["message"]
    assert "immutable" in resp["status"]["message"]


# -- the admin's policy -------------------------------------------------------------------------


def test_provisioner_annotation_only_among_allowed(webhook):
    ws = copy.deepcopy(GOOD)
    ws["metadata"]["annotations"] = {"kaito.sh/provisioner": "byo"}  # KAITO_ALLOWED_PROVISIONERS=byo
    assert webhook("validate", ws)["allowed"] is True
    ws["metadata"]["annotations"] = {"kaito.sh/provisioner": "aks"}
    resp = webhook("validate", ws)
    assert resp["allowed"] is False
    msg = resp["status"]["message"]
    assert "kaito.sh/provisioner" in msg and "'aks'" in msg and "allowedProvisioners" in msg
    # and on update the annotation cannot change at all: the nodes were made by the old one
    allowed = copy.deepcopy(GOOD)
    allowed["metadata"]["annotations"] = {"kaito.sh/provisioner": "byo"}
    resp = webhook("validate", allowed, old=GOOD, operation="UPDATE")
    assert resp["allowed"] is False and "immutable" in resp["status"]["message"]


def test_templates_and_host_path_refused_unless_the_admin_allows(webhook):
    ws = copy.deepcopy(GOOD)
    ws["inference"] = {"template": {"spec": {"containers": [{"name": "c", "image": "example.com/c:1"}],
                                             "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}}
    msg = webhook("validate", ws)["status"]["message"]
    assert "inference.template: custom pod templates are disabled" in msg and "allowTemplates" in msg
    assert "inference.template.spec.volumes[0].hostPath" in msg and "allowHostPath" in msg
    ws = copy.deepcopy(GOOD)
    ws["inference"]["adapters"] = [{"source": {"name": "a", "volumeSource": {"hostPath": {"path": "/etc"}}}}]
    msg = webhook("validate", ws)["status"]["message"]
    assert "inference.adapters[0].source.volumeSource.hostPath" in msg


# -- the one planner's verdict, with the Workspace's ConfigMaps (issues 12, 13) -----------------


def _params(cluster, name: str, tp: int) -> None:
    cluster.kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "hooks"},
                         "data": {"inference_config.yaml": f"vllm:\n  tensor-parallel-size: {tp}\n"}})


def test_configmap_tensor_parallel_larger_than_the_node_is_refused(webhook, cluster):
    """A user ConfigMap asking vllm tensor-parallel-size 4 on a 1-GPU node is refused at
    admission, naming the field; TP 1 in the same place is accepted."""
    _params(cluster, "tp4-params", 4)
    _params(cluster, "tp1-params", 1)
    ws = copy.deepcopy(GOOD)
    ws["inference"]["config"] = "tp4-params"
    resp = webhook("validate", ws)
    assert resp["allowed"] is False, resp
    msg = resp["status"]["message"]
    assert "inference.config" in msg and "tensor-parallel-size 4" in msg and "at most 1" in msg
    ws["inference"]["config"] = "tp1-params"
    assert webhook("validate", ws)["allowed"] is True
    # a spec update that points at the bad ConfigMap is refused too
    resp = webhook("validate", {**ws, "inference": {**ws["inference"], "config": "tp4-params"}}, old=ws,
                   operation="UPDATE")
    assert resp["allowed"] is False and "tensor-parallel-size 4" in resp["status"]["message"]


def test_missing_configmap_is_a_warning_not_a_refusal(webhook):
    ws = copy.deepcopy(GOOD)
    ws["inference"]["config"] = "not-yet-created"
    resp = webhook("validate", ws)
    assert resp["allowed"] is True
    assert any("not-yet-created" in w for w in resp.get("warnings") or []), resp


def _falcon(strength: str | None) -> dict:
    ws = copy.deepcopy(GOOD)
    ws["metadata"]["name"] = "falcon-adapter"
    ws["inference"]["preset"] = {"name": "falcon-7b-instruct"}
    if strength is not None:
        ws["inference"]["adapters"] = [{"source": {"name": "a1", "image": "example.com/a1:1"}, "strength": strength}]
    return ws


def test_falcon_adapter_on_vllm_is_refused(webhook):
    """Upstream refuses LoRA on falcon under vLLM and strengths below 1 at admission; before,
    it passed and the pod crash-looped."""
    assert webhook("validate", _falcon(None))["allowed"] is True
    resp = webhook("validate", _falcon("0.2"))
    assert resp["allowed"] is False, resp
    msg = resp["status"]["message"]
    assert "inference.adapters[0].strength" in msg and "'0.2'" in msg and "kaito.sh/runtime" in msg
    # on UPDATE: adding the adapter is refused; a metadata change of the same object passes
    resp = webhook("validate", _falcon("0.2"), old=_falcon(None), operation="UPDATE")
    assert resp["allowed"] is False and "inference.adapters" in resp["status"]["message"]
    labelled = _falcon("0.2")
    labelled["metadata"]["labels"] = {"team": "ml"}
    assert webhook("validate", labelled, old=_falcon("0.2"), operation="UPDATE")["allowed"] is True
