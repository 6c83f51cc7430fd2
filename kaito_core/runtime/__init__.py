"""The inference server that runs in every inference pod, locally (``kaito serve``) and in
``kaito up``: OpenAI routes, upstream KAITO's ``/chat``, continuous batching over transformers,
LoRA adapters, Prometheus metrics; or vLLM's own server for the ``vllm`` runtime.

Importing this package is cheap: torch, transformers and fastapi load only when a server is
built. ``python -m kaito_core.runtime`` takes the same flags as ``kaito serve``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve", "pull_adapter", "push_adapter", "ServeOptions", "AdapterSpec"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        from kaito_core.runtime import server

        return getattr(server, name)
    if name in ("pull_adapter", "push_adapter"):
        from kaito_core.runtime import oci

        return getattr(oci, name)
    if name in ("ServeOptions", "AdapterSpec"):
        from kaito_core.runtime import options

        return getattr(options, name)
    raise AttributeError(f"module 'kaito_core.runtime' has no attribute {name!r}")
