#!/usr/bin/env python3
"""Pack a preset's model weights as an OCI artifact (oras): ``<registry>/models/<preset>:<tag>``.

The reference is the one the preset names (:func:`kaito_core.images.weights_image` with the
preset's ``tag``), for every installed preset whose ``weights_source`` is ``oci``. Each file of
the model directory (config, tokenizer, ``*.safetensors``) is one layer titled with its file
name, so ``oras pull REF -o DIR`` (what upstream KAITO's init container runs) or oras-py's
``pull(outdir=DIR)`` puts the model back in ``DIR`` as it was. The artifact's config blob
records the preset, the Hugging Face repository and the pinned revision.

    python images/models/pack.py --list                         # what would be packed
    python images/models/pack.py --all --download-dir /data     # hub -> registry (needs huggingface_hub)
    python images/models/pack.py --preset phi-4 --from-dir ./phi-4 --registry localhost:5000

Registry credentials: ``KAITO_OCI_USERNAME`` / ``KAITO_OCI_PASSWORD`` or ``~/.docker/config.json``;
plain HTTP for loopback registries or with ``--insecure``. Gated models need ``HF_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARTIFACT_TYPE = "application/vnd.kaito.model.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.kaito.model.file.v1"
# What a model directory needs at serving time; the hub holds more (original/ checkpoints, README).
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


class PackError(Exception):
    """Something in the request or the model directory that stops packing, said plainly."""


@dataclass(frozen=True)
class Pack:
    preset: str
    reference: str
    hf_repo: str
    revision: str
    architecture: str

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def plan(names: list[str] | None = None, registry: Any = None) -> list[Pack]:
    """The artifacts to pack: the named presets (all OCI-weight presets when ``names`` is None)."""
    from kaito_core.images import weights_image

    if registry is None:
        from kaito_core.plugins import get_registry

        registry = get_registry()
    if names is None:
        presets = [p for p in registry.presets.values() if p.weights_source == "oci"]
    else:
        presets = []
        for name in names:
            preset = registry.presets.get(name)
            if preset is None:
                raise PackError(f"--preset {name!r} is not an installed preset; "
                                f"known: {', '.join(sorted(registry.presets))}")
            if preset.weights_source != "oci":
                raise PackError(f"preset {name!r} has weights_source {preset.weights_source!r}: its weights are "
                                "not served from an OCI artifact, so there is nothing to pack")
            presets.append(preset)
    return [Pack(p.name, weights_image(p.name, p.tag), p.hf_repo, p.revision, p.architecture)
            for p in sorted(presets, key=lambda p: p.name)]


def model_files(directory: Path, pack: Pack) -> list[Path]:
    """The files to push from ``directory``, after checking it holds this preset's model."""
    config = directory / "config.json"
    if not config.is_file():
        raise PackError(f"{directory} is not a model directory: config.json is missing")
    architectures = json.loads(config.read_text()).get("architectures") or []
    if pack.architecture not in architectures:
        raise PackError(f"{directory} holds a {architectures or 'model without architectures'} model, "
                        f"but preset {pack.preset!r} is a {pack.architecture}: wrong directory?")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.suffix == ".safetensors" for p in files):
        raise PackError(f"{directory} has no *.safetensors weights (only {[p.name for p in files]})")
    return files


def download(pack: Pack, dest: Path) -> Path:
    """The preset's pinned revision from the Hugging Face hub into ``dest``."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise PackError("downloading needs huggingface_hub: pip install huggingface_hub "
                        "(or give an existing directory with --from-dir)") from None
    path = snapshot_download(repo_id=pack.hf_repo, revision=pack.revision, local_dir=str(dest),
                             allow_patterns=HUB_PATTERNS, token=os.environ.get("HF_TOKEN") or None)
    return Path(path)


def push(pack: Pack, directory: Path, *, insecure: bool = False) -> str:
    """Push ``directory`` as ``pack.reference``; return the manifest digest.

    Through :mod:`kaito_core.oci`, so the credentials (docker configs, KAITO_OCI_USERNAME /
    KAITO_OCI_PASSWORD) and plain-HTTP rules (loopback, KAITO_INSECURE_REGISTRIES) are the ones
    every kaito pull and push uses."""
    from kaito_core.oci import push_files

    files = model_files(directory, pack)
    config = {"preset": pack.preset, "hfRepo": pack.hf_repo, "revision": pack.revision,
              "architecture": pack.architecture, "files": [p.name for p in files]}
    annotations = {"org.opencontainers.image.title": pack.preset,
                   "org.opencontainers.image.source": f"https://huggingface.co/{pack.hf_repo}",
                   "org.opencontainers.image.revision": pack.revision,
                   "kaito.sh/preset": pack.preset}
    return push_files([(p, LAYER_MEDIA_TYPE) for p in files], pack.reference,
                      config=(json.dumps(config, indent=2, sort_keys=True).encode(), ARTIFACT_TYPE),
                      annotations=annotations, insecure=True if insecure else None, what="model weights")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pack.py", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--preset", action="append", metavar="NAME", help="a preset to pack (repeatable)")
    which.add_argument("--all", action="store_true", help="every installed preset with OCI weights")
    parser.add_argument("--list", action="store_true", help="print the artifacts as JSON lines and exit")
    parser.add_argument("--registry", help="registry/namespace to push to (default: KAITO_REGISTRY or "
                                           "ghcr.io/kaito-core)")
    parser.add_argument("--from-dir", type=Path, help="an existing model directory (one --preset)")
    parser.add_argument("--download-dir", type=Path, help="where hub downloads go (default: a temporary directory)")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP to the registry")
    parser.add_argument("--dry-run", action="store_true", help="check the inputs, push nothing")
    args = parser.parse_args(argv)
    if args.registry:
        os.environ["KAITO_REGISTRY"] = args.registry
    try:
        packs = plan(args.preset if args.preset else None)
        if args.list or not (args.preset or args.all):
            for p in packs:
                print(json.dumps(p.to_dict(), sort_keys=True))
            return 0
        if args.from_dir and len(packs) != 1:
            raise PackError("--from-dir holds one model: name exactly one --preset")
        for p in packs:
            if args.from_dir:
                directory = args.from_dir
            else:
                base = args.download_dir or Path(tempfile.mkdtemp(prefix="kaito-weights-"))
                directory = download(p, base / p.preset) if not args.dry_run else base / p.preset
            if args.dry_run:
                names = [f.name for f in model_files(directory, p)] if directory.exists() else ["(not downloaded)"]
                print(f"would push {p.reference} <- {directory} ({', '.join(names)})")
                continue
            digest = push(p, directory, insecure=args.insecure)
            print(f"pushed {p.reference} {digest}")
    except PackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
