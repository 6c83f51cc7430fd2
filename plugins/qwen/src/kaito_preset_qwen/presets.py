"""The Qwen presets: Qwen2.5-Coder 7B Instruct and 32B Instruct.

Facts from upstream KAITO v0.12 (supported_models.yaml: commits, tags; model_catalog.yaml:
shapes, context, safetensors sizes; presets/workspace/models/qwen: engine arguments and tuning):
both ship as OCI artifacts (no ``downloadAtRuntime``), serve on one node (no distributed
inference upstream), use vLLM's ``hermes`` tool parser, and support LoRA/QLoRA tuning.
"""

from __future__ import annotations

from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset, TuningRecipe

GIB = 2**30

# ChatML with Qwen2.5's default system prompt when the conversation has none.
QWEN_CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# Upstream: vLLM with the hermes tool parser (its tool-chat-hermes.jinja is a file in upstream's
# image; kaito's runtime uses the tokenizer's template, falling back to QWEN_CHAT_TEMPLATE).
QWEN_VLLM = {"tool-call-parser": "hermes", "enable-auto-tool-choice": True}

# Qwen2 keeps separate q/k/v/o projections (with biases on q/k/v).
QWEN_TUNING = TuningRecipe(methods=("lora", "qlora"), target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


def _qwen(name: str, repo: str, revision: str, *, parameters: int, size_gib: float, hidden: int, layers: int,
          heads: int, kv_heads: int, intermediate: int, description: str) -> ModelPreset:
    return ModelPreset(
        name=name, family="qwen", hf_repo=repo, revision=revision, architecture="Qwen2ForCausalLM",
        parameters=parameters, weight_bytes=int(size_gib * GIB), dtype="bfloat16", context_length=32768,
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_kv_heads=kv_heads,
        intermediate_size=intermediate, vocab_size=152064, license="apache-2.0", gated=False,
        chat_template=QWEN_CHAT_TEMPLATE,
        runtimes={"vllm": {**QWEN_VLLM, "dtype": "bfloat16", "max-model-len": 8192},
                  "transformers": {"dtype": "bfloat16"}},
        default_runtime="vllm", image=runtime_image("vllm"), weights_source="oci", tuning=QWEN_TUNING,
        tag="0.2.0", aliases=(repo,), supports_multinode=False, description=description)


QWEN2_5_CODER_7B = _qwen(
    "qwen2.5-coder-7b-instruct", "Qwen/Qwen2.5-Coder-7B-Instruct", "c03e6d358207e414f1eca0bb1891e29f1db0e242",
    parameters=7_615_616_512, size_gib=14.19, hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944,
    description="Qwen2.5-Coder 7B Instruct, 32k context (served at 8k by default), tool calling")
QWEN2_5_CODER_32B = _qwen(
    "qwen2.5-coder-32b-instruct", "Qwen/Qwen2.5-Coder-32B-Instruct", "381fc969f78efac66bc87ff7ddeadb7e73c218a7",
    parameters=32_763_876_352, size_gib=61.03, hidden=5120, layers=64, heads=40, kv_heads=8, intermediate=27648,
    description="Qwen2.5-Coder 32B Instruct, 32k context (served at 8k by default), tool calling; one 80 GB GPU")

PRESETS = (QWEN2_5_CODER_7B, QWEN2_5_CODER_32B)
