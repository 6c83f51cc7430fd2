"""The DeepSeek presets: R1-0528 and V3-0324 (671B MoE), and the R1 distills of Llama 8B and Qwen 14B.

Facts from upstream KAITO v0.12 (supported_models.yaml: commits, tags, ``downloadAtRuntime``;
model_catalog.yaml: shapes, context, safetensors sizes, FP8; presets/workspace/models/deepseek:
engine arguments, multi-node support, no tuning):

- The distills are dense models that ship as OCI artifacts, served with vLLM's ``deepseek_r1``
  reasoning parser (``<think>`` content goes to ``reasoning_content``) in float16, on one node.
- R1-0528 and V3-0324 are mixture-of-experts models (671B total, 37B active per token) with FP8
  weights (``weight_bytes`` as stored; ``dtype`` bfloat16 is the dtype vLLM computes in, passed as
  ``--dtype``, which leaves FP8 weights as they are), downloaded at run time and served multi-node
  with vLLM (Ray). Sizing counts their
  TOTAL weights (every expert is resident) and their ACTIVE KV cache: multi-head latent
  attention caches ``kv_lora_rank + qk_rope_head_dim = 512 + 64`` values per token and layer,
  shared by all 128 heads (61 x 576 x 2 bytes = upstream's BytesPerToken 70272); ``weights_dtype``
  fp8 keeps the stored size in sizing whatever the compute dtype.
  Their activation estimate uses the active MLP width: 8 routed + 1 shared expert of 2048.
- Parameter counts are the published safetensors totals (685B, including the multi-token-
  prediction layer upstream's file size also counts).
"""

from __future__ import annotations

from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset

GIB = 2**30
# DeepSeek's special tokens use fullwidth bars and the "▁" word marker.
BOS, USER, ASSISTANT, EOS = "<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>"


def _template(think: bool) -> str:
    # System prompts go first, then alternating User/Assistant turns; R1 models open the
    # generation with "<think>\n" (DeepSeek's 2025 template) so reasoning is always emitted.
    return (
        "{{ '" + BOS + "' }}"
        "{%- for message in messages -%}{%- if message['role'] == 'system' -%}{{ message['content'] }}"
        "{%- endif -%}{%- endfor -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{{ '" + USER + "' + message['content'] }}"
        "{%- elif message['role'] == 'assistant' -%}{{ '" + ASSISTANT + "' + message['content'] + '" + EOS + "' }}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '" + ASSISTANT + ("<think>\\n" if think else "") + "' }}{%- endif -%}")


R1_CHAT_TEMPLATE = _template(think=True)
V3_CHAT_TEMPLATE = _template(think=False)

DISTILL_VLLM = {"dtype": "float16", "reasoning-parser": "deepseek_r1"}
# Upstream also passes its image's tool-chat-deepseek{r1,v3}.jinja; kaito's runtime uses the
# tokenizer's own template. No engine "dtype": sizing would read it as the FP8 weights' dtype.
R1_VLLM = {"reasoning-parser": "deepseek_r1", "tool-call-parser": "deepseek_v3", "enable-auto-tool-choice": True}
V3_VLLM = {"tool-call-parser": "deepseek_v3", "enable-auto-tool-choice": True}


def _distill(name: str, repo: str, revision: str, *, architecture: str, parameters: int, size_gib: float,
             hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
             description: str) -> ModelPreset:
    return ModelPreset(
        name=name, family="deepseek", hf_repo=repo, revision=revision, architecture=architecture,
        parameters=parameters, weight_bytes=int(size_gib * GIB), dtype="bfloat16", context_length=131072,
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_kv_heads=kv_heads,
        intermediate_size=intermediate, vocab_size=vocab, license="mit", gated=False,
        chat_template=R1_CHAT_TEMPLATE,
        runtimes={"vllm": {**DISTILL_VLLM, "max-model-len": 8192},
                  "transformers": {"dtype": "bfloat16"}},
        default_runtime="vllm", image=runtime_image("vllm"), weights_source="oci", tuning=None, tag="0.2.0",
        aliases=(repo,), supports_multinode=False, description=description)


def _moe(name: str, repo: str, revision: str, *, template: str, vllm: dict, description: str) -> ModelPreset:
    return ModelPreset(
        name=name, family="deepseek", hf_repo=repo, revision=revision, architecture="DeepseekV3ForCausalLM",
        parameters=684_531_386_000, weight_bytes=int(641.30 * GIB), dtype="bfloat16", context_length=163840,
        num_layers=61, hidden_size=7168, num_attention_heads=128, num_kv_heads=128, head_dim=128,
        kv_lora_rank=512, qk_rope_head_dim=64, weights_dtype="fp8",
        intermediate_size=18432, vocab_size=129280, license="mit", gated=False, chat_template=template,
        runtimes={"vllm": {**vllm, "max-model-len": 8192},
                  "transformers": {"dtype": "bfloat16"}},
        default_runtime="vllm", image=runtime_image("vllm"), weights_source="runtime-download", tuning=None,
        tag="0.0.1", aliases=(repo,), supports_multinode=True, description=description)


DEEPSEEK_R1_DISTILL_LLAMA_8B = _distill(
    "deepseek-r1-distill-llama-8b", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    "6a6f4aa4197940add57724a7707d069478df56b1", architecture="LlamaForCausalLM", parameters=8_030_261_248,
    size_gib=14.96, hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256,
    description="DeepSeek-R1 distilled into Llama 3.1 8B: reasoning, 128k context (served at 8k by default)")
DEEPSEEK_R1_DISTILL_QWEN_14B = _distill(
    "deepseek-r1-distill-qwen-14b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "1df8507178afcc1bef68cd8c393f61a886323761", architecture="Qwen2ForCausalLM", parameters=14_770_033_664,
    size_gib=27.51, hidden=5120, layers=48, heads=40, kv_heads=8, intermediate=13824, vocab=152064,
    description="DeepSeek-R1 distilled into Qwen2.5 14B: reasoning, 128k context (served at 8k by default)")
DEEPSEEK_R1_0528 = _moe(
    "deepseek-r1-0528", "deepseek-ai/DeepSeek-R1-0528", "4236a6af538feda4548eca9ab308586007567f52",
    template=R1_CHAT_TEMPLATE, vllm=R1_VLLM,
    description="DeepSeek-R1-0528: 671B mixture-of-experts reasoning model (FP8, MLA), tool calling; "
                "multi-node with vLLM")
DEEPSEEK_V3_0324 = _moe(
    "deepseek-v3-0324", "deepseek-ai/DeepSeek-V3-0324", "e9b33add76883f293d6bf61f6bd89b497e80e335",
    template=V3_CHAT_TEMPLATE, vllm=V3_VLLM,
    description="DeepSeek-V3-0324: 671B mixture-of-experts chat model (FP8, MLA), tool calling; "
                "multi-node with vLLM")

PRESETS = (DEEPSEEK_R1_DISTILL_LLAMA_8B, DEEPSEEK_R1_DISTILL_QWEN_14B, DEEPSEEK_R1_0528, DEEPSEEK_V3_0324)
