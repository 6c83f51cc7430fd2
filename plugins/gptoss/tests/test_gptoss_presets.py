"""The installed ``gptoss`` entry point registers gpt-oss-20b/120b with upstream's facts."""

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


def test_entry_point_registers_every_upstream_gpt_oss_preset():
    assert get_plugin_manager().infos["gptoss"].errors == []
    assert sorted(get_registry().plugins["gptoss"].registered["presets"]) == NAMES == ["gpt-oss-120b", "gpt-oss-20b"]


def test_conformance():
    assert len(check_preset_plugin("kaito-preset-gptoss")) == 2


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    p = get_registry().get_preset(name)
    repo, _ = upstream_repo_and_commit(SUPPORTED[name])
    cat = CATALOG[repo]
    # The catalog's modelFileSize sums both copies of the weights in the repository (the HF
    # shards and original/); the preset declares the one copy vLLM loads (upstream's gpt preset).
    served = REF["served_gib"][name]
    assert upstream_problems(p, SUPPORTED[name], cat, weight_gib=served) == []
    assert served == pytest.approx(float(cat["modelFileSize"].removesuffix("Gi")) / 2, rel=0.01)
    assert p.architecture == cat["architectures"][0] == "GptOssForCausalLM" and cat["quantMethod"] == "mxfp4"


@pytest.mark.parametrize("name", NAMES)
def test_harmony_reasoning_and_tools(name):
    p = get_registry().get_preset(name)
    vllm = p.runtimes["vllm"]
    assert (vllm["reasoning-parser"], vllm["tool-call-parser"]) == ("openai_gptoss", "openai")
    assert "dtype" not in vllm and p.tuning is None
    text = render_chat(p)
    assert "<|start|>developer<|message|># Instructions\n\nBe brief.<|end|>" in text
    assert text.endswith("<|start|>user<|message|>Hello from kaito<|end|><|start|>assistant")


@pytest.mark.parametrize("name,instance_type", [("gpt-oss-20b", "Standard_NV36ads_A10_v5"),
                                                ("gpt-oss-120b", "Standard_NC24ads_A100_v4")])
def test_moe_weights_fit_upstreams_example_gpu(name, instance_type):
    reg = get_registry()
    p = reg.get_preset(name)
    est = sizing.estimate(p)
    # Total (all experts) MXFP4 weights as stored, not parameters x 2 bytes.
    assert est.weights_gib == pytest.approx(p.weight_gib) and est.weights_gib < p.parameters * 2 / 2**30 / 2.5
    req = sizing.place(p, reg.instance_types, instance_type=instance_type)
    assert req.ok and (req.gpus_per_node, req.node_count) == (1, 1)
