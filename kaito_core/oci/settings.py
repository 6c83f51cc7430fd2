"""Transfer settings in one place: plain-HTTP registries, size cap, timeouts and retries.

Environment (all optional):

- ``KAITO_INSECURE_REGISTRIES``: comma-separated ``host[:port]`` served over plain HTTP.
- ``KAITO_OCI_INSECURE=1``: every registry over plain HTTP (tests, air-gapped labs).
- ``KAITO_OCI_MAX_BYTES``: cap on what one pull downloads and unpacks (``500Mi``, ``20Gi``,
  bytes); default 256 GiB, room for a 70B model's weights and not for a runaway blob.
- ``KAITO_OCI_CONNECT_TIMEOUT`` / ``KAITO_OCI_READ_TIMEOUT``: seconds (default 5 / 60).
- ``KAITO_OCI_RETRIES``: extra attempts after a connection error, 429 or 5xx (default 2).

Loopback registries (``localhost``, ``127.0.0.0/8``, ``::1``) always use plain HTTP, as Docker does.
A registry with a private CA: point ``REQUESTS_CA_BUNDLE`` at the CA file (requests reads it).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace
from typing import Iterable

from kaito_core.oci.errors import OCIError

INSECURE_ENV = "KAITO_INSECURE_REGISTRIES"
INSECURE_ALL_ENV = "KAITO_OCI_INSECURE"
MAX_BYTES_ENV = "KAITO_OCI_MAX_BYTES"
CONNECT_TIMEOUT_ENV = "KAITO_OCI_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "KAITO_OCI_READ_TIMEOUT"
RETRIES_ENV = "KAITO_OCI_RETRIES"

DEFAULT_MAX_BYTES = 256 << 30
MAX_MANIFEST_BYTES = 4 << 20  # containerd's limit for a manifest or index
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """How one pull or push talks to the registry."""

    max_bytes: int = DEFAULT_MAX_BYTES
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    retries: int = 2


def parse_size(text: str | int, field: str = MAX_BYTES_ENV) -> int:
    """``"500Mi"``, ``"20G"``, ``"1048576"`` -> bytes; a clear error names the field otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise OCIError(f"{field}={text!r} is not a size; write bytes or a number with a unit, e.g. 500Mi or 20Gi")
        value = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if value <= 0:
        raise OCIError(f"{field}={text!r} must be more than 0 bytes, e.g. 20Gi")
    return value


def _number(name: str, default: float, *, integer: bool = False) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if value < 0 or (not integer and value == 0):
        kind = "a whole number >= 0" if integer else "a number of seconds > 0"
        raise OCIError(f"{name}={raw!r} is not {kind}; unset it for the default ({default:g})")
    return value


def limits(max_bytes: int | str | None = None) -> Limits:
    """The limits from the environment; ``max_bytes`` (the caller's own cap) wins over the env var."""
    env_cap = os.environ.get(MAX_BYTES_ENV, "").strip()
    base = Limits(max_bytes=parse_size(env_cap) if env_cap else DEFAULT_MAX_BYTES,
                  connect_timeout=_number(CONNECT_TIMEOUT_ENV, 5.0),
                  read_timeout=_number(READ_TIMEOUT_ENV, 60.0),
                  retries=int(_number(RETRIES_ENV, 2, integer=True)))
    if max_bytes is not None:
        base = replace(base, max_bytes=parse_size(max_bytes, "max_bytes"))
    return base


def _split_host(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    host = _split_host(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_insecure(registry: str, insecure: bool | Iterable[str] | None = None) -> bool:
    """Plain HTTP for ``registry``: asked for (``True`` or a list naming it), listed in
    ``KAITO_INSECURE_REGISTRIES``, ``KAITO_OCI_INSECURE=1``, or a loopback registry."""
    if insecure is True:
        return True
    if os.environ.get(INSECURE_ALL_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    listed = {r.strip() for r in os.environ.get(INSECURE_ENV, "").split(",") if r.strip()}
    if insecure and not isinstance(insecure, (bool, str)):
        listed |= {str(r).strip() for r in insecure if str(r).strip()}
    elif isinstance(insecure, str) and insecure.strip():
        listed |= {r.strip() for r in insecure.split(",") if r.strip()}
    host = _split_host(registry)
    return registry in listed or host in listed or is_loopback(registry)
