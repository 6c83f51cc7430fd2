"""The installed ``falcon`` entry point registers Falcon 7B/40B (base and instruct) with upstream's facts."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from kaito_core import sizing
from kaito_core.plugins import get_plugin_manager, get_registry
from kaito_core.testing.presets import check_preset_plugin

REF = yaml.safe_load((Path(__file__).parent / "data" / "reference.yaml").read_text())
SUPPORTED = {m["name"]: m for m in REF["supported_models"]}
SHAPES = REF["config_json"]
NAMES = sorted(SUPPORTED)


def test_entry_point_is_installed_and_healthy():
    assert get_plugin_manager().infos["falcon"].errors == []
    assert sorted(get_registry().plugins["falcon"].registered["presets"]) == NAMES == [
        "falcon-40b", "falcon-40b-instruct", "falcon-7b", "falcon-7b-instruct"]


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    reg = get_registry()
    p = reg.get_preset(name)
    up = SUPPORTED[name]
    repo, commit = up["version"].split("huggingface.co/")[1].split("/commit/")
    assert (p.hf_repo, p.revision, p.tag) == (repo, commit, up["tag"])
    assert not p.gated and p.weights_source == "oci" and not p.deprecated
    shape = SHAPES["falcon-40b" if "40b" in name else "falcon-7b"]
    assert p.architecture == shape["architecture"]
    assert (p.hidden_size, p.num_layers, p.num_attention_heads, p.num_kv_heads, p.vocab_size, p.context_length) == (
        shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"], shape["num_kv_heads"],
        shape["vocab_size"], shape["context"])
    assert p.parameters == pytest.approx(shape["parameters_approx"], rel=0.01)
    assert p.weight_bytes == pytest.approx(shape["safetensors_bytes_approx"], rel=0.01)
    assert p.dtype == "bfloat16" and p.license == "apache-2.0"
    assert reg.get_preset(repo) is p
    assert p.tuning.target_modules == ("query_key_value",)
    text = jinja2.Template(p.chat_template).render(messages=[{"role": "user", "content": "Hi"}],
                                                   add_generation_prompt=True)
    assert text == "User: Hi\nFalcon:"


def test_upstream_v04_gpu_counts_hold():
    reg = get_registry()
    up = SHAPES["upstream_v0.4"]
    f7 = reg.get_preset("falcon-7b")
    # falcon-7b: 1 GPU (an A100 80GB holds it alone).
    one = sizing.place(f7, reg.instance_types, instance_type="Standard_NC24ads_A100_v4")
    assert one.ok and one.total_gpus == up["falcon-7b"]["gpus"]
    assert sizing.estimate(f7).weights_gib <= up["falcon-7b"]["total_gpu_memory_gib"]
    # falcon-40b: more than one 80GB GPU's usable memory, two are enough.
    f40 = reg.get_preset("falcon-40b")
    assert not sizing.place(f40, reg.instance_types, instance_type="Standard_NC24ads_A100_v4", runtime="transformers").ok
    two = sizing.place(f40, reg.instance_types, instance_type="Standard_NC48ads_A100_v4")
    assert two.ok and two.total_gpus == up["falcon-40b"]["gpus"] and two.tensor_parallel_size == 2


def test_71_heads_use_pipeline_stages_not_tensor_parallelism():
    reg = get_registry()
    req = sizing.place(reg.get_preset("falcon-7b"), reg.instance_types, instance_type="Standard_NC24s_v3")
    assert req.ok and (req.gpus_per_node, req.tensor_parallel_size, req.pipeline_parallel_size) == (4, 1, 4)
    assert any("71 attention heads" in r for r in req.reasons)


def test_qlora_tuning_example_fits_two_v100s():
    # Upstream's example tunes falcon-7b with QLoRA on Standard_NC12s_v3 (2 x V100 16GB).
    reg = get_registry()
    req = sizing.place(reg.get_preset("falcon-7b"), reg.instance_types, instance_type="Standard_NC12s_v3",
                       method="qlora")
    assert req.ok and req.node_count == 1 and req.gpus_per_node == 2
    lora = sizing.estimate(reg.get_preset("falcon-7b"), method="lora")
    qlora = sizing.estimate(reg.get_preset("falcon-7b"), method="qlora")
    assert qlora.weights_gib < lora.weights_gib / 2.5


def test_conformance():
    assert len(check_preset_plugin("kaito-preset-falcon")) == len(NAMES)
