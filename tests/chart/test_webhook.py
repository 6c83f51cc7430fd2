"""Admission webhooks: the Service reaches the operator's webhook port, the TLS material is
consistent (self-signed at install, or cert-manager), and the rules cover every Workspace version."""

from __future__ import annotations

import base64
import datetime

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
    assert {h["clientConfig"]["service"]["path"] for h in webhooks(objects)} == {"/validate-workspace",
                                                                                  "/mutate-workspace"}


def test_rules_cover_every_served_workspace_version(render):
    objects = render()
    crd = one(objects, "CustomResourceDefinition")
    served = sorted(v["name"] for v in crd["spec"]["versions"] if v["served"])
    for hook in webhooks(objects):
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == [crd["spec"]["group"]]
        assert rule["resources"] == [crd["spec"]["names"]["plural"]]
        assert sorted(rule["apiVersions"]) == served
        assert set(rule["operations"]) == {"CREATE", "UPDATE"}


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
