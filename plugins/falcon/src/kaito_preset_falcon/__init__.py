"""kaito presets for TII's Falcon family (shapes from the models' config.json, upstream v0.4 sizes)."""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl
from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset, TuningRecipe

# Upstream's "falcon-instruct" chat template: "User: ...\nFalcon:" turns.
FALCON_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Falcon: ' + message['content'] + '\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Falcon:' }}{% endif %}"
)

# Falcon fuses q/k/v into query_key_value. bitsandbytes leaves Falcon's layers unquantized on
# CPU, so a CPU QLoRA of Falcon keeps fp32 layers (the tuning recipe says so in its log).
FALCON_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("query_key_value",), r=8, lora_alpha=8,
    lora_dropout=0.0, memory_gib_per_gpu={"lora": 32.0, "qlora": 16.0})

FALCON_7B = ModelPreset(
    name="falcon-7b", family="falcon",
    hf_repo="tiiuae/falcon-7b", revision="898df1396f35e447d5fe44e0a3ccaaaa69f30d36",
    architecture="FalconForCausalLM", parameters=6_921_720_704, weight_bytes=14_400_000_000,
    dtype="bfloat16", context_length=2048, num_layers=32, hidden_size=4544,
    num_attention_heads=71, num_kv_heads=1, vocab_size=65024, license="apache-2.0",
    chat_template=FALCON_CHAT_TEMPLATE,
    runtimes={"vllm": {"dtype": "bfloat16", "max-model-len": 2048, "gpu-memory-utilization": 0.9},
              "transformers": {"dtype": "bfloat16"}},
    default_runtime="vllm", image=runtime_image("vllm"), weights_source="oci", tuning=FALCON_TUNING,
    tag="0.2.0", aliases=("tiiuae/falcon-7b",),
    description="Falcon 7B base model, 2k context, multi-query attention")

PRESETS = (FALCON_7B,)


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
