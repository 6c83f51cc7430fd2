"""LoRA adapters as OCI artifacts (oras-py): :func:`pull_adapter` and :func:`push_adapter`.

Upstream KAITO pushes a tuning result (``adapter_config.json`` + ``adapter_model.safetensors``)
to a registry and serves it from there. :func:`push_adapter` writes one layer per file, named by
the ``org.opencontainers.image.title`` annotation (what ``oras push dir/*`` does);
:func:`pull_adapter` also accepts artifacts whose layer is a whole directory (``oras push dir``)
and leaves the adapter files directly under ``dest``. Plain HTTP is used for loopback
registries and when ``KAITO_OCI_INSECURE=1``; credentials come from ``KAITO_OCI_USERNAME`` /
``KAITO_OCI_PASSWORD`` or the Docker config (``~/.docker/config.json``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from kaito_core.errors import KaitoError

ADAPTER_MEDIA_TYPE = "application/vnd.kaito.adapter.layer.v1"
ADAPTER_ARTIFACT_TYPE = "application/vnd.kaito.adapter.v1+json"
_REF = re.compile(r"^(?P<host>[A-Za-z0-9.-]+(:[0-9]+)?)/(?P<repo>[a-z0-9]+([._/-][a-z0-9]+)*)"
                  r"(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))?$")


class OCIError(KaitoError, RuntimeError):
    """Pulling or pushing an artifact failed; the message names the reference."""


def looks_like_reference(text: str) -> bool:
    """``registry.io/repo/name:tag`` or ``host:port/repo@sha256:...`` (a registry host is required)."""
    m = _REF.match(text)
    if not m:
        return False
    host = m.group("host")
    return "." in host or ":" in host or host == "localhost"


def _insecure(host: str) -> bool:
    if os.environ.get("KAITO_OCI_INSECURE", "").lower() in ("1", "true", "yes"):
        return True
    name = host.rsplit(":", 1)[0]
    return name in ("localhost", "127.0.0.1", "::1") or name.startswith("127.")


def _client(ref: str):
    try:
        import oras.client
    except ImportError as exc:  # pragma: no cover - oras is in the runtime extra
        raise OCIError("oras-py is not installed: pip install 'kaito-core[runtime]'") from exc
    m = _REF.match(ref)
    if not m:
        raise OCIError(f"{ref!r} is not an OCI reference; expected REGISTRY/REPOSITORY[:TAG|@sha256:DIGEST]")
    host = m.group("host")
    client = oras.client.OrasClient(hostname=host, insecure=_insecure(host))
    user, password = os.environ.get("KAITO_OCI_USERNAME"), os.environ.get("KAITO_OCI_PASSWORD")
    if user and password:
        client.set_basic_auth(user, password)
    return client


def pull_adapter(ref: str, dest: str | os.PathLike) -> Path:
    """Pull the adapter at ``ref`` into directory ``dest`` (created) and return ``dest``.

    ``dest`` ends up holding ``adapter_config.json`` and the weights, whatever the artifact's
    layout (one layer per file, or one directory layer).
    """
    dest = Path(dest)
    client = _client(ref)
    with tempfile.TemporaryDirectory(prefix="kaito-pull-") as tmp:
        try:
            client.pull(target=ref, outdir=tmp)
        except Exception as exc:  # noqa: BLE001 - oras raises many types; say which reference failed
            raise OCIError(f"cannot pull adapter {ref!r}: {type(exc).__name__}: {exc}") from exc
        root = Path(tmp)
        found = sorted(p.parent for p in root.rglob("adapter_config.json"))
        if not found:
            names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())[:10]
            raise OCIError(f"artifact {ref!r} holds no adapter_config.json (files: {names}); "
                           "is it a LoRA adapter pushed by kaito tuning or 'oras push'?")
        src = found[0]
        dest.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            target = dest / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), str(target))
    return dest


def push_adapter(src: str | os.PathLike, ref: str) -> str:
    """Push the adapter directory ``src`` to ``ref`` (one layer per file); return the manifest digest."""
    src = Path(src)
    if not (src / "adapter_config.json").is_file():
        raise OCIError(f"{str(src)!r} is not an adapter directory: adapter_config.json is missing")
    files = sorted(p for p in src.iterdir() if p.is_file())
    client = _client(ref)
    try:
        # oras-py titles each layer with the file's base name, so absolute paths are fine
        resp = client.push(target=ref, files=[f"{p}:{ADAPTER_MEDIA_TYPE}" for p in files],
                           disable_path_validation=True, quiet=True)
    except Exception as exc:  # noqa: BLE001
        raise OCIError(f"cannot push adapter {str(src)!r} to {ref!r}: {type(exc).__name__}: {exc}") from exc
    return resp.headers.get("Docker-Content-Digest", "")
