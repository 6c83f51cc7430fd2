"""The memory estimate's parts, the decisions' edge cases, and the errors people read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from kaito_core import sizing
from kaito_core.plugins import get_registry
from kaito_core.types import InstanceType, ModelPreset

REG = get_registry()
GIB = 2**30


def preset(name: str) -> ModelPreset:
    return REG.get_preset(name)


def test_kv_cache_per_token_matches_the_shapes():
    # Llama 3.1 8B: 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB per token.
    est = sizing.estimate(preset("llama-3.1-8b-instruct"), max_model_len=2048)
    assert est.kv_cache_gib * GIB == 2 * 32 * 8 * 128 * 2 * 2048
    # Falcon-7B is multi-query: one KV head of 64 -> 8 KiB per token.
    f7 = sizing.estimate(preset("falcon-7b"))
    assert f7.kv_cache_gib * GIB == 2 * 32 * 1 * 64 * 2 * 2048


def test_intermediate_width_is_recovered_from_the_parameter_count():
    # The published configs: Llama 3.1 8B 14336, Llama 3.3 70B 28672, Phi-3-mini 8192,
    # Phi-3-medium 17920, Falcon-40B 4 x 8192.
    for name, width in (("llama-3.1-8b-instruct", 14336), ("llama-3.3-70b-instruct", 28672),
                        ("phi-3-mini-4k-instruct", 8192), ("phi-3-medium-4k-instruct", 17920)):
        assert sizing.intermediate_size(preset(name)) == width, name
    assert sizing.intermediate_size(preset("falcon-40b")) == pytest.approx(32768, rel=0.01)
    # Tied embeddings (Falcon-7B: 4 x 4544 = 18176) come out somewhat narrower, never below hidden.
    assert 4544 <= sizing.intermediate_size(preset("falcon-7b")) <= 18176


def test_prefill_activations_follow_the_architecture():
    llama = preset("llama-3.1-8b-instruct")
    est = sizing.estimate(llama, max_model_len=2048)
    # 4 hidden-sized tensors + 3 intermediate-sized MLP temporaries per token, bf16, plus logits.
    assert est.activations_gib * GIB == 2048 * 2 * (4 * 4096 + 3 * 14336) + 128256 * 4 * 2
    phi = preset("phi-3-mini-4k-instruct")  # fused gate_up: 4 MLP temporaries
    assert sizing.estimate(phi, max_model_len=1024).activations_gib * GIB == \
        1024 * 2 * (4 * 3072 + 4 * 8192) + phi.vocab_size * 8
    # Multi-query Falcon under transformers materializes float32 attention scores; vLLM does not.
    f7 = preset("falcon-7b")
    hf_rt = sizing.estimate(f7, runtime="transformers", max_model_len=2048)
    vllm = sizing.estimate(f7, runtime="vllm", max_model_len=2048)
    scores = 2 * 71 * 2048 * 2048 * 4
    assert hf_rt.activations_gib * GIB > scores > 10 * vllm.activations_gib * GIB
    assert any("multi-query attention" in r for r in hf_rt.reasons)
    # Falcon-40B's 8 KV heads are broadcast to the query heads: the fused kernels run.
    f40 = preset("falcon-40b")
    assert sizing.estimate(f40, runtime="transformers").activations_gib == \
        sizing.estimate(f40, runtime="vllm").activations_gib


def test_context_source_order():
    p = preset("phi-3-mini-4k-instruct")
    assert sizing.context_tokens(p, "vllm")[0] == 4096  # the preset's engine argument
    assert sizing.context_tokens(p, "transformers")[0] == 2048  # upstream's default
    assert sizing.context_tokens(p, "vllm", 1024) == (1024, "max-model-len 1024 from the workspace's config")
    assert sizing.context_tokens(p, "vllm", method="lora")[0] == 2048


def test_estimate_grows_with_context_and_batch():
    p = preset("llama-3.1-8b-instruct")
    a = sizing.estimate(p, max_model_len=2048)
    b = sizing.estimate(p, max_model_len=8192)
    c = sizing.estimate(p, max_model_len=8192, batch=4)
    assert a.total_gib < b.total_gib < c.total_gib
    assert c.kv_cache_gib == pytest.approx(4 * b.kv_cache_gib)
    assert a.weights_gib == b.weights_gib == c.weights_gib == pytest.approx(14.96, abs=0.01)


def test_dtype_override_rescales_weights():
    p = preset("phi-3-mini-4k-instruct")
    assert sizing.estimate(p, dtype="float32").weights_gib == pytest.approx(2 * p.weight_gib)


def test_tuning_is_method_aware():
    p = preset("llama-3.1-8b-instruct")
    lora, qlora = sizing.estimate(p, method="lora"), sizing.estimate(p, method="qlora")
    assert lora.kv_cache_gib == 0 and lora.tuning_state_gib > 0
    assert lora.weights_gib == pytest.approx(p.weight_gib)
    # 4-bit base weights (+ 16-bit embeddings and head): well under half of bf16.
    embed = 2 * p.vocab_size * p.hidden_size
    assert qlora.weights_gib * GIB == pytest.approx((p.parameters - embed) * 0.516 + embed * 2)
    assert qlora.total_gib < lora.total_gib
    # LoRA r=8 on q,k,v,o over 32 layers: 2 * 8 * 4096 * 4 * 32 parameters, 16 bytes each.
    assert lora.tuning_state_gib * GIB == 2 * 8 * 4096 * 4 * 32 * 16
    assert sizing.estimate(p, method="lora", batch=2).activations_gib > lora.activations_gib


def test_tuning_stays_on_one_node():
    p = preset("llama-3.3-70b-instruct")
    req = sizing.place(p, REG.instance_types, instance_type="Standard_NC24ads_A100_v4", method="lora")
    assert not req.ok and "tuning runs on one node" in req.errors[0]
    best = sizing.place(p, REG.instance_types, method="qlora", cloud="azure")
    assert best.ok and best.node_count == 1


def test_recipe_memory_floor_is_checked():
    # Upstream's recipe asks 16 GiB per GPU for phi-3-mini LoRA: eight made-up 12 GiB cards hold
    # the estimate, but the recipe's floor refuses them.
    p = preset("phi-3-mini-4k-instruct")
    tiny = InstanceType(name="test-12g", cloud="test", gpu_count=8, gpu_memory_gib=12, gpu_model="T")
    req = sizing.place(p, [tiny], instance_type="test-12g", method="lora")
    assert not req.ok and any("recipe asks for 16 GiB per GPU" in e for e in req.errors)


def test_errors_name_the_fix():
    p = preset("phi-3-mini-4k-instruct")
    unknown = sizing.place(p, REG.instance_types, instance_type="Standard_Nope")
    assert not unknown.ok and "Standard_Nope" in unknown.errors[0] and "Standard_NC24ads_A100_v4" in unknown.errors[0]
    too_long = sizing.place(p, REG.instance_types, instance_type="Standard_NC24ads_A100_v4", max_model_len=8192)
    assert any("exceeds" in e and "4096" in e for e in too_long.errors)
    bad_rt = sizing.place(p, REG.instance_types, instance_type="Standard_NC24ads_A100_v4", runtime="tgi")
    assert any("runtime 'tgi' is not supported" in e for e in bad_rt.errors)
    with pytest.raises(ValueError, match="method 'full'"):
        sizing.estimate(p, method="full")
    with pytest.raises(ValueError, match="batch"):
        sizing.estimate(p, batch=0)


def test_single_node_presets_are_refused_with_an_alternative():
    p = preset("llama-3.1-8b-instruct")  # 15 GiB of weights, not marked multi-node
    req = sizing.place(p, REG.instance_types, instance_type="Standard_NC6s_v3")
    assert not req.ok and "not marked for multi-node" in req.errors[0]
    assert "an instance type that fits on one node: Standard_" in req.errors[-1]
    multi = dataclasses.replace(p, supports_multinode=True)
    assert sizing.place(multi, REG.instance_types, instance_type="Standard_NC6s_v3").node_count == 2


def test_runtime_object_decides_multinode():
    p = preset("llama-3.3-70b-instruct")
    vllm = REG.runtimes["vllm"]
    assert sizing.place(p, REG.instance_types, instance_type="Standard_NC24ads_A100_v4", runtime=vllm).ok
    no_span = dataclasses.replace(vllm, supports_multinode=False)
    assert not sizing.place(p, REG.instance_types, instance_type="Standard_NC24ads_A100_v4", runtime=no_span).ok


def test_nothing_fits_an_empty_or_small_catalog():
    p = preset("llama-3.3-70b-instruct")
    small = InstanceType(name="t4", cloud="test", gpu_count=1, gpu_memory_gib=16, gpu_model="T4")
    req = sizing.place(p, [small], max_nodes=2)
    assert not req.ok and "no instance type in the catalog (1 types) fits" in req.errors[0]


def test_parallel_sizes():
    assert sizing.parallel_sizes(preset("falcon-40b"), 8) == (8, 1)  # 128 heads, 8 KV heads
    assert sizing.parallel_sizes(preset("falcon-7b"), 8, 2) == (1, 16)  # 71 heads
    assert sizing.parallel_sizes(preset("phi-4-mini-instruct"), 8) == (8, 1)  # 24 heads, 8 KV heads
    assert sizing.parallel_sizes(preset("phi-3-medium-4k-instruct"), 4) == (2, 2)  # 40 heads, 10 KV heads


def test_requirement_json_shape():
    req = sizing.place(preset("phi-4"), REG.instance_types, instance_type="Standard_NC24ads_A100_v4")
    d = req.to_dict()
    for key in ("preset", "runtime", "instanceType", "gpusPerNode", "nodeCount", "gpuMemoryRequiredGiB",
                "gpuMemoryAvailableGiB", "diskGiB", "reasons", "errors"):
        assert key in d
    assert d["diskGiB"] == 108 and isinstance(d["reasons"], list) and d["errors"] == []


REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="upstream reference files not present")
@pytest.mark.parametrize("plugin", ["phi3", "llama", "falcon"])
def test_vendored_reference_copies_are_current(plugin):
    copy = yaml.safe_load((Path(__file__).resolve().parents[2] / "plugins" / plugin / "tests" / "data" /
                           "reference.yaml").read_text())
    supported = {m["name"]: m for m in yaml.safe_load((REFERENCE / "supported_models.yaml").read_text())["models"]}
    catalog = {m["name"]: m for m in yaml.safe_load((REFERENCE / "model_catalog.yaml").read_text())["models"]}
    for entry in copy["supported_models"]:
        assert supported[entry["name"]] == entry
    for entry in copy["model_catalog"]:
        assert catalog[entry["name"]] == entry
