"""The installed ``llama`` entry point registers Llama 3.1 8B and 3.3 70B, gated, matching upstream's data."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from kaito_core import sizing
from kaito_core.api import parse_workspace, validate_workspace
from kaito_core.plugins import get_plugin_manager, get_registry
from kaito_core.testing.presets import check_preset_plugin

REF = yaml.safe_load((Path(__file__).parent / "data" / "reference.yaml").read_text())
SUPPORTED = {m["name"]: m for m in REF["supported_models"]}
CATALOG = {m["name"]: m for m in REF["model_catalog"]}
NAMES = sorted(SUPPORTED)


def test_entry_point_is_installed_and_healthy():
    assert get_plugin_manager().infos["llama"].errors == []
    assert sorted(get_registry().plugins["llama"].registered["presets"]) == NAMES == [
        "llama-3.1-8b-instruct", "llama-3.3-70b-instruct"]


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    reg = get_registry()
    p = reg.get_preset(name)
    up = SUPPORTED[name]
    repo, commit = up["version"].split("huggingface.co/")[1].split("/commit/")
    cat = CATALOG[repo]
    assert (p.hf_repo, p.revision, p.tag) == (repo, commit, up["tag"])
    assert p.gated is True and up["downloadAuthRequired"] is True
    assert p.weights_source == "runtime-download" and up["downloadAtRuntime"] is True
    assert not p.deprecated
    assert p.architecture == cat["architectures"][0] == "LlamaForCausalLM"
    assert p.license == cat["license"]
    assert (p.context_length, p.hidden_size, p.num_layers, p.num_attention_heads, p.num_kv_heads) == (
        cat["modelTokenLimit"], cat["hiddenSize"], cat["numHiddenLayers"], cat["numAttentionHeads"],
        cat["numKeyValueHeads"])
    assert p.weight_gib == pytest.approx(float(cat["modelFileSize"].removesuffix("Gi")), abs=0.01)
    assert p.weight_bytes == pytest.approx(p.parameters * 2, rel=0.02)
    assert reg.get_preset(repo) is p
    assert p.tuning.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    text = jinja2.Template(p.chat_template).render(messages=[{"role": "user", "content": "Hi"}],
                                                   add_generation_prompt=True)
    assert text.startswith("<|begin_of_text|>") and "Hi<|eot_id|>" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


@pytest.mark.parametrize("name", NAMES)
def test_gated_workspace_needs_model_access_secret(name):
    base = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws"},
            "resource": {"instanceType": "Standard_NC96ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
            "inference": {"preset": {"name": name}}}
    result = validate_workspace(parse_workspace(base), registry=get_registry())
    text = " ".join(str(e) for e in result.errors)
    assert "modelAccessSecret" in text and "gated" in text
    base["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    result = validate_workspace(parse_workspace(base), registry=get_registry())
    assert not [e for e in result.errors if "modelAccessSecret" in str(e)]


def test_70b_is_multi_node_on_single_gpu_nodes_and_one_node_on_big_ones():
    reg = get_registry()
    p = reg.get_preset("llama-3.3-70b-instruct")
    small = sizing.place(p, reg.instance_types, instance_type="Standard_NC24ads_A100_v4")
    # 131.4 GiB of weights + an 8k KV cache over 80 GiB cards (67.2 GiB usable): three nodes.
    assert small.ok and small.node_count == 3 and small.gpus_per_node == 1
    assert (small.tensor_parallel_size, small.pipeline_parallel_size) == (1, 3)
    assert small.per_gpu_required_gib <= small.per_gpu_usable_gib
    big = sizing.place(p, reg.instance_types, instance_type="Standard_ND96amsr_A100_v4")
    assert big.ok and big.node_count == 1 and big.tensor_parallel_size == 8
    # The transformers runtime cannot span nodes: refused, naming a type that fits on one node.
    refused = sizing.place(p, reg.instance_types, instance_type="Standard_NC24ads_A100_v4", runtime="transformers")
    assert not refused.ok and "cannot span nodes" in refused.errors[0]
    assert "Standard_" in refused.errors[-1] and "fits on one node" in refused.errors[-1]


def test_8b_on_upstream_example_type():
    reg = get_registry()
    req = sizing.place(reg.get_preset("llama-3.1-8b-instruct"), reg.instance_types,
                       instance_type="Standard_NC96ads_A100_v4")
    assert req.ok and (req.gpus_per_node, req.node_count, req.tensor_parallel_size) == (4, 1, 4)


def test_conformance():
    assert len(check_preset_plugin("kaito-preset-llama")) == len(NAMES)
