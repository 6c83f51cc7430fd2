"""The installed ``deepseek`` entry point registers upstream v0.12's DeepSeek presets with upstream's facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_core import sizing
from kaito_core.plugins import get_plugin_manager, get_registry
from kaito_core.testing.presets import check_preset_plugin, render_chat, upstream_problems, upstream_repo_and_commit

REF = yaml.safe_load((Path(__file__).parent / "data" / "reference.yaml").read_text())
SUPPORTED = {m["name"]: m for m in REF["supported_models"]}
CATALOG = {m["name"]: m for m in REF["model_catalog"]}
NAMES = sorted(SUPPORTED)
MOE = ("deepseek-r1-0528", "deepseek-v3-0324")


def test_entry_point_registers_every_upstream_deepseek_preset():
    assert get_plugin_manager().infos["deepseek"].errors == []
    assert sorted(get_registry().plugins["deepseek"].registered["presets"]) == NAMES == [
        "deepseek-r1-0528", "deepseek-r1-distill-llama-8b", "deepseek-r1-distill-qwen-14b", "deepseek-v3-0324"]


def test_conformance():
    assert len(check_preset_plugin("deepseek")) == 4


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    p = get_registry().get_preset(name)
    repo, _ = upstream_repo_and_commit(SUPPORTED[name])
    assert upstream_problems(p, SUPPORTED[name], CATALOG[repo]) == []
    assert p.architecture == CATALOG[repo]["architectures"][0]
    assert p.tuning is None and p.supports_multinode == (name in MOE)


@pytest.mark.parametrize("name", NAMES)
def test_reasoning_and_tool_parsers_are_upstreams(name):
    vllm = get_registry().get_preset(name).runtimes["vllm"]
    assert vllm.get("reasoning-parser") == (None if name == "deepseek-v3-0324" else "deepseek_r1")
    assert vllm.get("tool-call-parser") == ("deepseek_v3" if name in MOE else None)
    assert vllm.get("dtype") == (None if name in MOE else "float16")  # FP8 MoE weights keep their format


def test_r1_opens_a_think_block_and_v3_does_not():
    reg = get_registry()
    assert render_chat(reg.get_preset("deepseek-r1-0528")).endswith("<｜Assistant｜><think>\n")
    assert render_chat(reg.get_preset("deepseek-v3-0324")).endswith("Hello from kaito<｜Assistant｜>")


@pytest.mark.parametrize("name", MOE)
def test_moe_sized_by_total_weights_and_latent_kv(name):
    reg = get_registry()
    p = reg.get_preset(name)
    assert p.kv_bytes_per_token(2) == 2 * 61 * (512 + 64) == 70272
    est = sizing.estimate(p, max_model_len=163840)
    # The whole 163,840-token context costs 10.7 GiB of latent cache (a GQA-style estimate with
    # 128 heads would be 330 GiB); every expert's weights are resident.
    assert est.kv_cache_gib == pytest.approx(70272 * 163840 / 2**30) and est.weights_gib == pytest.approx(641.30, abs=0.01)
    # Upstream's example: Standard_NC80adis_H100_v5 (2 x H100 94 GB) nodes.
    req = sizing.place(p, reg.instance_types, instance_type="Standard_NC80adis_H100_v5")
    assert req.ok and req.node_count == 5 and (req.tensor_parallel_size, req.pipeline_parallel_size) == (2, 5)
    one = sizing.place(p, reg.instance_types, instance_type="Standard_ND96isr_H200_v5")
    assert one.ok and one.node_count == 1 and one.tensor_parallel_size == 8


@pytest.mark.parametrize("name", ["deepseek-r1-distill-llama-8b", "deepseek-r1-distill-qwen-14b"])
def test_distills_fit_one_a100(name):
    reg = get_registry()
    req = sizing.place(reg.get_preset(name), reg.instance_types, instance_type="Standard_NC24ads_A100_v4")
    assert req.ok and (req.gpus_per_node, req.node_count) == (1, 1)
