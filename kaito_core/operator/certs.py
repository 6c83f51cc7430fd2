"""The admission webhook's HTTPS server: a given certificate (e.g. cert-manager's Secret),
or a self-signed one made at start (its CA goes into the managed webhook configuration)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from typing import Any

from kaito_core.operator.settings import Settings, SettingsError


def self_signed(hostnames: list[str], days: int = 3650) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) valid for ``hostnames`` (DNS names or IPs)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise SettingsError("the webhook needs a TLS certificate: set KAITO_WEBHOOK_CERT/KAITO_WEBHOOK_KEY, or "
                            "install 'cryptography' to have one generated") from None
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0][:64])])
    sans: list[Any] = []
    for h in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem


def _write(data: bytes, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix="kaito-webhook-", suffix=suffix)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


def webhook_server(cfg: Settings) -> Any:
    import kopf

    host = cfg.webhook_host or None
    if cfg.webhook_insecure:
        return kopf.WebhookServer(addr=cfg.webhook_addr, port=cfg.webhook_port, host=host, insecure=True)
    if cfg.webhook_cert:
        # kopf re-reads certfile/pkeyfile (and cafile) every file_check_interval and restarts
        # its HTTPS server when their content changes: a renewed Secret (cert-manager, or a
        # GitOps-managed one) is served without restarting the operator. A ca.crt beside the
        # certificate (the chart's and cert-manager's Secrets have one) is the bundle kopf puts
        # into webhook configurations it manages.
        ca = os.path.join(os.path.dirname(cfg.webhook_cert), "ca.crt")
        cafile = ca if os.path.isfile(ca) else None
        cadata = None
        if cafile is None:
            with open(cfg.webhook_cert, "rb") as fh:
                cadata = fh.read()
        return kopf.WebhookServer(addr=cfg.webhook_addr, port=cfg.webhook_port, host=host,
                                  certfile=cfg.webhook_cert, pkeyfile=cfg.webhook_key, cadata=cadata, cafile=cafile,
                                  file_check_interval=cfg.webhook_cert_check_seconds)
    names = [n for n in [cfg.webhook_host, "localhost", "127.0.0.1"] if n]
    cert, key = self_signed(names)
    return kopf.WebhookServer(addr=cfg.webhook_addr, port=cfg.webhook_port, host=host,
                              certfile=_write(cert, ".crt"), pkeyfile=_write(key, ".key"), cadata=cert)
