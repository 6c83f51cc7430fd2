"""The installed ``mistral`` entry point registers upstream v0.12's Mistral presets with upstream's facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_core import sizing
from kaito_core.plugins import get_plugin_manager, get_registry
from kaito_core.testing.presets import check_preset_plugin, upstream_problems, upstream_repo_and_commit

REF = yaml.safe_load((Path(__file__).parent / "data" / "reference.yaml").read_text())
SUPPORTED = {m["name"]: m for m in REF["supported_models"]}
CATALOG = {m["name"]: m for m in REF["model_catalog"]}
NAMES = sorted(SUPPORTED)


def test_entry_point_registers_every_upstream_mistral_preset():
    assert get_plugin_manager().infos["mistral"].errors == []
    assert sorted(get_registry().plugins["mistral"].registered["presets"]) == NAMES == [
        "ministral-3-14b-instruct", "ministral-3-3b-instruct", "ministral-3-8b-instruct", "mistral-7b",
        "mistral-7b-instruct", "mistral-large-3-675b-instruct"]


def test_conformance():
    assert len(check_preset_plugin("kaito-preset-mistral")) == 6


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    p = get_registry().get_preset(name)
    repo, _ = upstream_repo_and_commit(SUPPORTED[name])
    assert upstream_problems(p, SUPPORTED[name], CATALOG[repo]) == []


@pytest.mark.parametrize("name", NAMES)
def test_engine_arguments_are_upstreams(name):
    p = get_registry().get_preset(name)
    vllm = p.runtimes["vllm"]
    assert vllm["tool-call-parser"] == "mistral" and vllm["enable-auto-tool-choice"] is True
    mistral_format = CATALOG[p.hf_repo].get("loadFormat") == "mistral" and not name.startswith("mistral-7b")
    assert (vllm.get("tokenizer-mode"), vllm.get("load-format"), vllm.get("config-format")) == (
        ("mistral",) * 3 if mistral_format else (None,) * 3)
    # FP8 checkpoints: no vLLM --dtype (it would be read as the weights' dtype).
    assert ("dtype" in vllm) == (CATALOG[p.hf_repo].get("quantMethod") is None)
    assert "reasoning-parser" not in vllm  # upstream lists every Mistral as non-reasoning


def test_only_the_base_7b_is_tunable_and_only_large_3_spans_nodes():
    reg = get_registry()
    assert [n for n in NAMES if reg.get_preset(n).tuning] == ["mistral-7b"]
    assert reg.get_preset("mistral-7b").tuning.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert [n for n in NAMES if reg.get_preset(n).supports_multinode] == ["mistral-large-3-675b-instruct"]


def test_large_3_is_sized_by_total_weights_and_latent_kv():
    reg = get_registry()
    p = reg.get_preset("mistral-large-3-675b-instruct")
    # MLA: (kv_lora_rank 512 + rope 64) x 61 layers x 2 bytes, upstream's BytesPerToken.
    assert p.kv_bytes_per_token(2) == 70272
    est = sizing.estimate(p)
    assert est.weights_gib == pytest.approx(634.70, abs=0.01) and est.kv_cache_gib < 1.0
    req = sizing.place(p, reg.instance_types, instance_type="Standard_NC80adis_H100_v5")
    assert req.ok and req.node_count == 5 and req.tensor_parallel_size == 2


@pytest.mark.parametrize("name,instance_type", [
    ("mistral-7b", "Standard_NC24ads_A100_v4"), ("ministral-3-3b-instruct", "Standard_NV36ads_A10_v5"),
    ("ministral-3-8b-instruct", "Standard_NC24ads_A100_v4"), ("ministral-3-14b-instruct", "Standard_NC24ads_A100_v4")])
def test_one_gpu_on_upstreams_example_type(name, instance_type):
    reg = get_registry()
    req = sizing.place(reg.get_preset(name), reg.instance_types, instance_type=instance_type)
    assert req.ok and (req.gpus_per_node, req.node_count) == (1, 1)
