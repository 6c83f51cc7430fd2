"""Build and push test images with plain HTTP calls (not kaito's client), the way other tools
lay them out: upstream KAITO's pusher.sh, ``docker build`` (docker v2 media types, several
layers, whiteouts), image indexes; and hostile tars (traversal, outside links) for refusal tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass

import requests

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_TGZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass
class M:
    """One tar member: a file (data), a directory, a symlink or hardlink (link), or a device."""

    name: str
    data: bytes = b""
    kind: str = "file"   # file | dir | symlink | hardlink | chr | fifo
    link: str = ""


def tar(members: list[M], *, gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.mode = 0o755 if m.kind == "dir" else 0o644
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[m.kind]
            info.linkname = m.link
            info.size = len(m.data) if m.kind == "file" else 0
            t.addfile(info, io.BytesIO(m.data) if m.kind == "file" else None)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(host: str, repo: str, data: bytes) -> dict:
    start = requests.post(f"http://{host}/v2/{repo}/blobs/uploads/", timeout=10)
    assert start.status_code == 202, start.text
    loc = start.headers["Location"]
    loc = loc if "://" in loc else f"http://{host}{loc}"
    sep = "&" if "?" in loc else "?"
    done = requests.put(f"{loc}{sep}digest={digest(data)}", data=data, timeout=10,
                        headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return {"digest": digest(data), "size": len(data)}


def put_manifest(host: str, repo: str, tag: str, manifest: dict, media: str) -> str:
    body = json.dumps(manifest).encode()
    resp = requests.put(f"http://{host}/v2/{repo}/manifests/{tag}", data=body, timeout=10,
                        headers={"Content-Type": media})
    assert resp.status_code == 201, resp.text
    return digest(body)


def push_image(host: str, repo: str, tag: str, layers: list[bytes], *, docker: bool = False,
               titles: list[str] | None = None, config: dict | None = None) -> str:
    """An image whose layers are tar(+gzip) diffs; ``docker`` uses docker v2 media types (what
    ``docker push`` of a ``docker build`` writes). Returns the manifest digest."""
    layer_media = DOCKER_TGZ if docker else OCI_TGZ
    descs = []
    for i, data in enumerate(layers):
        d = {"mediaType": layer_media, **push_blob(host, repo, data)}
        if titles:
            d["annotations"] = {"org.opencontainers.image.title": titles[i]}
        descs.append(d)
    diff_ids = [digest(gzip.decompress(data)) for data in layers]
    cfg = config if config is not None else {"rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cfg_desc = {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, **push_blob(host, repo, json.dumps(cfg).encode())}
    media = DOCKER_MANIFEST if docker else OCI_MANIFEST
    return put_manifest(host, repo, tag, {"schemaVersion": 2, "mediaType": media, "config": cfg_desc,
                                          "layers": descs}, media)


def push_upstream_adapter(host: str, repo: str, tag: str, config: bytes, weights: bytes) -> str:
    """What upstream KAITO's pusher.sh pushes: tar of data/{adapter_config.json,adapter_model.safetensors},
    gzip, oras push with title layer.tar.gz, config with rootfs.diff_ids only."""
    layer = tar([M("data", kind="dir"), M("data/adapter_config.json", config),
                 M("data/adapter_model.safetensors", weights)])
    return push_image(host, repo, tag, [layer], titles=["layer.tar.gz"],
                      config={"rootfs": {"diff_ids": [digest(gzip.decompress(layer))]}})


def push_index(host: str, repo: str, tag: str, entries: list[tuple[str, str, str]]) -> str:
    """An image index over already-pushed manifests: (digest, os, architecture)."""
    manifests = []
    for d, os_, arch in entries:
        size = len(requests.get(f"http://{host}/v2/{repo}/manifests/{d}", timeout=10,
                                headers={"Accept": OCI_MANIFEST + ", " + DOCKER_MANIFEST}).content)
        manifests.append({"mediaType": OCI_MANIFEST, "digest": d, "size": size,
                          "platform": {"os": os_, "architecture": arch}})
    return put_manifest(host, repo, tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                        OCI_INDEX)


def manifest(host: str, repo: str, ref: str) -> dict:
    return requests.get(f"http://{host}/v2/{repo}/manifests/{ref}", timeout=10,
                        headers={"Accept": ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX))}).json()
