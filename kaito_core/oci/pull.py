"""Verified pulls: every blob checked against its digest, ``@sha256`` pins honoured, a size cap,
safe tar extraction, and nothing half-written left in the target.

The artifact is staged in a hidden directory inside ``dest`` (same filesystem, so the final
step is a rename per top-level entry); on any failure the staging directory goes, and ``dest``
too when this pull created it. One pull per directory at a time: a pull clears staging
directories that a killed pull left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from kaito_core.oci import credentials, layout, settings
from kaito_core.oci.client import DOCKER_LIST, OCI_INDEX, Registry
from kaito_core.oci.errors import OCIError, UnsafeArchiveError, VerificationError
from kaito_core.oci.reference import Reference, parse_reference
from kaito_core.oci.unpack import Budget, extract

STAGING_PREFIX = ".kaito-pull-"


@dataclass
class Pulled:
    """What a pull wrote: the top-level entries in ``dest``, the manifest digest, the layout."""

    dest: Path
    digest: str
    layout: str                      # "image" (a /data folder) or "files" (ORAS titled layers)
    entries: list[Path] = field(default_factory=list)
    bytes: int = 0

    def files(self) -> list[Path]:
        out: list[Path] = []
        for e in self.entries:
            out += sorted(p for p in e.rglob("*") if p.is_file()) if e.is_dir() else [e]
        return out


def open_registry(ref: Reference, *, docker_configs: Iterable = (), insecure: bool | Iterable[str] | None = None,
                  max_bytes: int | str | None = None, push: bool = False) -> Registry:
    cred = credentials.find(ref.registry, docker_configs)
    return Registry(ref, credential=cred, insecure=settings.is_insecure(ref.registry, insecure),
                    limits=settings.limits(max_bytes), push=push)


def resolve(client: Registry) -> tuple[dict, str]:
    """The manifest (through an image index, for this platform) and its digest."""
    doc, media, digest = client.manifest()
    if media in (OCI_INDEX, DOCKER_LIST) or "manifests" in doc:
        entry = layout.pick_platform(doc, client.ref.text)
        doc, _, digest = client.manifest(entry["digest"])
    return doc, digest


def _title(layer: dict, what: str) -> str | None:
    title = (layer.get("annotations") or {}).get(layout.TITLE)
    if title is None:
        return None
    path = PurePosixPath(title)
    if not title or path.is_absolute() or ".." in path.parts:
        raise UnsafeArchiveError(f"cannot pull {what}: layer title {title!r} would write outside the target")
    return str(path)


def _free_space_check(dest: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(dest).free
    if need > free:
        raise OCIError(f"cannot pull {what}: it needs {need} bytes and {dest} has {free} free; "
                       "give the volume more space")


def _pull_image(client: Registry, layers: list[dict], stage: Path, budget: Budget) -> Path:
    rootfs, blob = stage / "rootfs", stage / "layer.blob"
    rootfs.mkdir()
    for i, layer in enumerate(layers):
        client.fetch_blob(layer["digest"], layer["size"], blob)
        extract(blob, rootfs, layer=f"{client.ref.text} layer {i} ({layer['digest'][:19]})", budget=budget,
                only=layout.DATA_DIR)
        blob.unlink()
    data = rootfs / layout.DATA_DIR
    if not data.is_dir() or data.is_symlink():
        raise OCIError(f"cannot pull {client.ref.text}: the image has no /{layout.DATA_DIR} folder; kaito reads "
                       "images whose files are under /data (upstream KAITO's layout: /data/adapter_config.json, "
                       "/data/adapter_model.safetensors) or ORAS artifacts with titled layers")
    return data


def _pull_files(client: Registry, layers: list[dict], stage: Path, budget: Budget) -> Path:
    out, blob = stage / "out", stage / "layer.blob"
    out.mkdir()
    for i, layer in enumerate(layers):
        title = _title(layer, client.ref.text)
        if title is None:
            continue  # as oras pull: a layer without a file name is not a file
        if layout.is_dir_layer(layer):
            client.fetch_blob(layer["digest"], layer["size"], blob)
            extract(blob, out, layer=f"{client.ref.text} layer {i} ({title})", budget=budget)
            blob.unlink()
        else:
            target = out / title
            target.parent.mkdir(parents=True, exist_ok=True)
            budget.take(layer["size"], repr(title))
            client.fetch_blob(layer["digest"], layer["size"], target)
    entries = list(out.iterdir())
    if not entries:
        zstd = [layer.get("mediaType") for layer in layers if str(layer.get("mediaType", "")).endswith("zstd")]
        if zstd:
            raise OCIError(f"cannot pull {client.ref.text}: its layers are zstd-compressed ({zstd[0]}), which kaito "
                           "does not unpack; push them as tar or tar+gzip (docker's default)")
        raise OCIError(f"cannot pull {client.ref.text}: the artifact has no titled layers and is not an image with "
                       "a /data folder (push files with 'oras push REF file...' so each layer carries its name)")
    if len(entries) == 1 and entries[0].name == layout.DATA_DIR and entries[0].is_dir() \
            and not entries[0].is_symlink() and all(layout.is_dir_layer(layer) for layer in layers):
        # upstream's adapter tarball (data/adapter_config.json, ...) pushed with `oras push` and an
        # artifact config: the files are under data/, as in the image layout
        return entries[0]
    return out


def publish(src: Path, dest: Path) -> list[Path]:
    """Move every entry of ``src`` into ``dest`` (replacing what is there by that name)."""
    entries = []
    for item in sorted(src.iterdir()):
        target = dest / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif os.path.lexists(target):
            target.unlink()
        os.replace(item, target)
        entries.append(target)
    return entries


def pull(ref: str, dest: str | os.PathLike, *, docker_configs: Iterable = (),
         insecure: bool | Iterable[str] | None = None, max_bytes: int | str | None = None,
         what: str = "image") -> Pulled:
    """Pull ``ref`` into ``dest`` (created): an image's ``/data`` contents or an ORAS artifact's
    files land directly under ``dest``. Raises :class:`OCIError` (one line) on any failure."""
    r = parse_reference(ref, what)
    client = open_registry(r, docker_configs=docker_configs, insecure=insecure, max_bytes=max_bytes)
    manifest, digest = resolve(client)
    layers = layout.check_manifest(manifest, r.text)
    budget = Budget(client.limits.max_bytes, r.text)
    declared = sum(layer["size"] for layer in layers)
    if declared > budget.cap:
        raise VerificationError(f"cannot pull {r.text}: its layers are {declared} bytes, over the size cap of "
                                f"{budget.cap} bytes; raise {settings.MAX_BYTES_ENV} if that is expected")
    dest = Path(dest)
    created = not dest.exists()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OCIError(f"cannot pull {r.text}: cannot create {dest} ({exc.strerror or exc})") from None
    for stale in dest.glob(STAGING_PREFIX + "*"):  # left by a pull that was killed (SIGKILL, OOM)
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    ok = False
    try:
        _free_space_check(dest, declared, r.text)
        image = layout.is_image(manifest)
        src = (_pull_image if image else _pull_files)(client, layers, stage, budget)
        entries = publish(src, dest)
        ok = True
        return Pulled(dest, digest, "image" if image else "files", entries, declared)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not ok:
            shutil.rmtree(dest, ignore_errors=True)
