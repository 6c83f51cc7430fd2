"""Image references the presets, the reconciler and the Helm chart use.

Every reference here is built by a Dockerfile under ``images/`` (a test checks it). The
registry can be overridden per install (Helm value ``image.registry``, env ``KAITO_REGISTRY``).
"""

from __future__ import annotations

import os

DEFAULT_REGISTRY = "ghcr.io/kaito-core"
VERSION = "0.1.0"


def registry() -> str:
    return os.environ.get("KAITO_REGISTRY", DEFAULT_REGISTRY).rstrip("/")


def operator_image(tag: str = VERSION) -> str:
    return f"{registry()}/operator:{tag}"


def runtime_image(runtime: str = "transformers", tag: str = VERSION) -> str:
    """The serving/tuning image for a runtime: transformers -> runtime, vllm -> runtime-vllm."""
    name = "runtime" if runtime == "transformers" else f"runtime-{runtime}"
    return f"{registry()}/{name}:{tag}"


def weights_image(preset: str, tag: str) -> str:
    """OCI artifact holding a preset's weights (upstream: one artifact per model, by tag)."""
    return f"{registry()}/models/{preset}:{tag}"
