"""Tiny real models with random weights, made locally (no model hub needed).

They have the real architectures (Llama, Phi-3, Falcon), a real byte-level BPE tokenizer with
a chat template, and are saved as safetensors, so they load through exactly the same
``AutoModelForCausalLM`` path as published weights. Their answers are random text: anything
built on them says so ("random weights").

Used by the tests, the benchmarks and ``kaito demo``. Imports torch/transformers lazily.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ARCHITECTURES = ("llama", "phi3", "falcon")

# Varied text so the BPE vocabulary fills up (a short corpus stops the vocab early).
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes that have enough GPU memory.",
    "A workspace describes a model, the instance type and how many nodes it needs.",
    "What is the capital of France? Paris is the capital of France.",
    "def add(a, b):\n    return a + b\n",
    "LoRA adapters add low-rank matrices to attention projections.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2048 4096.",
    "user assistant system tool function message content role",
    "Hello! How can I help you today? I am a tiny model with random weights.",
    "Quantization stores weights in four bits; nf4 keeps normal-distributed values accurate.",
    "Streaming responses arrive as server-sent events, ending with [DONE].",
    "The operator reconciles the desired state with the observed state of the cluster.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]


def build_tokenizer(vocab_size: int = 512) -> Any:
    """A ByteLevel BPE tokenizer trained on a small varied corpus, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
                                   bos_token="<|endoftext|>", unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_config(arch: str, *, vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4,
                 kv_heads: int | None = None, context: int = 512, intermediate: int | None = None,
                 eos_token_id: int | None = None, pad_token_id: int | None = None) -> Any:
    from transformers import FalconConfig, LlamaConfig, Phi3Config

    kv = heads if kv_heads is None else kv_heads
    inter = intermediate or hidden * 4
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                  bos_token_id=None, tie_word_embeddings=False)
    if arch == "llama":
        return LlamaConfig(intermediate_size=inter, num_key_value_heads=kv,
                           max_position_embeddings=context, **common)
    if arch == "phi3":
        return Phi3Config(intermediate_size=inter, num_key_value_heads=kv,
                          max_position_embeddings=context, original_max_position_embeddings=context,
                          **common)
    if arch == "falcon":
        return FalconConfig(num_kv_heads=kv, new_decoder_architecture=kv_heads is not None and kv != 1,
                            multi_query=kv == 1, max_position_embeddings=context, **common)
    raise ValueError(f"arch {arch!r}: expected one of {ARCHITECTURES}")


def build_tiny_model(path: str | Path, arch: str = "llama", *, hidden: int = 64, layers: int = 2,
                     heads: int = 4, kv_heads: int | None = None, vocab_size: int = 512,
                     context: int = 512, intermediate: int | None = None, dtype: str = "float32",
                     seed: int = 0) -> Path:
    """Save a random-weight model + tokenizer to ``path`` (safetensors) and return the path.

    Re-uses ``path`` when it already holds a model built with the same arguments.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    spec = dict(arch=arch, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
                vocab_size=vocab_size, context=context, intermediate=intermediate, dtype=dtype, seed=seed)
    stamp = path / "kaito-tiny.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("spec") == spec:
        return path
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(vocab_size=min(vocab_size, 512))
    config = build_config(arch, vocab_size=max(vocab_size, len(tok)), hidden=hidden, layers=layers,
                          heads=heads, kv_heads=kv_heads, context=context, intermediate=intermediate,
                          eos_token_id=tok.convert_tokens_to_ids("<|end|>"),
                          pad_token_id=tok.convert_tokens_to_ids("<|pad|>"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    stamp.write_text(json.dumps({"spec": spec, "note": "random weights: answers are meaningless"}))
    return path
