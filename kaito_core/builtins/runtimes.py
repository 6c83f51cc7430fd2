"""Built-in inference backends: transformers (CPU and GPU) and vLLM (GPU, when installed).

Registering does not import either library; the runtime checks ``module`` when it starts.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl
from kaito_core.images import runtime_image
from kaito_core.types import Runtime

TRANSFORMERS = Runtime(
    name="transformers", module="transformers", image=runtime_image("transformers"),
    description="kaito's own server over transformers: continuous batching, LoRA adapters, CPU or GPU",
    supports_multinode=False, supports_adapters=True, requires_gpu=False)
VLLM = Runtime(
    name="vllm", module="vllm", image=runtime_image("vllm"),
    description="vLLM's OpenAI server with the preset's engine arguments (GPU)",
    supports_multinode=True, supports_adapters=True, requires_gpu=True)


@hookimpl
def kaito_register_runtimes(register):
    register(TRANSFORMERS)
    register(VLLM)
