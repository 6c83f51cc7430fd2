"""Contract types validate themselves: an impossible field is refused with its name and value."""

from __future__ import annotations

import pytest

from kaito_core.errors import ContractError
from kaito_core.types import InstanceType, Runtime, TuningRecipe

from tests.core.presets import make_preset


@pytest.mark.parametrize("field,value,words", [
    ("name", "Bad_Name", "name"),
    ("name", "x" * 64, "name"),
    ("family", "Phi 3", "family"),
    ("hf_repo", "not-a-repo", "hf_repo"),
    ("revision", "main", "40-hex"),
    ("architecture", "Llama", "ForCausalLM"),
    ("parameters", 0, "parameters"),
    ("parameters", -5, "parameters"),
    ("weight_bytes", 10, "weight_bytes"),
    ("dtype", "fp13", "dtype"),
    ("context_length", 0, "context_length"),
    ("num_kv_heads", 3, "divisor"),
    ("num_kv_heads", 8, "at most"),
    ("default_runtime", "tgi", "default_runtime"),
    ("weights_source", "ftp", "weights_source"),
    ("weights_dtype", "nf3", "weights_dtype"),
    ("weights_dtype", "mxfp4", "weight_bytes"),  # 2 MB for 1M parameters is not 4.25 bits each
    ("kv_lora_rank", 512, "kv_lora_rank/qk_rope_head_dim"),  # without qk_rope_head_dim
    ("runtimes", {}, "runtimes"),
    ("aliases", ("same",), "aliases"),
    ("chat_template", "no jinja", "chat_template"),
    ("tuning", TuningRecipe(target_modules=()), "target_modules"),
    ("tuning", TuningRecipe(methods=("full",), target_modules=("q",)), "methods"),
    ("tuning", TuningRecipe(target_modules=("q",), lora_dropout=1.5), "lora_dropout"),
    ("tuning", TuningRecipe(target_modules=("q",), memory_gib_per_gpu={"dpo": 3}), "memory_gib_per_gpu"),
])
def test_invalid_preset_field_is_named(field, value, words):
    name = "same" if field == "aliases" else "p"
    overrides = {field: value} if field != "name" else {}
    with pytest.raises(ContractError) as err:
        make_preset(value if field == "name" else name, **overrides)
    assert err.value.field.endswith(field) or field in err.value.field or words in str(err.value)
    assert words in str(err.value)
    assert "preset" in str(err.value)


def test_valid_preset_derives_head_dim_and_kv_bytes():
    p = make_preset("ok", num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=2)
    assert p.head_dim == 16
    assert p.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 2


def test_multi_head_latent_attention_caches_one_latent_per_layer():
    # DeepSeek-V3's shape: 61 layers x (512 + 64) x 2 bytes = upstream's BytesPerToken 70272
    p = make_preset("mla", num_layers=61, hidden_size=7168, num_attention_heads=128, num_kv_heads=128,
                    head_dim=128, kv_lora_rank=512, qk_rope_head_dim=64, parameters=10**6, weight_bytes=10**6,
                    weights_dtype="fp8")
    assert p.kv_bytes_per_token(2) == 70272
    assert p.bytes_per_stored_param == 1.0 and p.bytes_per_param == 2.0


def test_multimodal_classes_and_quantised_weights_are_accepted():
    p = make_preset("gemma", architecture="Gemma3ForConditionalGeneration")
    assert p.architecture == "Gemma3ForConditionalGeneration"
    q = make_preset("oss", weights_dtype="mxfp4", weight_bytes=600_000)
    from kaito_core import sizing

    est = sizing.estimate(q, runtime="vllm", dtype="float16")  # a V100's compute dtype
    assert est.weights_gib == pytest.approx(600_000 / 2**30)  # the stored MXFP4 bytes, not cast


@pytest.mark.parametrize("kwargs,field", [
    (dict(gpu_count=0), "gpu_count"), (dict(gpu_memory_gib=-1), "gpu_memory_gib"),
    (dict(cloud="Azure Cloud"), "cloud"), (dict(hourly_usd=0), "hourly_usd")])
def test_invalid_instance_type(kwargs, field):
    base = dict(name="X", cloud="azure", gpu_count=1, gpu_memory_gib=16, gpu_model="V100")
    with pytest.raises(ContractError, match=field):
        InstanceType(**{**base, **kwargs})


def test_invalid_runtime():
    with pytest.raises(ContractError, match="name"):
        Runtime(name="Not Valid", module="x")


def test_provisioner_settings_put_the_operators_over_the_environment():
    from kaito_core.types import Settings

    s = Settings({"CLOUD_PROVIDER": " aws ", "EMPTY": " "}, environ={"CLOUD_PROVIDER": "azure", "ONLY_ENV": "x"})
    assert s.get("CLOUD_PROVIDER") == "aws" and s.get("ONLY_ENV") == "x"
    assert s.get("EMPTY", "default") == "default" and s.get("MISSING") == ""
