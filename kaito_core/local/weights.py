"""Find a Workspace's model weights on this machine (or download them when the hub is reachable).

In order: ``kaito up --weights DIR``; upstream's annotation ``kaito.sh/use-local-weights: "true"``
(/opt/kaito/models/<preset>, the same host path a pod would mount); a preset that *is* a local directory; the Hugging Face
cache (the preset's pinned revision); the hub (download with a progress bar). Without network
the last step fails with the three ways to give the weights instead.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kaito_core.errors import KaitoError
from kaito_core.types import ModelPreset

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


class WeightsError(KaitoError, LookupError):
    """The weights could not be found or fetched; the message lists how to give them."""


@dataclass(frozen=True)
class Weights:
    path: Path
    origin: str  # a sentence: where they came from


def check_dir(path: Path, what: str) -> Path:
    """``path`` must be a model directory: config.json and at least one weights file."""
    if not path.exists():
        raise WeightsError(f"{what} {str(path)!r} does not exist; expected a model directory "
                           "(config.json, tokenizer and *.safetensors, as save_pretrained() writes)")
    if not path.is_dir():
        raise WeightsError(f"{what} {str(path)!r} is a file; expected a model directory")
    if not (path / "config.json").is_file():
        raise WeightsError(f"{what} {str(path)!r} has no config.json; expected a directory written by "
                           "save_pretrained() or downloaded from the Hugging Face hub")
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in path.iterdir()):
        raise WeightsError(f"{what} {str(path)!r} has a config.json but no weights (*.safetensors)")
    return path.resolve()


def _annotation_path(ws: Any, preset: Any = None) -> str | None:
    """The annotation's directory, read as the cluster reads it ("true": upstream's
    /opt/kaito/models/<preset>; "false": off)."""
    from kaito_core.reconcile.weights import local_weights_dir

    return local_weights_dir(ws, preset)


def _cached(preset: ModelPreset) -> Path | None:
    try:
        from kaito_core.builtins import hf
    except ImportError:  # pragma: no cover - a built-in module
        return None
    root = hf.hub_cache_dir() / f"models--{preset.hf_repo.replace('/', '--')}"
    snap = root / "snapshots" / preset.revision
    if (snap / "config.json").is_file():
        return snap
    return None


def _hub_reachable(timeout: float = 3.0) -> tuple[bool, str]:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False, "HF_HUB_OFFLINE is set"
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urlsplit(url)
    host, port = parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as exc:
        return False, f"{host}:{port} is not reachable ({exc.strerror or exc})"


def _download(preset: ModelPreset) -> Path:
    from huggingface_hub import snapshot_download  # lazily: installed with transformers

    # safetensors only (no pickles), plus the config, tokenizer and chat template files.
    path = snapshot_download(preset.hf_repo, revision=preset.revision,
                             allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"],
                             token=os.environ.get("HF_TOKEN") or None)
    return Path(path)


def locate(ws: Any, preset: ModelPreset, weights: str | None = None, *, download: bool = True) -> Weights:
    """The directory holding ``preset``'s weights for Workspace ``ws``; raises :class:`WeightsError`."""
    if weights:
        return Weights(check_dir(Path(weights).expanduser(), "--weights"), f"--weights {weights}")
    annotated = _annotation_path(ws, preset)
    if annotated:
        return Weights(check_dir(Path(annotated).expanduser(), "annotation kaito.sh/use-local-weights"),
                       f"annotation kaito.sh/use-local-weights: {annotated}")
    for alias in (preset.name, *preset.aliases):
        p = Path(alias).expanduser()
        if preset.weights_source == "local" and p.is_dir():
            return Weights(check_dir(p, "preset.name"), f"the local model directory {alias}")
    cached = _cached(preset)
    if cached is not None:
        return Weights(check_dir(cached, "Hugging Face cache"), f"the Hugging Face cache ({cached})")
    how = ("give the weights with `kaito up FILE --weights DIR`, or put them in "
           f"/opt/kaito/models/{preset.name} with the annotation kaito.sh/use-local-weights: \"true\", "
           "or download them into the Hugging Face cache first "
           f"(huggingface-cli download {preset.hf_repo} --revision {preset.revision})")
    if not download:
        raise WeightsError(f"the weights of {preset.name} ({preset.hf_repo}) are not on this machine; {how}")
    ok, why = _hub_reachable()
    if not ok:
        raise WeightsError(f"the weights of {preset.name} ({preset.hf_repo}@{preset.revision[:7]}) are not on this "
                           f"machine and the Hugging Face hub cannot be used: {why}; {how}")
    if preset.gated and not os.environ.get("HF_TOKEN"):
        raise WeightsError(f"{preset.name} ({preset.hf_repo}) is gated on Hugging Face: accept its license on the "
                           "hub and set HF_TOKEN, or " + how)
    try:
        path = _download(preset)
    except Exception as exc:  # noqa: BLE001 - any hub/network failure becomes one clear error
        raise WeightsError(f"downloading {preset.hf_repo}@{preset.revision[:7]} failed: {exc}; {how}") from None
    return Weights(check_dir(path, "downloaded weights"), f"downloaded from the Hugging Face hub ({path})")


def config_of(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def mismatch(preset: ModelPreset, path: Path) -> str | None:
    """Why the weights in ``path`` are not ``preset``'s published weights, or None when they match."""
    cfg = config_of(path)
    archs = cfg.get("architectures") or []
    checks = [("architecture", preset.architecture, archs[0] if archs else None),
              ("hidden_size", preset.hidden_size, cfg.get("hidden_size", cfg.get("d_model"))),
              ("layers", preset.num_layers, cfg.get("num_hidden_layers", cfg.get("n_layer"))),
              ("vocab_size", preset.vocab_size, cfg.get("vocab_size"))]
    diffs = [f"{what} {have} (preset: {want})" for what, want, have in checks if have is not None and have != want]
    return ", ".join(diffs) if diffs else None
