"""The Mistral presets: Mistral 7B v0.3 (base, instruct), Ministral 3 (3B/8B/14B), Mistral Large 3.

Facts from upstream KAITO v0.12 (supported_models.yaml: commits, tags, downloadAtRuntime;
model_catalog.yaml: shapes, context, safetensors sizes; presets/workspace/models/mistral:
engine arguments, tuning support, multi-node support):

- Mistral 7B v0.3 ships as an OCI artifact; upstream serves it with vLLM's ``mistral`` tool
  parser and fine-tunes the base model only ("not recommended to further fine-tune instruct
  models").
- Ministral 3 and Mistral Large 3 are downloaded at run time in Mistral's own format (upstream's
  catalog: ``loadFormat/configFormat/tokenizerMode: mistral``), with FP8 weights (catalog
  ``quantMethod``). ``weight_bytes`` is the FP8 checkpoint as stored; ``dtype`` is the dtype vLLM
  computes in (bfloat16): kaito passes it as vLLM's ``--dtype``, which for a quantized checkpoint
  is the activation dtype and leaves the FP8 weights as they are.
  ``weights_dtype`` says so (fp8), so sizing keeps the stored size whatever the compute dtype.
  Ministral 3 is multimodal upstream and keeps its class, ``Mistral3ForConditionalGeneration``.
- Mistral Large 3 (675B mixture-of-experts) uses multi-head latent attention like DeepSeek-V3:
  the KV cache holds ``kv_lora_rank + qk_rope_head_dim = 512 + 64`` values per token and layer,
  shared by all heads (61 x 576 x 2 bytes = upstream's BytesPerToken 70272).
"""

from __future__ import annotations

from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset, TuningRecipe

GIB = 2**30

# Mistral 7B Instruct v0.3 ([INST] turns; a system prompt is prepended to the next user turn,
# as mistral-common does). Upstream's transformers runtime uses the same template for the base model.
MISTRAL_CHAT_TEMPLATE = (
    "{{ '<s>' }}{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- elif message['role'] == 'user' -%}{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}"
    "{%- set ns.system = '' -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' + message['content'] + '</s>' }}"
    "{%- endif -%}{%- endfor -%}"
)

# Ministral 3 / Mistral Large 3 (tokenizer v13): explicit system-prompt and instruction markers.
MISTRAL3_CHAT_TEMPLATE = (
    "{{ '<s>' }}{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' -%}{{ '[INST]' + message['content'] + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + '</s>' }}"
    "{%- endif -%}{%- endfor -%}"
)

# Upstream (mistral/model.go): vLLM with the mistral tool parser; Mistral-format checkpoints
# also load their config, weights and tokenizer in that format.
MISTRAL_VLLM = {"dtype": "float16", "tool-call-parser": "mistral", "enable-auto-tool-choice": True}
MISTRAL3_VLLM = {"tool-call-parser": "mistral", "enable-auto-tool-choice": True, "tokenizer-mode": "mistral",
                 "config-format": "mistral", "load-format": "mistral"}

# Mistral keeps separate q/k/v/o projections (Llama layout); upstream tunes the base model only.
MISTRAL_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    memory_gib_per_gpu={"lora": 32.0, "qlora": 16.0})


def _runtimes(vllm: dict, max_model_len: int) -> dict:
    # FP8 checkpoints get no vLLM dtype argument: the preset's dtype (bfloat16) is the serving
    # dtype kaito passes, and an engine "dtype" would be read by sizing as the weights' dtype.
    return {"vllm": {**vllm, "max-model-len": max_model_len},
            "transformers": {"dtype": "bfloat16"}}


def _mistral(name: str, repo: str, revision: str, *, parameters: int, size_gib: float, dtype: str,
             architecture: str, context: int, hidden: int, layers: int, heads: int, kv_heads: int,
             vocab: int, head_dim: int | None = None, intermediate: int | None = None, template: str,
             vllm: dict, source: str, tag: str, tuning: TuningRecipe | None = None, multinode: bool = False,
             description: str, **shape: object) -> ModelPreset:
    return ModelPreset(
        name=name, family="mistral", hf_repo=repo, revision=revision, architecture=architecture,
        parameters=parameters, weight_bytes=int(size_gib * GIB), dtype=dtype, context_length=context,
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_kv_heads=kv_heads,
        head_dim=head_dim, intermediate_size=intermediate, vocab_size=vocab, license="apache-2.0", gated=False,
        chat_template=template, runtimes=_runtimes(vllm, min(context, 8192)), default_runtime="vllm",
        image=runtime_image("vllm"), weights_source=source, tuning=tuning, tag=tag, aliases=(repo,),
        supports_multinode=multinode, description=description, **shape)


_7B = dict(parameters=7_248_023_552, size_gib=13.50, dtype="bfloat16", architecture="MistralForCausalLM",
           context=32768, hidden=4096, layers=32, heads=32, kv_heads=8, vocab=32768, intermediate=14336,
           template=MISTRAL_CHAT_TEMPLATE, vllm=MISTRAL_VLLM, source="oci", tag="0.2.0")

MISTRAL_7B = _mistral(
    "mistral-7b", "mistralai/Mistral-7B-v0.3", "d8cadc02ac76bd617a919d50b092e59d2d110aff", tuning=MISTRAL_TUNING,
    description="Mistral 7B v0.3 base model, 32k context (served at 8k by default), LoRA/QLoRA tuning", **_7B)
MISTRAL_7B_INSTRUCT = _mistral(
    "mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3", "e0bc86c23ce5aae1db576c8cca6f06f1f73af2db",
    description="Mistral 7B Instruct v0.3, 32k context (served at 8k by default), tool calling", **_7B)

_MINISTRAL = dict(dtype="bfloat16", weights_dtype="fp8", architecture="Mistral3ForConditionalGeneration",
                  context=262144, heads=32, kv_heads=8,
                  vocab=131072, head_dim=128, template=MISTRAL3_CHAT_TEMPLATE, vllm=MISTRAL3_VLLM,
                  source="runtime-download", tag="0.0.1")

# Parameter counts: the published totals (language model + 0.4B vision encoder).
MINISTRAL_3_3B = _mistral(
    "ministral-3-3b-instruct", "mistralai/Ministral-3-3B-Instruct-2512", "83e15808ff6a115f18ff8e68123db3ab35035714",
    parameters=3_850_000_000, size_gib=4.35, hidden=3072, layers=26,
    description="Ministral 3 3B Instruct (FP8), 256k context (served at 8k by default), tool calling", **_MINISTRAL)
MINISTRAL_3_8B = _mistral(
    "ministral-3-8b-instruct", "mistralai/Ministral-3-8B-Instruct-2512", "df904c183734f8760042c708d3629a4ed68b103a",
    parameters=8_800_000_000, size_gib=9.70, hidden=4096, layers=34,
    description="Ministral 3 8B Instruct (FP8), 256k context (served at 8k by default), tool calling", **_MINISTRAL)
MINISTRAL_3_14B = _mistral(
    "ministral-3-14b-instruct", "mistralai/Ministral-3-14B-Instruct-2512", "6aa4534f7bb46d16753bd12a08b32810a06b7a14",
    parameters=13_900_000_000, size_gib=14.65, hidden=5120, layers=40,
    description="Ministral 3 14B Instruct (FP8), 256k context (served at 8k by default), tool calling", **_MINISTRAL)

# Multi-head latent attention (see the module docstring). The MoE's active MLP width is
# not in upstream's catalog; DeepSeek-V3's (8 routed + 1 shared expert of 2048 = 18432), whose
# layout Mistral Large 3 follows, stands in for the activation estimate.
MISTRAL_LARGE_3 = _mistral(
    "mistral-large-3-675b-instruct", "mistralai/Mistral-Large-3-675B-Instruct-2512",
    "7f13ed24ab52a2a1c35bb26a749ef9d891ee98dd", parameters=675_000_000_000, size_gib=634.70, dtype="bfloat16",
    architecture="MistralLarge3ForCausalLM", context=294912, hidden=7168, layers=61, heads=128, kv_heads=128,
    head_dim=192, kv_lora_rank=512, qk_rope_head_dim=64, weights_dtype="fp8", intermediate=18432, vocab=131072,
    template=MISTRAL3_CHAT_TEMPLATE, vllm=MISTRAL3_VLLM,
    source="runtime-download", tag="0.0.1", multinode=True,
    description="Mistral Large 3 675B Instruct: mixture-of-experts, FP8, multi-head latent attention; "
                "multi-node with vLLM")

PRESETS = (MISTRAL_7B, MISTRAL_7B_INSTRUCT, MINISTRAL_3_3B, MINISTRAL_3_8B, MINISTRAL_3_14B, MISTRAL_LARGE_3)
