"""The installed ``qwen`` entry point registers Qwen2.5-Coder 7B/32B Instruct with upstream's facts."""

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


def test_entry_point_registers_every_upstream_qwen_preset():
    assert get_plugin_manager().infos["qwen"].errors == []
    assert sorted(get_registry().plugins["qwen"].registered["presets"]) == NAMES == [
        "qwen2.5-coder-32b-instruct", "qwen2.5-coder-7b-instruct"]


def test_conformance():
    assert len(check_preset_plugin("qwen")) == 2


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    p = get_registry().get_preset(name)
    repo, _ = upstream_repo_and_commit(SUPPORTED[name])
    assert upstream_problems(p, SUPPORTED[name], CATALOG[repo]) == []
    assert p.architecture == CATALOG[repo]["architectures"][0] == "Qwen2ForCausalLM"


@pytest.mark.parametrize("name", NAMES)
def test_hermes_tools_chatml_and_lora(name):
    p = get_registry().get_preset(name)
    assert p.runtimes["vllm"]["tool-call-parser"] == "hermes" and p.runtimes["vllm"]["enable-auto-tool-choice"]
    text = render_chat(p)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and text.endswith("<|im_start|>assistant\n")
    assert set(p.tuning.methods) == {"lora", "qlora"} and "q_proj" in p.tuning.target_modules
    assert not p.supports_multinode


def test_default_system_prompt_when_none_is_given():
    import jinja2

    p = get_registry().get_preset("qwen2.5-coder-7b-instruct")
    text = jinja2.Template(p.chat_template).render(messages=[{"role": "user", "content": "x"}],
                                                   add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")


@pytest.mark.parametrize("name", NAMES)
def test_one_a100_like_upstreams_example(name):
    reg = get_registry()
    req = sizing.place(reg.get_preset(name), reg.instance_types, instance_type="Standard_NC24ads_A100_v4")
    assert req.ok and (req.gpus_per_node, req.node_count) == (1, 1)
    assert req.per_gpu_required_gib <= req.per_gpu_usable_gib
