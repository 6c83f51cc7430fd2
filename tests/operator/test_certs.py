"""Finding 7 (issue 16): the operator serves a renewed webhook certificate without a restart
(the mounted Secret's files change; kopf re-reads them every KAITO_WEBHOOK_CERT_CHECK_SECONDS)."""

from __future__ import annotations

import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from kaito_core.operator.certs import self_signed
from tests.operator.conftest import free_port, wait_for


def _served(port: int) -> bytes:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256())


def test_renewed_certificate_is_served_without_a_restart(operator_factory, tmp_path):
    cert, key = self_signed(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    (tmp_path / "ca.crt").write_bytes(cert)
    port = free_port()
    proc, _ = operator_factory(env={
        "KAITO_WEBHOOK": "true", "KAITO_WEBHOOK_PORT": str(port), "KAITO_WEBHOOK_ADDR": "127.0.0.1",
        "KAITO_WEBHOOK_HOST": "127.0.0.1", "KAITO_WEBHOOK_CERT": str(tmp_path / "tls.crt"),
        "KAITO_WEBHOOK_KEY": str(tmp_path / "tls.key"), "KAITO_WEBHOOK_CERT_CHECK_SECONDS": "0.5"})
    first = wait_for("the webhook to serve", lambda: _served(port), timeout=30)
    assert first == x509.load_pem_x509_certificate(cert).fingerprint(hashes.SHA256())

    renewed, renewed_key = self_signed(["127.0.0.1"])  # what cert-manager writes into the Secret
    (tmp_path / "tls.key").write_bytes(renewed_key)
    (tmp_path / "tls.crt").write_bytes(renewed)
    (tmp_path / "ca.crt").write_bytes(renewed)
    want = x509.load_pem_x509_certificate(renewed).fingerprint(hashes.SHA256())
    wait_for("the renewed certificate to be served", lambda: _served(port) == want, timeout=20)
    assert proc.poll() is None  # the same process
