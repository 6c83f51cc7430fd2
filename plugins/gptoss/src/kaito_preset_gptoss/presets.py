"""The gpt-oss presets: gpt-oss-20b and gpt-oss-120b (OpenAI, Apache-2.0).

Facts from upstream KAITO v0.12 (supported_models.yaml: commits, tags — 20b ships as an OCI
artifact, 120b is downloaded at run time; model_catalog.yaml: shapes, 128k context;
presets/workspace/models/gpt and the preset generator: vLLM's ``openai_gptoss`` reasoning parser
and ``openai`` tool parser, no tuning, multi-node with vLLM).

Both are mixture-of-experts models (20b: 32 experts, 120b: 128 experts, 4 active per token)
whose expert weights are MXFP4 (4.25 bits) beside 16-bit attention and embeddings. Sizing counts
the TOTAL weights as stored (``weights_dtype`` mxfp4; the checkpoint's 0.66 byte per parameter
average includes the 16-bit parts) and computes in bfloat16 (``dtype``), and uses the ACTIVE MLP
width (4 x 2880) for activations. Weight sizes: upstream's catalog ``modelFileSize``
(25.63Gi, 121.54Gi) adds up every safetensors file of the repository, which holds the weights
twice (the Hugging Face shards and ``original/``); vLLM loads one copy, which is what upstream's
gpt preset declares (12.9Gi, 60.77Gi: "single 80GB GPU") and what the presets use.
"""

from __future__ import annotations

from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset

GIB = 2**30

# The harmony format: a system message, the caller's system prompt as developer instructions,
# then user/assistant messages; generation opens an assistant message.
HARMONY_CHAT_TEMPLATE = (
    "{{ '<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Reasoning: medium\n\n# Valid channels: analysis, commentary, final.<|end|>' }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ '<|start|>developer<|message|># Instructions\n\n' + message['content'] + '<|end|>' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<|start|>user<|message|>' + message['content'] + '<|end|>' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<|start|>assistant<|channel|>final<|message|>' + message['content'] + '<|end|>' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start|>assistant' }}{%- endif -%}"
)

# No --dtype: the MXFP4 checkpoints keep their stored format (vLLM picks bfloat16 activations).
GPTOSS_VLLM = {"reasoning-parser": "openai_gptoss", "tool-call-parser": "openai", "enable-auto-tool-choice": True}


def _gptoss(name: str, repo: str, revision: str, *, parameters: int, size_gib: float, layers: int,
            source: str, tag: str, description: str) -> ModelPreset:
    return ModelPreset(
        name=name, family="gptoss", hf_repo=repo, revision=revision, architecture="GptOssForCausalLM",
        parameters=parameters, weight_bytes=int(size_gib * GIB), dtype="bfloat16", weights_dtype="mxfp4",
        context_length=131072,
        num_layers=layers, hidden_size=2880, num_attention_heads=64, num_kv_heads=8, head_dim=64,
        intermediate_size=4 * 2880, vocab_size=201088, license="apache-2.0", gated=False,
        chat_template=HARMONY_CHAT_TEMPLATE,
        runtimes={"vllm": {**GPTOSS_VLLM, "max-model-len": 8192},
                  "transformers": {"dtype": "auto"}},
        default_runtime="vllm", image=runtime_image("vllm"), weights_source=source, tuning=None, tag=tag,
        aliases=(repo,), supports_multinode=True, description=description)


GPT_OSS_20B = _gptoss(
    "gpt-oss-20b", "openai/gpt-oss-20b", "db6852caddef0cf0c1f729034ed700c84eab376e",
    parameters=20_914_757_184, size_gib=12.9, layers=24, source="oci", tag="0.0.2",
    description="gpt-oss-20b: 21B mixture-of-experts (3.6B active), MXFP4, reasoning and tool calling, "
                "128k context (served at 8k by default); one 24 GB GPU")
GPT_OSS_120B = _gptoss(
    "gpt-oss-120b", "openai/gpt-oss-120b", "b5c939de8f754692c1647ca79fbf85e8c1e70f8a",
    parameters=116_829_156_672, size_gib=60.77, layers=36, source="runtime-download", tag="0.0.1",
    description="gpt-oss-120b: 117B mixture-of-experts (5.1B active), MXFP4, reasoning and tool calling, "
                "128k context (served at 8k by default); one 80 GB GPU")

PRESETS = (GPT_OSS_20B, GPT_OSS_120B)
