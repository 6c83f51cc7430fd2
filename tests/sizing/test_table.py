"""Every preset on every catalog instance type, against a brute-force oracle written here.

The oracle restates docs/sizing.md from the preset's fields (it does not call kaito_core.sizing)
and searches exhaustively: every node count, every tensor-parallel size, every catalog type.
"""

from __future__ import annotations

import pytest

from kaito_core import sizing
from kaito_core.plugins import get_registry

GIB = 2**30
REG = get_registry()
# The families whose shapes docs/sizing.md restates (other families have their own plugin tests).
PRESETS = sorted((p for p in REG.presets.values() if p.family in ("phi3", "llama", "falcon")), key=lambda p: p.name)
TYPES = sorted(REG.instance_types.values(), key=lambda t: t.name)


# The catalog's architectures, restated from docs/sizing.md: (MLP temporaries at the peak, MLP
# weight matrices per layer), both in units of the intermediate width.
ORACLE_MLP = {"LlamaForCausalLM": (3, 3), "Phi3ForCausalLM": (4, 3), "FalconForCausalLM": (2, 2)}
# Other families' shapes by class-name prefix (docs/sizing.md): gated MLPs unless listed.
PLAIN_MLP = ("Falcon", "GPTNeoX", "GPT2", "GPTBigCode", "GPTJ", "Bloom", "OPT", "PhiForCausalLM")
# docs/sizing.md: vLLM prefills in chunks of 2048 tokens; usable share 0.84 (0.82 on A10/A10G).
PREFILL_CHUNK = 2048


def mlp_shape(arch: str) -> tuple[int, int]:
    if arch in ORACLE_MLP:
        return ORACLE_MLP[arch]
    if arch.startswith("Phi3"):
        return 4, 3
    return (2, 2) if arch.startswith(PLAIN_MLP) else (3, 3)


def usable(it) -> float:
    return (0.82 if it.gpu_model in ("A10", "A10G") else 0.84) * it.gpu_memory_gib


def oracle_need(p, runtime: str) -> float:
    """Model state (GiB) of one replica, from the documented rule."""
    engine = p.runtimes.get(runtime, {})
    ctx = engine.get("max-model-len") or min(2048, p.context_length)
    h = p.hidden_size
    kv = 2 * p.num_layers * p.num_kv_heads * p.head_dim * 2 * ctx
    temps, matrices = mlp_shape(p.architecture)
    per_layer = (p.parameters - 2 * p.vocab_size * h) / p.num_layers
    attention = h * p.head_dim * (p.num_attention_heads + 2 * p.num_kv_heads) + p.num_attention_heads * p.head_dim * h
    inter = p.intermediate_size or max(h, int((per_layer - attention) / (matrices * h)))
    tokens = min(ctx, PREFILL_CHUNK) if runtime == "vllm" else ctx
    peak = tokens * inter * 2 * temps
    if runtime == "transformers" and p.architecture == "FalconForCausalLM" and p.num_kv_heads == 1:
        peak = max(peak, 2 * p.num_attention_heads * ctx * ctx * 4 + ctx * ctx * 4 + 2 * ctx * h * 4)
    act = tokens * h * 2 * 4 + peak + p.vocab_size * 4 * 2
    return (p.weight_bytes + kv + act) / GIB


def oracle_place(p, it, runtime: str):
    """(nodes, tp, pp) or None, by trying every node count from 1 to 16."""
    need = oracle_need(p, runtime)
    can_span = runtime == "vllm" and p.supports_multinode
    for nodes in range(1, 17 if can_span else 2):
        if need / (it.gpu_count * nodes) + 1.0 <= usable(it):
            if runtime != "vllm":
                return nodes, 1, 1
            tps = [t for t in range(1, it.gpu_count + 1) if it.gpu_count % t == 0
                   and p.num_attention_heads % t == 0 and (p.num_kv_heads % t == 0 or t % p.num_kv_heads == 0)]
            tp = max(tps)
            return nodes, tp, it.gpu_count // tp * nodes
    return None


CASES = [(p, it, rt) for p in PRESETS for it in TYPES for rt in ("vllm", "transformers")]


def test_the_table_is_complete():
    assert len(PRESETS) >= 13 and len(TYPES) == 24
    assert {p.family for p in PRESETS} >= {"phi3", "llama", "falcon"}


@pytest.mark.parametrize("rt", ["vllm", "transformers"])
def test_every_preset_on_every_type(rt):
    mismatches = []
    for p in PRESETS:
        for it in TYPES:
            req = sizing.place(p, REG.instance_types, instance_type=it.name, runtime=rt)
            want = oracle_place(p, it, rt)
            got = (req.node_count, req.tensor_parallel_size, req.pipeline_parallel_size) if req.ok else None
            if got != want:
                mismatches.append((p.name, it.name, got, want, req.errors))
            if req.ok:
                assert req.gpus_per_node == it.gpu_count
                assert req.per_gpu_required_gib <= req.per_gpu_usable_gib
                assert req.gpu_memory_required_gib <= req.gpu_memory_available_gib + 1e-9
                assert req.disk_gib >= p.weight_gib + 80
            else:
                assert req.errors and all(isinstance(e, str) and p.name in e or "instance type" in e
                                          for e in req.errors[:1])
    assert not mismatches, mismatches[:5]


@pytest.mark.parametrize("cloud", ["azure", "aws", None])
def test_cheapest_type_is_the_oracles(cloud):
    for p in PRESETS:
        pool = [t for t in TYPES if cloud is None or t.cloud == cloud]
        options = []
        for it in pool:
            got = oracle_place(p, it, p.default_runtime)
            if got is not None:
                nodes = got[0]
                options.append(((nodes, it.total_gpu_memory_gib * nodes, it.gpu_count * nodes, it.vcpus, it.name),
                                it.name))
        req = sizing.place(p, REG.instance_types, cloud=cloud)
        if not options:
            assert not req.ok
            continue
        assert req.ok and req.instance_type == min(options)[1], (p.name, cloud)
        assert "cheapest" in req.reasons[0]


def test_catalog_has_every_reference_sku():
    facts = {  # KAITO-REFERENCE.md: GPU count, total GPU memory (GiB)
        "NV36ads_A10_v5": (1, 24), "NV72ads_A10_v5": (2, 48), "NC24ads_A100_v4": (1, 80),
        "NC48ads_A100_v4": (2, 160), "NC96ads_A100_v4": (4, 320), "ND96asr_A100_v4": (8, 320),
        "ND96amsr_A100_v4": (8, 640), "NC40ads_H100_v5": (1, 94), "NC80adis_H100_v5": (2, 188),
        "ND96isr_H100_v5": (8, 640), "ND96isr_H200_v5": (8, 1128), "NC6s_v3": (1, 16), "NC12s_v3": (2, 32),
        "NC24s_v3": (4, 64)}
    for sku, (gpus, total) in facts.items():
        it = REG.instance_types[f"Standard_{sku}"]
        assert (it.cloud, it.gpu_count, it.total_gpu_memory_gib) == ("azure", gpus, total)
    aws = {n: t for n, t in REG.instance_types.items() if t.cloud == "aws"}
    assert {n for n in aws if n.startswith("g5.")} == {f"g5.{s}" for s in (
        "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")}
    assert all(t.gpu_memory_gib == 24 for n, t in aws.items() if n.startswith("g5."))
    assert (aws["p4d.24xlarge"].gpu_count, aws["p4d.24xlarge"].gpu_memory_gib) == (8, 40)
    assert (aws["p5.48xlarge"].gpu_count, aws["p5.48xlarge"].gpu_memory_gib) == (8, 80)
    assert REG.plugin_of("instance_types", "p5.48xlarge") == "kaito.instance_types"


def test_a_context_that_does_not_fit_names_the_max_model_len_that_does():
    """A 128k preset serves 131072 tokens (48 GiB of KV cache for Phi-3 mini): on a 24 GB A10 the
    refusal names the max-model-len that fits there, and that value places."""
    preset = REG.get_preset("phi-3-mini-128k-instruct")
    a10 = "Standard_NV36ads_A10_v5"
    req = sizing.place(preset, REG.instance_types, instance_type=a10, runtime="vllm")
    assert not req.ok
    (hint,) = [e for e in req.errors if "shorter context" in e]
    tokens = int(hint.split("vllm.max-model-len ")[1].split()[0])
    assert 1024 <= tokens < 131072 and tokens % 1024 == 0
    assert sizing.place(preset, REG.instance_types, instance_type=a10, runtime="vllm", max_model_len=tokens).ok
    assert not sizing.place(preset, REG.instance_types, instance_type=a10, runtime="vllm",
                            max_model_len=tokens + 2048).ok
