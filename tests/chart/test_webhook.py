"""Admission webhooks: the Service reaches the operator's webhook port, the TLS material is
consistent (self-signed at install, or cert-manager), and the rules cover every Workspace version."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.chart.conftest import NAMESPACE, one

WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def webhooks(objects):
    return [w for o in objects if o["kind"] in WEBHOOK_KINDS for w in o["webhooks"]]


def operator(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]


def test_service_reaches_the_operator_webhook_port(render):
    objects = render({"webhook": {"port": 10250}})
    spec = operator(objects)
    container = spec["containers"][0]
    port = next(p for p in container["ports"] if p["name"] == "webhook")
    assert port["containerPort"] == 10250
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KAITO_WEBHOOK_PORT"] == "10250"
    for hook in webhooks(objects):
        ref = hook["clientConfig"]["service"]
        service = one(objects, "Service", ref["name"])
        assert ref["namespace"] == NAMESPACE
        svc_port = next(p for p in service["spec"]["ports"] if p["port"] == ref["port"])
        assert svc_port["targetPort"] == "webhook"
        pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()


# The operator's admission handlers as kopf registers them (kopf serves each at /<handler id>).
# A subprocess, so KAITO_WEBHOOK is set only there and the handlers register in a fresh registry.
HANDLERS_SCRIPT = """
import json, kopf
import kaito_core.operator.handlers
reg = kopf.get_default_registry()
print(json.dumps([dict(id=h.id, reason=str(h.reason.value), operations=sorted(h.operations or []),
                       group=h.selector.group, version=h.selector.version)
                  for h in reg._webhooks.get_all_handlers()]))
"""


def operator_webhook_handlers() -> list[dict]:
    env = {**os.environ, "KAITO_WEBHOOK": "true"}
    proc = subprocess.run([sys.executable, "-c", HANDLERS_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_webhooks_match_the_operator_admission_handlers(render):
    objects = render()
    handlers = operator_webhook_handlers()
    assert {h["reason"] for h in handlers} == {"validating", "mutating"}
    for handler in handlers:
        kind = "ValidatingWebhookConfiguration" if handler["reason"] == "validating" else \
            "MutatingWebhookConfiguration"
        (hook,) = one(objects, kind)["webhooks"]
        assert hook["clientConfig"]["service"]["path"] == f"/{handler['id']}"
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == [handler["group"]]
        assert rule["apiVersions"] == [handler["version"]]
        assert sorted(rule["operations"]) == handler["operations"]
    assert len(webhooks(objects)) == len(handlers)


def test_rules_reach_every_served_workspace_version(render):
    objects = render()
    crd = one(objects, "CustomResourceDefinition")
    served = {v["name"] for v in crd["spec"]["versions"] if v["served"]}
    storage = [v["name"] for v in crd["spec"]["versions"] if v["storage"]]
    for hook in webhooks(objects):
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        # Equivalent: requests for the other served versions are converted to the listed one.
        assert hook["matchPolicy"] == "Equivalent"
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == [crd["spec"]["group"]]
        assert rule["resources"] == [crd["spec"]["names"]["plural"]]
        assert rule["apiVersions"] == storage and set(rule["apiVersions"]) <= served


def _cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def test_self_signed_certificate_is_consistent(render):
    objects = render()
    secret = one(objects, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    spec = operator(objects)
    (volume,) = [v for v in spec["volumes"] if v["name"] == "webhook-cert"]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "webhook-cert")
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert mount["readOnly"] is True
    assert env["KAITO_WEBHOOK_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["KAITO_WEBHOOK_KEY"] == f"{mount['mountPath']}/tls.key"

    ca, leaf = _cert(secret["data"]["ca.crt"]), _cert(secret["data"]["tls.crt"])
    # The serving certificate is signed by the CA the API server is told to trust ...
    ca.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(),
                           leaf.signature_hash_algorithm)
    for hook in webhooks(objects):
        assert hook["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    # ... names the Service as the API server dials it, serves TLS, and is valid now.
    service = one(objects, "Service", "kaito-webhook")["metadata"]["name"]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert f"{service}.{NAMESPACE}.svc" in names
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    now = datetime.datetime.now(datetime.timezone.utc)
    assert leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc
    assert leaf.not_valid_after_utc - now > datetime.timedelta(days=3000)
    # The key in the Secret belongs to the certificate.
    key = load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), password=None)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()


def test_cert_manager_issues_and_injects(render):
    objects = render({"webhook": {"certManager": {"enabled": True}}})
    assert not [o for o in objects if o["kind"] == "Secret"], "cert-manager writes the Secret"
    cert = one(objects, "Certificate")
    issuer = one(objects, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert cert["spec"]["issuerRef"] == {"name": issuer["metadata"]["name"], "kind": "Issuer",
                                         "group": "cert-manager.io"}
    assert f"kaito-webhook.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    (volume,) = [v for v in operator(objects)["volumes"] if v["name"] == "webhook-cert"]
    assert volume["secret"]["secretName"] == cert["spec"]["secretName"]
    for kind in WEBHOOK_KINDS:
        config = one(objects, kind)
        assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{NAMESPACE}/{cert['metadata']['name']}"
        assert "caBundle" not in config["webhooks"][0]["clientConfig"]


def test_cert_manager_with_an_existing_issuer(render):
    objects = render({"webhook": {"certManager": {"enabled": True,
                                                  "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}}}})
    assert not [o for o in objects if o["kind"] == "Issuer"]
    assert one(objects, "Certificate")["spec"]["issuerRef"]["name"] == "corp-ca"
    assert one(objects, "Certificate")["spec"]["issuerRef"]["kind"] == "ClusterIssuer"


def test_existing_secret_gives_the_same_ca_on_every_render(render):
    """Finding 7: Argo CD / Flux render without a cluster (no `lookup`): with a Secret made
    outside the chart, every render carries the same CA bundle and no generated Secret."""
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
    values = {"webhook": {"existingSecret": "kaito-tls", "caBundle": ca}}
    first, second = render.run(values), render.run(values)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    objects = render(values)
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert {h["clientConfig"]["caBundle"] for h in webhooks(objects)} == {ca}
    volumes = {v["name"]: v for v in operator(objects)["volumes"]}
    assert volumes["webhook-cert"]["secret"]["secretName"] == "kaito-tls"
    # without the bundle the render fails, naming the value to set
    proc = render.run({"webhook": {"existingSecret": "kaito-tls"}})
    assert proc.returncode != 0 and "webhook.caBundle" in proc.stderr


def test_generated_ca_changes_per_render_without_lookup(render):
    """Why the option above exists: `helm template` (no cluster) generates a new CA each time."""
    first, second = render.run({}), render.run({})
    assert first.returncode == 0 and first.stdout != second.stdout
