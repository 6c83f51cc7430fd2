"""Refuse URLs that point inside the cluster or at a cloud's metadata service (SSRF guard).

Upstream's webhook rejects tuning input URLs to localhost, private, link-local and metadata
addresses; the tuning downloader checks again after DNS resolution. Tests that serve data from
127.0.0.1 opt in with ``allow_private=True`` (or ``KAITO_ALLOW_PRIVATE_URLS=1`` for the operator).
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

ALLOW_ENV = "KAITO_ALLOW_PRIVATE_URLS"
METADATA_HOSTS = {"metadata.google.internal", "metadata", "metadata.azure.com", "instance-data"}
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def allow_private_from_env() -> bool:
    return os.environ.get(ALLOW_ENV, "").lower() in ("1", "true", "yes")


def address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        return "is a cloud metadata address"
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address"
    if ip.is_private or ip.is_reserved or ip.is_unspecified or ip.is_multicast:
        return "is a private or reserved address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"):
        return "is a carrier-grade NAT (shared) address"
    return None


def url_problem(url: str, *, allow_private: bool = False) -> str | None:
    """Why ``url`` may not be fetched, or None. Checks the scheme and literal hosts only."""
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in url):
        # browsers and some HTTP clients read "\\" as "/" and drop control characters, so the
        # host they reach is not the one parsed here
        return "contains whitespace, control characters or a backslash"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.username is not None or parts.password is not None:
        return "carries credentials (user@host); use a Secret, not the URL"
    if parts.scheme not in ("http", "https"):
        return f"must use http or https, not {parts.scheme or 'no scheme'!r}"
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        return "has no host"
    if allow_private:
        return None
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return f"points to {host!r}, a loopback name"
    if host in METADATA_HOSTS:
        return f"points to {host!r}, a cloud metadata service"
    if host.endswith(".svc") or ".svc.cluster.local" in host or host.endswith(".cluster.local"):
        return f"points to {host!r}, an in-cluster service"
    ip = _literal_address(host)
    if ip is None:
        return None
    problem = address_problem(ip)
    return f"points to {host}, which {problem}" if problem else None


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a literal host means, in any form resolvers accept: dotted, decimal
    ("2130706433"), hex ("0x7f000001"), octal ("0177.0.0.1"), short ("127.1")."""
    import socket

    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not all(c in "0123456789abcdefx." for c in host) or not any(c.isdigit() for c in host):
        return None
    try:
        return ipaddress.ip_address(int(host, 0))
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # inet_aton: the legacy forms
    except OSError:
        return None
