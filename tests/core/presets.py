"""Helpers for contract tests: a valid preset with any field overridden."""

from __future__ import annotations

from kaito_core.types import ModelPreset, TuningRecipe

BASE = dict(family="test", hf_repo="org/tiny", revision="0" * 40, architecture="LlamaForCausalLM",
            parameters=1_000_000, weight_bytes=2_000_000, dtype="bfloat16", context_length=2048,
            num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=2, vocab_size=512,
            tuning=TuningRecipe(target_modules=("q_proj", "v_proj")))


def make_preset(name: str, **overrides) -> ModelPreset:
    fields = {"name": name, **BASE, **overrides}
    return ModelPreset(**fields)
