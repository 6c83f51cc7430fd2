"""The two artifact layouts kaito reads, and how to tell them apart from a manifest.

- **image** (upstream KAITO's adapter images, ``docker build`` data images): the config is an
  image config and every layer is a tar(+gzip) filesystem diff; the payload is the ``/data``
  folder of the stacked layers (upstream's puller.sh: ``skopeo copy`` + ``tar x`` each layer +
  ``mv rootfs/data VOL_DIR``; its adapter spec: ``/data/adapter_config.json`` and
  ``/data/adapter_model.safetensors``).
- **files** (ORAS artifacts, ``oras push REF file...``; kaito's older adapter and weights
  artifacts): each layer is one file, named by its ``org.opencontainers.image.title``
  annotation; a tar+gzip layer marked ``io.deis.oras.content.unpack`` is a directory.
"""

from __future__ import annotations

import platform
from typing import Any

from kaito_core.oci.errors import OCIError

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
IMAGE_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json",
                      "application/vnd.docker.container.image.v1+json")
TAR_LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar",
                   "application/vnd.oci.image.layer.v1.tar+gzip",
                   "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                   "application/vnd.docker.image.rootfs.diff.tar.gzip",
                   "application/vnd.docker.image.rootfs.diff.tar")
DATA_DIR = "data"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def is_image(manifest: dict[str, Any]) -> bool:
    """An image (layers are filesystem diffs), not an ORAS file artifact."""
    config = (manifest.get("config") or {}).get("mediaType", "")
    layers = manifest.get("layers") or []
    return config in IMAGE_CONFIG_TYPES and bool(layers) and all(
        layer.get("mediaType") in TAR_LAYER_TYPES for layer in layers)


def is_dir_layer(layer: dict[str, Any]) -> bool:
    ann = layer.get("annotations") or {}
    return str(ann.get(UNPACK, "")).lower() == "true" or (
        layer.get("mediaType") == "application/vnd.oci.image.layer.v1.tar+gzip" and TITLE in ann)


def pick_platform(index: dict[str, Any], what: str) -> dict[str, Any]:
    """The index entry for linux on this machine's architecture (or the only entry)."""
    entries = [m for m in index.get("manifests") or []
               if (m.get("platform") or {}).get("os", "linux") != "unknown"]  # skip attestation entries
    if len(entries) == 1:
        return entries[0]
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    for m in entries:
        plat = m.get("platform") or {}
        if plat.get("os", "linux") == "linux" and plat.get("architecture") == arch:
            return m
    found = sorted(f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}"
                   for m in entries)
    raise OCIError(f"cannot pull {what}: the image index has no linux/{arch} entry (it has {found}); push a "
                   "platform-independent image (no index), as upstream KAITO's adapter image spec asks")


def check_manifest(manifest: dict[str, Any], what: str) -> list[dict[str, Any]]:
    """The layer descriptors, each with a sha256 digest and a non-negative int size."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise OCIError(f"cannot pull {what}: the manifest has no layers")
    for layer in layers:
        size = layer.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OCIError(f"cannot pull {what}: layer {layer.get('digest')} has no valid size ({size!r})")
    return layers
