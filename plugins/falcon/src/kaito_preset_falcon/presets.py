"""The Falcon presets: falcon-7b, falcon-7b-instruct, falcon-40b, falcon-40b-instruct.

Shapes from the models' public config.json (KAITO-REFERENCE.md): Falcon-7B is multi-query
(71 query heads share 1 KV head, so its KV cache is tiny; 71 heads do not split over 2, 4 or 8
GPUs, so vLLM uses pipeline stages instead of tensor parallelism); Falcon-40B uses the "new
decoder architecture" with 8 KV heads. Both have a 2048-token context and a 65024 vocabulary.
"""

from __future__ import annotations

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
# Upstream v0.4: falcon-7b QLoRA needs 16Gi per GPU.
FALCON_7B_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("query_key_value",),
    memory_gib_per_gpu={"lora": 32.0, "qlora": 16.0})
FALCON_40B_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("query_key_value",))

RUNTIMES = {"vllm": {"dtype": "bfloat16", "max-model-len": 2048},
            "transformers": {"dtype": "bfloat16"}}


def _falcon(name: str, repo: str, revision: str, *, big: bool, description: str) -> ModelPreset:
    shape = (dict(parameters=41_800_000_000, weight_bytes=83_700_000_000, num_layers=60, hidden_size=8192,
                  num_attention_heads=128, num_kv_heads=8, intermediate_size=32768) if big else
             dict(parameters=6_921_720_704, weight_bytes=14_400_000_000, num_layers=32, hidden_size=4544,
                  num_attention_heads=71, num_kv_heads=1, intermediate_size=18176))
    return ModelPreset(
        name=name, family="falcon", hf_repo=repo, revision=revision, architecture="FalconForCausalLM",
        dtype="bfloat16", context_length=2048, vocab_size=65024, license="apache-2.0", gated=False,
        chat_template=FALCON_CHAT_TEMPLATE, runtimes=RUNTIMES, default_runtime="vllm",
        image=runtime_image("vllm"), weights_source="oci", tuning=FALCON_40B_TUNING if big else FALCON_7B_TUNING,
        tag="0.2.0", aliases=(repo,), supports_multinode=big, description=description, **shape)


FALCON_7B = _falcon("falcon-7b", "tiiuae/falcon-7b", "898df1396f35e447d5fe44e0a3ccaaaa69f30d36", big=False,
                    description="Falcon 7B base model, 2k context, multi-query attention")
FALCON_7B_INSTRUCT = _falcon("falcon-7b-instruct", "tiiuae/falcon-7b-instruct",
                             "cf4b3c42ce2fdfe24f753f0f0d179202fea59c99", big=False,
                             description="Falcon 7B Instruct, 2k context, multi-query attention")
FALCON_40B = _falcon("falcon-40b", "tiiuae/falcon-40b", "4a70170c215b36a3cce4b4253f6d0612bb7d4146", big=True,
                     description="Falcon 40B base model, 2k context, 8 KV heads; multi-node with vLLM")
FALCON_40B_INSTRUCT = _falcon("falcon-40b-instruct", "tiiuae/falcon-40b-instruct",
                              "ecb78d97ac356d098e79f0db222c9ce7c5d9ee5f", big=True,
                              description="Falcon 40B Instruct, 2k context, 8 KV heads; multi-node with vLLM")

PRESETS = (FALCON_7B, FALCON_7B_INSTRUCT, FALCON_40B, FALCON_40B_INSTRUCT)
