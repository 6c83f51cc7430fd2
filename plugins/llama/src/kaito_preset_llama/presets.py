"""The Llama presets: Llama 3.1 8B Instruct and Llama 3.3 70B Instruct.

Both are gated on Hugging Face (``gated=True``): the core refuses a Workspace without
``presetOptions.modelAccessSecret`` and tells the user to create a Secret with ``HF_TOKEN``.
Weights are downloaded at run time (upstream ``downloadAtRuntime``), never baked into an image.
Sizes are upstream's ``modelFileSize``; parameter counts are the published totals.
"""

from __future__ import annotations

from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset, TuningRecipe

GIB = 2**30

LLAMA3_CHAT_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Llama keeps separate q/k/v/o projections; upstream's recipe adapts all four.
LLAMA_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    memory_gib_per_gpu={"lora": 32.0, "qlora": 16.0})
LLAMA_70B_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


def _runtimes(max_model_len: int) -> dict:
    return {"vllm": {"dtype": "bfloat16", "max-model-len": max_model_len},
            "transformers": {"dtype": "bfloat16"}}


LLAMA_3_1_8B_INSTRUCT = ModelPreset(
    name="llama-3.1-8b-instruct", family="llama",
    hf_repo="meta-llama/Llama-3.1-8B-Instruct", revision="0e9e39f249a16976918f6564b8830bc894c89659",
    architecture="LlamaForCausalLM", parameters=8_030_261_248, weight_bytes=int(14.96 * GIB),
    dtype="bfloat16", context_length=131072, num_layers=32, hidden_size=4096,
    num_attention_heads=32, num_kv_heads=8, vocab_size=128256, license="llama3.1", gated=True,
    chat_template=LLAMA3_CHAT_TEMPLATE, runtimes=_runtimes(8192), default_runtime="vllm",
    image=runtime_image("vllm"), weights_source="runtime-download", tuning=LLAMA_TUNING, tag="0.2.0",
    aliases=("meta-llama/Llama-3.1-8B-Instruct",), supports_multinode=False,
    description="Llama 3.1 8B Instruct, 128k context served at 8k by default (gated: needs a Hugging Face token)")

LLAMA_3_3_70B_INSTRUCT = ModelPreset(
    name="llama-3.3-70b-instruct", family="llama",
    hf_repo="meta-llama/Llama-3.3-70B-Instruct", revision="6f6073b423013f6a7d4d9f39144961bfbfbc386b",
    architecture="LlamaForCausalLM", parameters=70_553_706_496, weight_bytes=int(131.42 * GIB),
    dtype="bfloat16", context_length=131072, num_layers=80, hidden_size=8192,
    num_attention_heads=64, num_kv_heads=8, vocab_size=128256, license="llama3.3", gated=True,
    chat_template=LLAMA3_CHAT_TEMPLATE, runtimes=_runtimes(8192), default_runtime="vllm",
    image=runtime_image("vllm"), weights_source="runtime-download", tuning=LLAMA_70B_TUNING, tag="0.0.1",
    aliases=("meta-llama/Llama-3.3-70B-Instruct",), supports_multinode=True,
    description="Llama 3.3 70B Instruct, 128k context served at 8k by default; multi-node with vLLM "
                "(gated: needs a Hugging Face token)")

PRESETS = (LLAMA_3_1_8B_INSTRUCT, LLAMA_3_3_70B_INSTRUCT)
