"""The installed ``phi3`` entry point registers the full Phi catalog, each preset matching upstream's data."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from kaito_core import sizing
from kaito_core.api import parse_workspace, validate_workspace
from kaito_core.plugins import get_plugin_manager, get_registry
from kaito_core.testing.presets import check_preset_plugin, upstream_problems

REF = yaml.safe_load((Path(__file__).parent / "data" / "reference.yaml").read_text())
SUPPORTED = {m["name"]: m for m in REF["supported_models"]}
CATALOG = {m["name"]: m for m in REF["model_catalog"]}
NAMES = sorted(SUPPORTED)


def _repo_and_commit(url: str) -> tuple[str, str]:
    repo, commit = url.split("huggingface.co/")[1].split("/commit/")
    return repo, commit


def test_entry_point_is_installed_and_healthy():
    pm = get_plugin_manager()
    info = pm.infos["phi3"]
    assert info.distribution == "kaito-preset-phi3" and info.errors == []
    assert sorted(get_registry().plugins["phi3"].registered["presets"]) == sorted(NAMES + ["phi-2"])
    assert NAMES == sorted(["phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct",
                            "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "phi-4", "phi-4-mini-instruct"])


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    reg = get_registry()
    p = reg.get_preset(name)
    up = SUPPORTED[name]
    repo, commit = _repo_and_commit(up["version"])
    cat = CATALOG[repo]
    assert (p.hf_repo, p.revision, p.tag) == (repo, commit, up["tag"])
    assert bool(p.deprecated) == bool(up.get("deprecated", False))
    assert p.gated == bool(up.get("downloadAuthRequired", False))
    assert p.weights_source == ("runtime-download" if up.get("downloadAtRuntime") else "oci")
    assert p.architecture == cat["architectures"][0] == "Phi3ForCausalLM"
    assert p.license == cat["license"]
    assert (p.context_length, p.hidden_size, p.num_layers, p.num_attention_heads, p.num_kv_heads) == (
        cat["modelTokenLimit"], cat["hiddenSize"], cat["numHiddenLayers"], cat["numAttentionHeads"],
        cat["numKeyValueHeads"])
    assert p.weight_gib == pytest.approx(float(cat["modelFileSize"].removesuffix("Gi")), abs=0.01)
    assert p.dtype == "bfloat16" and p.weight_bytes == pytest.approx(p.parameters * 2, rel=0.02)
    # The HF id is an alias: a Workspace may name the repository instead of the preset.
    assert reg.get_preset(repo) is p and reg.get_preset(repo.lower()) is p


@pytest.mark.parametrize("name", NAMES)
def test_runtimes_template_and_tuning(name):
    p = get_registry().get_preset(name)
    assert set(p.runtimes) == {"vllm", "transformers"} and p.default_runtime == "vllm"
    vllm = p.runtimes["vllm"]
    assert vllm["dtype"] == "bfloat16" and vllm["max-model-len"] <= p.context_length
    text = jinja2.Template(p.chat_template).render(
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert "Hi" in text and "S" in text and text.rstrip().endswith(("<|assistant|>", "<|im_sep|>"))
    assert p.tuning is not None and p.tuning.target_modules == ("qkv_proj", "o_proj")
    assert set(p.tuning.methods) == {"lora", "qlora"}


@pytest.mark.parametrize("name", NAMES)
def test_sizes_on_upstream_example_type(name):
    # Upstream's examples serve Phi-3 on one A100 80GB (Standard_NC24ads_A100_v4).
    reg = get_registry()
    req = sizing.place(reg.get_preset(name), reg.instance_types, instance_type="Standard_NC24ads_A100_v4")
    assert req.ok, req.errors
    assert (req.gpus_per_node, req.node_count) == (1, 1)
    assert req.disk_gib == int(-(-reg.get_preset(name).weight_gib // 1)) + 80


def test_mini_fits_one_a10_and_medium_needs_two():
    reg = get_registry()
    a10 = "Standard_NV36ads_A10_v5"
    assert sizing.place(reg.get_preset("phi-3-mini-4k-instruct"), reg.instance_types, instance_type=a10).ok
    medium = sizing.place(reg.get_preset("phi-3-medium-4k-instruct"), reg.instance_types, instance_type=a10)
    # 26 GiB of weights cannot fit a 24 GiB card; the preset allows multi-node vLLM serving.
    assert medium.ok and medium.node_count == 2 and medium.pipeline_parallel_size == 2


def test_conformance():
    assert len(check_preset_plugin("kaito-preset-phi3")) == len(NAMES) + 1


def test_phi_2_is_refused_with_upstreams_story():
    up = REF["deprecated_models"][0]
    reg = get_registry()
    p = reg.get_preset("phi-2")
    assert upstream_problems(p, up) == []
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "old"},
          "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
          "inference": {"preset": {"name": "phi-2"}}}
    errors = " ".join(str(e) for e in validate_workspace(parse_workspace(ws), registry=reg).errors)
    assert "deprecated" in errors and "kaito-project/kaito#1667" in errors
    assert "phi-3-mini-4k-instruct" in errors and "upgrade" not in errors


def test_phi_4_mini_calls_tools_like_upstream():
    reg = get_registry()
    vllm = reg.get_preset("phi-4-mini-instruct").runtimes["vllm"]
    assert (vllm["tool-call-parser"], vllm["enable-auto-tool-choice"]) == ("phi4_mini_json", True)
    assert "tool-call-parser" not in reg.get_preset("phi-4").runtimes["vllm"]
