"""Pushes: upstream KAITO's adapter image layout (what its puller and containerd read), and
ORAS-style titled files.

:func:`push_data_image` follows upstream's ``pusher.sh``: one layer, the tar of ``data/<files>``
gzip-compressed (``application/vnd.oci.image.layer.v1.tar+gzip``, titled ``layer.tar.gz`` as
``oras push`` titles it); an image config with ``rootfs.diff_ids`` (the uncompressed tar's
digest, which containerd needs) and no ``os``/``architecture`` (a platform-independent image);
no image index. The tar and gzip carry no timestamps or owners, so the same files give the same
digest. ``tar xzf`` of the layer, or ``oras pull`` + ``tar xzf``, gives upstream's layout.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterable

from kaito_core.oci import layout
from kaito_core.oci.client import OCI_MANIFEST, Registry, sha256_of
from kaito_core.oci.errors import OCIError
from kaito_core.oci.pull import open_registry
from kaito_core.oci.reference import parse_reference

LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
LAYER_TITLE = "layer.tar.gz"


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through to ``sink`` (the tar's diff_id before gzip)."""

    def __init__(self, sink: Any):
        self.sink, self.h, self.n = sink, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.n

    def write(self, b: Any) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.sink.write(b)


def build_data_layer(src: Path, names: Iterable[str], out: Path) -> str:
    """Write ``out`` = gzip(tar of ``data/`` + ``names`` from ``src``); return the tar's diff_id."""
    # Level 1, not pusher.sh's -9: weights barely compress, and -9 costs several times the CPU time.
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=1) as gz:
        hashing = _HashingWriter(gz)
        with tarfile.open(fileobj=hashing, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in [layout.DATA_DIR] + [f"{layout.DATA_DIR}/{n}" for n in names]:
                path = src if name == layout.DATA_DIR else src / name.split("/", 1)[1]
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                info.mode = 0o755 if info.isdir() else 0o644
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return "sha256:" + hashing.h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _upload_file(client: Registry, path: Path) -> dict[str, Any]:
    digest, size = _file_digest(path), path.stat().st_size
    client.push_blob(digest, size, lambda: open(path, "rb"))
    return {"digest": digest, "size": size}


def _upload_bytes(client: Registry, data: bytes) -> dict[str, Any]:
    digest = sha256_of(data)
    client.push_blob(digest, len(data), lambda: data)
    return {"digest": digest, "size": len(data)}


def _finish(client: Registry, config: dict, layers: list[dict], annotations: dict[str, str] | None) -> str:
    manifest: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    if annotations:
        manifest["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return client.put_manifest(body, OCI_MANIFEST, client.ref.tag or "latest")


def _target(ref: str, what: str, **kwargs: Any) -> Registry:
    r = parse_reference(ref, what)
    if r.digest:
        raise OCIError(f"{what} {ref!r}: push to a tag, not a digest (the digest is known once pushed)")
    client = open_registry(r, push=True, **kwargs)
    client.check()
    return client


def push_data_image(src: str | os.PathLike, ref: str, *, names: Iterable[str] | None = None,
                    labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
                    docker_configs: Iterable = (), insecure: bool | Iterable[str] | None = None,
                    what: str = "image") -> str:
    """Push the files of directory ``src`` (or just ``names``) as upstream's ``/data`` image;
    return the manifest digest."""
    src = Path(src)
    chosen = sorted(names) if names is not None else sorted(p.name for p in src.iterdir() if p.is_file())
    missing = [n for n in chosen if not (src / n).is_file()]
    if missing or not chosen:
        raise OCIError(f"cannot push {src} to {ref}: {'no files' if not chosen else f'missing {missing}'}")
    client = _target(ref, what, docker_configs=docker_configs, insecure=insecure)
    with tempfile.TemporaryDirectory(prefix="kaito-push-") as tmp:
        blob = Path(tmp) / LAYER_TITLE
        diff_id = build_data_layer(src, chosen, blob)
        layer = {"mediaType": LAYER_TYPE, **_upload_file(client, blob), "annotations": {layout.TITLE: LAYER_TITLE}}
    cfg: dict[str, Any] = {"rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    if labels:
        cfg["config"] = {"Labels": {str(k): str(v) for k, v in labels.items()}}
    config = {"mediaType": CONFIG_TYPE, **_upload_bytes(client, json.dumps(cfg, sort_keys=True).encode())}
    return _finish(client, config, [layer], annotations)


def push_files(files: Iterable[tuple[str | os.PathLike, str]], ref: str, *,
               config: tuple[bytes, str] | None = None, annotations: dict[str, str] | None = None,
               docker_configs: Iterable = (), insecure: bool | Iterable[str] | None = None,
               what: str = "image") -> str:
    """Push ``(path, media type)`` pairs as ORAS titled layers (``oras push REF file...``);
    return the manifest digest."""
    client = _target(ref, what, docker_configs=docker_configs, insecure=insecure)
    layers = []
    for path, media in files:
        p = Path(path)
        layers.append({"mediaType": media, **_upload_file(client, p), "annotations": {layout.TITLE: p.name}})
    body, media = config or (b"{}", EMPTY_CONFIG_TYPE)
    return _finish(client, {"mediaType": media, **_upload_bytes(client, body)}, layers, annotations)
