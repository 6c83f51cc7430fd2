"""The operator's admission webhooks as the API server calls them: kopf registers its managed
Validating/MutatingWebhookConfiguration in the emulator, and every Workspace write is sent to
the operator over HTTPS (AdmissionReview v1, the configuration's caBundle trusted)."""

from __future__ import annotations

import copy

import pytest

from kaito_core.operator.certs import self_signed
from kaito_core.operator.kube import ApiError
from kaito_core.testing.emulator import Emulator
from tests.emulator.conftest import NAMESPACES, workspace, wait_for
from tests.emulator.operator_kit import Cluster, Operator

MANAGED = "kaito-admission"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(["127.0.0.1"])
    (d / "tls.crt").write_bytes(cert)
    (d / "tls.key").write_bytes(key)
    env = {"KAITO_WEBHOOK": "true", "KAITO_WEBHOOK_PORT": str(free_port()), "KAITO_WEBHOOK_ADDR": "127.0.0.1",
           "KAITO_WEBHOOK_HOST": "127.0.0.1", "KAITO_WEBHOOK_CERT": str(d / "tls.crt"),
           "KAITO_WEBHOOK_KEY": str(d / "tls.key"), "KAITO_WEBHOOK_MANAGED": MANAGED, "KAITO_RESYNC_SECONDS": "4"}
    with Emulator(namespaces=NAMESPACES) as emu:
        op = Operator(emu.url, d / "operator.log", env=env)
        cluster = Cluster(emu.url)
        wait_for("kopf's managed webhook configuration", lambda: cluster.get(
            "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", MANAGED).get("webhooks"), timeout=30)
        yield emu, cluster
        op.stop()


def test_webhook_configuration_trusts_the_operator_certificate(setup):
    _, cluster = setup
    config = cluster.get("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", MANAGED)
    hook = config["webhooks"][0]
    assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:") and hook["clientConfig"]["caBundle"]
    assert any("workspaces" in r["resources"] for r in hook["rules"])


def test_invalid_workspace_is_refused_by_the_operator_webhook(setup):
    emu, cluster = setup
    bad = workspace("bad", "wh1")
    bad["inference"]["preset"]["name"] = "no-such-model-anywhere"
    with pytest.raises(ApiError) as info:
        cluster.kube.create(bad)
    assert 400 <= info.value.status < 500
    assert "denied the request" in str(info.value) and "no-such-model-anywhere" in str(info.value)
    assert cluster.workspace("bad", "wh1") is None
    assert any(op == "CREATE" for _, op in emu.webhook_calls)


def test_valid_workspace_is_admitted_defaulted_and_deletable(setup):
    emu, cluster = setup
    made = cluster.kube.create(workspace("good", "wh2"))
    # the mutating webhook's JSONPatch was applied before the object was stored
    assert made["metadata"]["annotations"]["kaito.sh/runtime"] in ("vllm", "transformers")
    assert made["resource"]["count"] == 1
    wait_for("the NodeClaim", lambda: cluster.claims("good"))
    wait_for("the operator's finalizer", lambda: cluster.workspace("good", "wh2")["metadata"].get("finalizers"))
    before = len(emu.webhook_calls)
    cluster.delete("good", "wh2")
    # removing the finalizer is an UPDATE the webhook sees and must let through
    wait_for("the Workspace to go", lambda: cluster.workspace("good", "wh2") is None, timeout=30)
    assert any(op == "UPDATE" for _, op in emu.webhook_calls[before:])


def test_immutable_change_refused_on_update(setup):
    _, cluster = setup
    cluster.kube.create(workspace("imm", "wh3"))
    changed = copy.deepcopy(cluster.workspace("imm", "wh3"))
    with pytest.raises(ApiError) as info:
        cluster.kube.patch(api_version="kaito.sh/v1beta1", kind="Workspace", name="imm", namespace="wh3",
                           patch={"resource": {"instanceType": "Standard_NC96ads_A100_v4"}})
    assert 400 <= info.value.status < 500 and "denied the request" in str(info.value)
    assert "instanceType" in str(info.value)
    assert cluster.workspace("imm", "wh3")["resource"] == changed["resource"]


def test_an_older_served_version_is_admitted_by_the_same_webhook(setup):
    """matchPolicy Equivalent: kopf registers the rule for v1beta1; a v1alpha1 write is sent
    to it as v1beta1 (no admission bypass through another version)."""
    emu, cluster = setup
    bad = workspace("old-bad", "wh4")
    bad["apiVersion"] = "kaito.sh/v1alpha1"
    bad["inference"]["preset"]["name"] = "no-such-model-anywhere"
    with pytest.raises(ApiError) as info:
        cluster.kube.create(bad)
    assert "denied the request" in str(info.value) and "no-such-model-anywhere" in str(info.value)
