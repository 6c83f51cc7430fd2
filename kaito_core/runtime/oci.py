"""LoRA adapters from and to OCI registries, for the runtime: :func:`pull_adapter`, :func:`push_adapter`.

A thin user of :mod:`kaito_core.oci` (verified pulls, one credentials order, one plain-HTTP
rule). :func:`pull_adapter` reads upstream KAITO's adapter images (``/data/adapter_config.json``
+ ``/data/adapter_model.safetensors`` in tar layers), ORAS artifacts with one layer per file,
and ORAS directory layers (``oras push REF dir/``), and leaves the adapter files directly under
``dest``. :func:`push_adapter` writes upstream's layout, which upstream's puller and containerd read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from kaito_core import oci
from kaito_core.oci import OCIError, looks_like_reference
from kaito_core.oci.pull import publish

__all__ = ["OCIError", "looks_like_reference", "pull_adapter", "push_adapter"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def pull_adapter(ref: str, dest: str | os.PathLike, *, docker_configs=(), max_bytes: int | str | None = None) -> Path:
    """Pull the adapter at ``ref`` into directory ``dest`` (created) and return ``dest``.

    ``dest`` ends up holding ``adapter_config.json`` and the weights whatever the layout; on
    failure nothing is left in it.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".kaito-adapter-", dir=dest.parent))
    except OSError as exc:
        raise OCIError(f"cannot pull adapter {ref!r} into {dest}: {exc.strerror or exc}") from None
    try:
        oci.pull(ref, stage / "pulled", docker_configs=docker_configs, max_bytes=max_bytes, what="adapter image")
        root = stage / "pulled"
        found = sorted((p.parent for p in root.rglob("adapter_config.json")), key=lambda p: len(p.parts))
        if not found:
            names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())[:10]
            raise OCIError(f"adapter image {ref!r} holds no adapter_config.json (files: {names}); is it a LoRA "
                           "adapter (upstream's /data/adapter_config.json, or pushed by kaito tuning)?")
        dest.mkdir(parents=True, exist_ok=True)
        publish(found[0], dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest


def push_adapter(src: str | os.PathLike, ref: str, *, docker_configs=()) -> str:
    """Push the adapter directory ``src`` to ``ref`` in upstream's layout; return the manifest digest."""
    src = Path(src)
    if not (src / "adapter_config.json").is_file():
        raise OCIError(f"{str(src)!r} is not an adapter directory: adapter_config.json is missing")
    return oci.push_data_image(src, ref, docker_configs=docker_configs, what="adapter image")
