"""Adapters and data as OCI images, for tuning: push the adapter, pull input data.

A thin user of :mod:`kaito_core.oci` that turns its errors into tuning's own
(:class:`FetchError` for pulls, :class:`OutputError` for pushes, :class:`TuningError` for a bad
reference or push secret).

Adapter layout pushed (upstream KAITO's, docs/tuning.md): one tar+gzip layer holding
``data/adapter_config.json``, ``data/adapter_model.safetensors`` and the run's other files
(``kaito-tuning-summary.json``, tokenizer files when the vocabulary changed); an image config
with ``rootfs.diff_ids`` whose ``config.Labels`` carry the run's facts (``sh.kaito.*``); the
manifest annotations the recipe gives. Upstream's puller, containerd, or ``tar xzf`` of the
layer read it. Pulls read that layout, docker-built images with a ``/data`` folder, and the
older one-titled-layer-per-file artifacts.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from kaito_core import oci as _oci
from kaito_core.oci import OCIError, Reference
from kaito_core.oci.client import Registry
from kaito_core.oci.pull import open_registry
from kaito_core.oci.settings import INSECURE_ENV  # noqa: F401 - re-exported for callers
from kaito_core.api.training.errors import FetchError, OutputError, TuningError

log = logging.getLogger("kaito.tuning")

# Media types of the older one-layer-per-file layout (still readable; no longer pushed).
ADAPTER_CONFIG_MEDIA_TYPE = "application/vnd.kaito.adapter.config.v1+json"
MEDIA_TYPES = {
    "adapter_config.json": "application/vnd.kaito.adapter.lora.config.v1+json",
    "adapter_model.safetensors": "application/vnd.kaito.adapter.lora.weights.v1+safetensors",
    "kaito-tuning-summary.json": "application/vnd.kaito.tuning.summary.v1+json",
}
ANNOTATION_PREFIX = "sh.kaito"
PUSH_SECRET_FIX = ("give a docker-config secret (tuning.output.imagePushSecret / --push-secret FILE) with an "
                   "entry for it")


def parse_reference(ref: str, what: str = "image") -> Reference:
    """``registry[:port]/repo[:tag][@sha256:digest]``; the registry part is required."""
    try:
        return _oci.parse_reference(ref, what)
    except OCIError as exc:
        raise TuningError(str(exc)) from None


def is_insecure(registry: str, insecure: list[str] | tuple[str, ...] | None = None) -> bool:
    return _oci.is_insecure(registry, insecure)


def load_docker_config(path: str | Path | dict | None) -> dict[str, Any]:
    """A docker config (file, mounted Secret directory, Secret manifest or dict); ``None``: the default one."""
    from kaito_core.oci.credentials import default_docker_configs

    try:
        if path is None:
            found = default_docker_configs()
            return _oci.load_docker_config(found[0]) if found else {}
        return _oci.load_docker_config(path)
    except OCIError as exc:
        raise TuningError(f"push secret: {exc}") from None


def credentials_for(config: dict[str, Any], registry: str) -> tuple[str, str] | None:
    from kaito_core.oci.credentials import from_config

    found = from_config(config, registry)
    return found.pair() if found else None


def _configs(docker_config: str | Path | dict | None) -> list:
    return [] if docker_config is None else [docker_config]


def _client(ref: Reference, *, docker_config: str | Path | dict | None, insecure: list[str] | None,
            error: type[TuningError], action: str) -> Registry:
    """Check now that the registry answers and takes the credentials (before any training)."""
    try:
        client = open_registry(ref, docker_configs=_configs(docker_config), insecure=insecure,
                               push=action.startswith("push"))
        client.fix_credentials = PUSH_SECRET_FIX
        client.check()
    except OCIError as exc:
        raise error(str(exc)) from None
    return client


def check_push_access(image: str, *, docker_config: str | Path | dict | None = None,
                      insecure: list[str] | None = None) -> None:
    """Fail now (:class:`OutputError`) when ``image``'s registry is unreachable or refuses the
    push credentials: called before training, so a bad secret costs seconds, not a run."""
    ref = parse_reference(image, "tuning.output.image")
    if ref.digest:  # the push refuses it too, but only after the whole training run
        raise OutputError(f"tuning.output.image {image!r}: an adapter is pushed to a tag, not a digest (the digest "
                          "is known once pushed); drop the @sha256:... part")
    _client(ref, docker_config=docker_config, insecure=insecure, error=OutputError, action="push to")


def push_adapter(adapter_dir: str | Path, image: str, *, docker_config: str | Path | dict | None = None,
                 insecure: list[str] | None = None, annotations: dict[str, str] | None = None,
                 config: dict[str, Any] | None = None) -> str:
    """Push ``adapter_dir`` in upstream's adapter image layout; return the manifest digest."""
    parse_reference(image, "tuning.output.image")
    labels = {f"{ANNOTATION_PREFIX}.{k}": (v if isinstance(v, str) else json.dumps(v))
              for k, v in (config or {}).items() if v is not None}
    try:
        digest = _oci.push_data_image(adapter_dir, image, labels=labels, annotations=annotations,
                                      docker_configs=_configs(docker_config), insecure=insecure,
                                      what="tuning.output.image")
    except OCIError as exc:
        raise OutputError(f"pushing the adapter failed: {exc}. The image was not tagged (a registry only tags a "
                          "manifest once every layer is uploaded)") from None
    log.info("pushed adapter to %s (%s)", image, digest)
    return digest


def pull(image: str, dest: str | Path, *, docker_config: str | Path | dict | None = None,
         insecure: list[str] | None = None, what: str = "image") -> list[Path]:
    """Pull ``image`` into ``dest`` (created; complete or absent); return the files written."""
    parse_reference(image, what)
    try:
        return _oci.pull(image, dest, docker_configs=_configs(docker_config), insecure=insecure, what=what).files()
    except OCIError as exc:
        raise FetchError(f"pulling {what} {image} failed: {exc}") from None


def pull_adapter(image: str, dest: str | Path, **kwargs: Any) -> Path:
    """Pull an adapter image and check it holds ``adapter_config.json`` + weights."""
    from kaito_core.tuning.output import ADAPTER_CONFIG, ADAPTER_WEIGHTS

    dest = Path(dest)
    created = not dest.exists()
    pulled = pull(image, dest, what="adapter image", **kwargs)
    missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (dest / f).is_file()]
    if missing:
        if created:
            shutil.rmtree(dest, ignore_errors=True)  # nothing half-made is left behind
        found = ", ".join(str(f.relative_to(dest)) for f in pulled[:5]) or "no files"
        raise FetchError(f"adapter image {image}: no {', '.join(missing)} in it (it holds {found}); is it a LoRA "
                         "adapter? Upstream's layout is /data/adapter_config.json and /data/adapter_model.safetensors")
    return dest
