"""``kaito serve``: run the inference server (OpenAI + KAITO APIs) on this machine.

The same entry point the runtime image runs in a pod (``python -m kaito_core.runtime``).
Only the standard library and kaito's light modules load here; torch and fastapi load when
the command runs.
"""

from __future__ import annotations

from kaito_core.runtime.options import add_serve_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve a model over the OpenAI and KAITO APIs",
        description="Serve a model (local directory or Hugging Face id) with continuous batching, streaming, "
                    "LoRA adapters and Prometheus metrics; or start vLLM with --runtime vllm.")
    add_serve_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from kaito_core.runtime.cli import run

    return run(args)
