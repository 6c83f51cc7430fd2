"""Finding 2 (issue 16) end to end: the API emulator calls the operator's own webhook (HTTPS,
trusting the caBundle) for every Workspace write, the operator's included. A Workspace whose
preset plugin has since been disabled must still lose its finalizer and go."""

from __future__ import annotations

import base64
import copy
import ssl

import pytest

from kaito_core.operator.certs import self_signed
from kaito_core.testing.emulator import start_operator, stop_operator
from kaito_core.operator.kube import ApiError
from tests.operator.conftest import Cluster, cluster_emulator, free_port, wait_for
from tests.operator.test_flow import NS, _workspace


def _hooks(port: int, ca: bytes) -> list[dict]:
    bundle = base64.b64encode(ca).decode()
    rules = [{"apiGroups": ["kaito.sh"], "apiVersions": ["*"], "resources": ["workspaces"],
              "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}]
    out = []
    for kind, name, path in (("ValidatingWebhookConfiguration", "validation.workspace.kaito.sh", "validate"),
                             ("MutatingWebhookConfiguration", "mutation.workspace.kaito.sh", "defaults")):
        out.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name},
                    "webhooks": [{"name": name, "failurePolicy": "Fail", "sideEffects": "None",
                                  "admissionReviewVersions": ["v1"], "timeoutSeconds": 10, "rules": rules,
                                  "clientConfig": {"url": f"https://127.0.0.1:{port}/{path}", "caBundle": bundle}}]})
    return out


def test_finalizer_removal_passes_our_webhook_after_the_plugin_is_gone(tmp_path):
    cert, key = self_signed(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    port = free_port()
    env = {"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "30", "KAITO_DELETE_GRACE_SECONDS": "5",
           "KAITO_WEBHOOK": "true", "KAITO_WEBHOOK_PORT": str(port), "KAITO_WEBHOOK_ADDR": "127.0.0.1",
           "KAITO_WEBHOOK_HOST": "127.0.0.1", "KAITO_WEBHOOK_CERT": str(tmp_path / "tls.crt"),
           "KAITO_WEBHOOK_KEY": str(tmp_path / "tls.key")}
    log = tmp_path / "operator.log"

    def started(times: int) -> None:
        wait_for("the operator", lambda: log.read_text(errors="replace").count("kaito operator: provisioner=") >= times,
                 timeout=30)
        wait_for("the webhook to listen", lambda: ssl.get_server_certificate(("127.0.0.1", port), timeout=2))

    with cluster_emulator() as emu:
        cluster = Cluster(emu.url)
        proc = start_operator(emu.url, env=env, log_path=str(log))
        try:
            started(1)
            for hook in _hooks(port, cert):
                cluster.kube.create(hook)
            bad = copy.deepcopy(_workspace("refused"))
            bad["inference"]["preset"]["name"] = "no-such-model-7b"
            with pytest.raises(ApiError) as err:  # the webhook is in the path
                cluster.create_workspace(bad)
            assert "no-such-model-7b" in str(err.value.body)
            created = cluster.create_workspace(_workspace("orphan"))
            assert created["metadata"]["annotations"]["kaito.sh/runtime"]  # the defaulting webhook ran
            wait_for("a NodeClaim", lambda: cluster.nodeclaims("orphan"), timeout=30)
        finally:
            stop_operator(proc)
        # the preset's plugin goes away (uninstalled, or blocked by the admin)
        proc = start_operator(emu.url, env={**env, "KAITO_DISABLE_PLUGINS": "phi3"}, log_path=str(log))
        try:
            started(2)
            before = len(emu.webhook_calls)
            cluster.kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name="orphan", namespace=NS)
            wait_for("the Workspace to go through our own webhook", lambda: cluster.workspace("orphan", NS) is None,
                     timeout=30)
            assert cluster.nodeclaims("orphan") == []
            assert [c for c in emu.webhook_calls[before:] if c[1] == "UPDATE"], "the finalizer removal was reviewed"
        finally:
            stop_operator(proc)
