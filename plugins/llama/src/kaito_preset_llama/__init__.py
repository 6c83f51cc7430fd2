"""kaito presets for Meta's Llama 3.x family (facts from upstream KAITO v0.12's catalog).

Llama weights are gated: a Workspace must name ``presetOptions.modelAccessSecret`` (a Secret
with key ``HF_TOKEN``), and the weights are downloaded at run time, as upstream does.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl
from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset, TuningRecipe

LLAMA3_CHAT_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

LLAMA_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), r=8,
    lora_alpha=8, lora_dropout=0.0, memory_gib_per_gpu={"lora": 32.0, "qlora": 16.0})

LLAMA_3_1_8B_INSTRUCT = ModelPreset(
    name="llama-3.1-8b-instruct", family="llama",
    hf_repo="meta-llama/Llama-3.1-8B-Instruct", revision="0e9e39f249a16976918f6564b8830bc894c89659",
    architecture="LlamaForCausalLM", parameters=8_030_261_248, weight_bytes=int(14.96 * 2**30),
    dtype="bfloat16", context_length=131072, num_layers=32, hidden_size=4096,
    num_attention_heads=32, num_kv_heads=8, vocab_size=128256, license="llama3.1", gated=True,
    chat_template=LLAMA3_CHAT_TEMPLATE,
    runtimes={"vllm": {"dtype": "bfloat16", "max-model-len": 8192, "gpu-memory-utilization": 0.9},
              "transformers": {"dtype": "bfloat16"}},
    default_runtime="vllm", image=runtime_image("vllm"), weights_source="runtime-download",
    tuning=LLAMA_TUNING, tag="0.2.0", aliases=("meta-llama/Llama-3.1-8B-Instruct",),
    description="Llama 3.1 8B Instruct, 128k context (gated: needs a Hugging Face token)")

PRESETS = (LLAMA_3_1_8B_INSTRUCT,)


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
