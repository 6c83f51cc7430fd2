"""The Phi presets: Phi-3 mini/medium (4k and 128k), Phi-3.5 mini, Phi-4 and Phi-4 mini.

Every Phi model here is a ``Phi3ForCausalLM`` (fused ``qkv_proj``), published in bfloat16.
Sizes are the safetensors totals from upstream's model catalog (``modelFileSize``); parameter
counts are the models' published totals. The 128k models serve their whole context, as upstream
(``max-model-len`` 131072: sizing counts its KV cache, e.g. 48 GiB for Phi-3 mini, so they plan
onto an 80 GB GPU); a Workspace's inference config may set a smaller ``vllm.max-model-len`` to
fit a smaller GPU.
"""

from __future__ import annotations

from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset, TuningRecipe

GIB = 2**30

# Phi-3 / Phi-3.5 / Phi-4-mini chat format: <|user|>\n...<|end|>\n<|assistant|>\n
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Phi-4 uses ChatML-like turns with <|im_sep|> between the role and the content.
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)

# Phi-4-mini: the same role markers without newlines.
PHI4_MINI_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Phi-3 fuses q/k/v into one projection; upstream tunes qkv_proj and o_proj. The per-GPU
# memory figures are upstream's tuning requirements for the mini models.
PHI3_MINI_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("qkv_proj", "o_proj"),
    memory_gib_per_gpu={"lora": 16.0, "qlora": 8.0})
PHI3_LARGE_TUNING = TuningRecipe(
    methods=("lora", "qlora"), target_modules=("qkv_proj", "o_proj"))


def _runtimes(max_model_len: int, vllm: dict | None = None) -> dict:
    return {"vllm": {"dtype": "bfloat16", "max-model-len": max_model_len,
                     **(vllm or {})},
            "transformers": {"dtype": "bfloat16"}}


# Upstream (phi4/model.go, examples/inference/kaito_workspace_tool_calling.yaml): Phi-4-mini calls
# tools through vLLM's phi4_mini_json parser.
PHI4_MINI_TOOLS = {"tool-call-parser": "phi4_mini_json", "enable-auto-tool-choice": True}


def _phi(name: str, repo: str, revision: str, *, parameters: int, size_gib: float, context: int,
         hidden: int, layers: int, heads: int, kv_heads: int, vocab: int, max_model_len: int,
         tuning: TuningRecipe, template: str = PHI3_CHAT_TEMPLATE, multinode: bool = False,
         intermediate: int | None = None, vllm: dict | None = None, description: str) -> ModelPreset:
    return ModelPreset(
        name=name, family="phi3", hf_repo=repo, revision=revision, architecture="Phi3ForCausalLM",
        parameters=parameters, weight_bytes=int(size_gib * GIB), dtype="bfloat16", context_length=context,
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_kv_heads=kv_heads,
        vocab_size=vocab, license="mit", gated=False, chat_template=template,
        runtimes=_runtimes(max_model_len, vllm), default_runtime="vllm", image=runtime_image("vllm"),
        weights_source="oci", tuning=tuning, tag="0.2.0", aliases=(repo,), supports_multinode=multinode,
        intermediate_size=intermediate, description=description)


PHI_3_MINI_4K = _phi(
    "phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", "0a67737cc96d2554230f90338b163bc6380a2a85",
    parameters=3_821_079_552, size_gib=7.12, context=4096, hidden=3072, layers=32, heads=32, kv_heads=32,
    vocab=32064, max_model_len=4096, tuning=PHI3_MINI_TUNING,
    description="Phi-3 Mini, 3.8B parameters, 4k context, instruction-tuned")
PHI_3_MINI_128K = _phi(
    "phi-3-mini-128k-instruct", "microsoft/Phi-3-mini-128k-instruct", "072cb7562cb8c4adf682a8e186aaafa49469eb5d",
    parameters=3_821_079_552, size_gib=7.12, context=131072, hidden=3072, layers=32, heads=32, kv_heads=32,
    vocab=32064, max_model_len=131072, tuning=PHI3_MINI_TUNING,
    description="Phi-3 Mini, 3.8B parameters, 128k context")
PHI_3_MEDIUM_4K = _phi(
    "phi-3-medium-4k-instruct", "microsoft/Phi-3-medium-4k-instruct", "b64223aaea6fbf273c0c8cd0801d5e732dce8897",
    parameters=13_960_238_080, size_gib=26.00, context=4096, hidden=5120, layers=40, heads=40, kv_heads=10,
    vocab=32064, max_model_len=4096, tuning=PHI3_LARGE_TUNING, multinode=True,
    description="Phi-3 Medium, 14B parameters, 4k context, grouped-query attention")
PHI_3_MEDIUM_128K = _phi(
    "phi-3-medium-128k-instruct", "microsoft/Phi-3-medium-128k-instruct", "fa7d2aa4f5ea69b2e36b20d050cdae79c9bfbb3f",
    parameters=13_960_238_080, size_gib=26.00, context=131072, hidden=5120, layers=40, heads=40, kv_heads=10,
    vocab=32064, max_model_len=131072, tuning=PHI3_LARGE_TUNING, multinode=True,
    description="Phi-3 Medium, 14B parameters, 128k context")
PHI_3_5_MINI = _phi(
    "phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", "3145e03a9fd4cdd7cd953c34d9bbf7ad606122ca",
    parameters=3_821_079_552, size_gib=7.12, context=131072, hidden=3072, layers=32, heads=32, kv_heads=32,
    vocab=32064, max_model_len=131072, tuning=PHI3_MINI_TUNING,
    description="Phi-3.5 Mini, 3.8B parameters, 128k context, multilingual")
PHI_4 = _phi(
    "phi-4", "microsoft/phi-4", "187ef0342fff0eb3333be9f00389385e95ef0b61",
    parameters=14_659_507_200, size_gib=27.31, context=16384, hidden=5120, layers=40, heads=40, kv_heads=10,
    vocab=100352, max_model_len=16384, tuning=PHI3_LARGE_TUNING, template=PHI4_CHAT_TEMPLATE, multinode=True,
    description="Phi-4, 14.7B parameters, 16k context, reasoning-focused")
PHI_4_MINI = _phi(
    "phi-4-mini-instruct", "microsoft/Phi-4-mini-instruct", "c0fb9e74abda11b496b7907a9c6c9009a7a0488f",
    parameters=3_836_021_760, size_gib=7.15, context=131072, hidden=3072, layers=32, heads=24, kv_heads=8,
    vocab=200064, max_model_len=131072, tuning=PHI3_MINI_TUNING, template=PHI4_MINI_CHAT_TEMPLATE,
    intermediate=8192, vllm=PHI4_MINI_TOOLS,
    description="Phi-4 Mini, 3.8B parameters, 128k context, 200k vocabulary")

# Phi-2 is listed in upstream v0.12's supported_models.yaml with ``deprecated: true``: upstream
# removed its preset and its admission webhook refuses it (kaito-project/kaito#1667), after pinning
# it to vLLM's v0 engine, which no longer exists (#1369). It is registered so that a Workspace
# naming it is refused with that story instead of "unknown preset". No alias: the Hugging Face id
# stays free for the generic resolver. Family "phi2", as upstream (presets/workspace/models/phi2).
# Shape: microsoft/phi-2's config.json (float16 weights).
PHI_2 = ModelPreset(
    name="phi-2", family="phi2", hf_repo="microsoft/phi-2", revision="ef382358ec9e382308935a992d908de099b64c23",
    architecture="PhiForCausalLM", parameters=2_779_683_840, weight_bytes=5_559_367_680, dtype="float16",
    context_length=2048, num_layers=32, hidden_size=2560, num_attention_heads=32, num_kv_heads=32, vocab_size=51200,
    intermediate_size=10240, license="mit", gated=False,
    runtimes={"transformers": {"dtype": "float16"}}, default_runtime="transformers",
    image=runtime_image("transformers"),
    weights_source="oci", tag="0.2.0", supports_multinode=False,
    deprecated=("upstream KAITO deprecated phi-2 and its admission webhook refuses it (kaito-project/kaito#1667; "
                "v0.12's supported_models.yaml marks it deprecated; vLLM's v1 engine does not serve it). Use "
                "phi-3-mini-4k-instruct or phi-4-mini-instruct, or name the Hugging Face id 'microsoft/phi-2' "
                "with the annotation kaito.sh/runtime: transformers"),
    description="Phi-2, 2.7B parameters, 2k context (deprecated upstream)")

PRESETS = (PHI_3_MINI_4K, PHI_3_MINI_128K, PHI_3_MEDIUM_4K, PHI_3_MEDIUM_128K, PHI_3_5_MINI, PHI_4, PHI_4_MINI,
           PHI_2)
