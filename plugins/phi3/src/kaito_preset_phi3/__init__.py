"""kaito presets for Microsoft's Phi-3 family (facts from upstream KAITO v0.12's catalog)."""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl
from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset, TuningRecipe

# Phi-3's chat format: <|user|>\n...<|end|>\n<|assistant|>\n
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Phi-3 fuses q/k/v into one projection; upstream tunes qkv_proj and o_proj.
PHI3_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("qkv_proj", "o_proj"), r=8, lora_alpha=8,
    lora_dropout=0.0, num_train_epochs=1, per_device_train_batch_size=1,
    memory_gib_per_gpu={"lora": 16.0, "qlora": 8.0})

VLLM_ARGS = {"dtype": "bfloat16", "max-model-len": 4096, "gpu-memory-utilization": 0.9}

PHI_3_MINI_4K = ModelPreset(
    name="phi-3-mini-4k-instruct", family="phi3",
    hf_repo="microsoft/Phi-3-mini-4k-instruct", revision="0a67737cc96d2554230f90338b163bc6380a2a85",
    architecture="Phi3ForCausalLM", parameters=3_821_079_552, weight_bytes=int(7.12 * 2**30),
    dtype="bfloat16", context_length=4096, num_layers=32, hidden_size=3072,
    num_attention_heads=32, num_kv_heads=32, vocab_size=32064, license="mit",
    chat_template=PHI3_CHAT_TEMPLATE,
    runtimes={"vllm": VLLM_ARGS, "transformers": {"dtype": "bfloat16"}}, default_runtime="vllm",
    image=runtime_image("vllm"), weights_source="oci", tuning=PHI3_TUNING, tag="0.2.0",
    aliases=("microsoft/Phi-3-mini-4k-instruct",),
    description="Phi-3 Mini, 3.8B parameters, 4k context, instruction-tuned")

PRESETS = (PHI_3_MINI_4K,)


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
