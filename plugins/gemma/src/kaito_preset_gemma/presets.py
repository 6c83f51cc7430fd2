"""The Gemma presets: Gemma 3 4B and 27B instruction-tuned.

Facts from upstream KAITO v0.12 (supported_models.yaml: commits, tags, ``downloadAtRuntime``;
model_catalog.yaml: shapes, 128k context, safetensors sizes; presets/workspace/models/gemma3: no
extra vLLM arguments, no tuning, one node). Gemma 3 is multimodal upstream and the presets keep
its class, ``Gemma3ForConditionalGeneration`` (served as a text model). The weights are gated on Hugging Face
(Google's Gemma terms must be accepted), which is why upstream's examples name
``presetOptions.modelAccessSecret``: the presets are ``gated`` so a Workspace without the
Secret is refused before it is scheduled rather than failing at download time.
"""

from __future__ import annotations

from kaito_core.images import runtime_image
from kaito_core.types import ModelPreset

GIB = 2**30

# Gemma turns: the system prompt is folded into the first user turn; the assistant is "model".
GEMMA3_CHAT_TEMPLATE = (
    "{{ '<bos>' }}{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\n' + ns.system"
    " + message['content'] + '<end_of_turn>\n' }}{%- set ns.system = '' -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def _gemma(name: str, repo: str, revision: str, *, parameters: int, size_gib: float, hidden: int, layers: int,
           heads: int, kv_heads: int, head_dim: int, intermediate: int, description: str) -> ModelPreset:
    return ModelPreset(
        name=name, family="gemma", hf_repo=repo, revision=revision,
        architecture="Gemma3ForConditionalGeneration",
        parameters=parameters, weight_bytes=int(size_gib * GIB), dtype="bfloat16", context_length=131072,
        num_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        intermediate_size=intermediate, vocab_size=262208, license="gemma", gated=True,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        runtimes={"vllm": {"dtype": "bfloat16", "max-model-len": 8192},
                  "transformers": {"dtype": "bfloat16"}},
        default_runtime="vllm", image=runtime_image("vllm"), weights_source="runtime-download", tuning=None,
        tag="0.0.1", aliases=(repo,), supports_multinode=False, description=description)


GEMMA_3_4B = _gemma(
    "gemma-3-4b-instruct", "google/gemma-3-4b-it", "093f9f388b31de276ce2de164bdc2081324b9767",
    parameters=4_300_079_472, size_gib=8.01, hidden=2560, layers=34, heads=8, kv_heads=4, head_dim=256,
    intermediate=10240,
    description="Gemma 3 4B instruction-tuned, 128k context (served at 8k by default); one 24 GB GPU "
                "(gated: needs a Hugging Face token)")
GEMMA_3_27B = _gemma(
    "gemma-3-27b-instruct", "google/gemma-3-27b-it", "005ad3404e59d6023443cb575daa05336842228a",
    parameters=27_432_406_640, size_gib=51.10, hidden=5376, layers=62, heads=32, kv_heads=16, head_dim=128,
    intermediate=21504,
    description="Gemma 3 27B instruction-tuned, 128k context (served at 8k by default); one 80 GB GPU "
                "(gated: needs a Hugging Face token)")

PRESETS = (GEMMA_3_4B, GEMMA_3_27B)
