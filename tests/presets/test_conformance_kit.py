"""kaito_core.testing.presets: the conformance kit passes good preset plugins and names every fault."""

from __future__ import annotations

import dataclasses

import pytest

from kaito_core.hookspecs import hookimpl
from kaito_core.plugins import get_plugin_manager, get_registry
from kaito_core.testing.presets import check_preset_plugin, is_instruct, render_chat, upstream_problems

GOOD = get_registry().get_preset("qwen2.5-coder-7b-instruct")


def _plugin(*presets):
    class Plugin:
        @hookimpl
        def kaito_register_presets(self, register):
            for p in presets:
                register(p)

    return Plugin()


def _check(*presets):
    pm = get_plugin_manager(entry_points=False, extra=[("inline", _plugin(*presets))], cached=False)
    return check_preset_plugin("inline", plugin_manager=pm)


def _variant(**changes):
    base = dict(name="acme-7b-instruct", hf_repo="acme/acme-7b-instruct", aliases=("acme/acme-7b-instruct",),
                family="acme")
    return dataclasses.replace(GOOD, **{**base, **changes})


def test_a_good_plugin_passes_through_an_in_test_manager():
    assert [p.name for p in _check(_variant())] == ["acme-7b-instruct"]


@pytest.mark.parametrize("changes,fault", [
    ({"chat_template": None}, "a chat model needs a chat template"),
    ({"chat_template": "{{ '<s>' }}{% for m in messages %}{{ m['role'] }}{% endfor %}"}, "drops the user's message"),
    ({"aliases": ()}, "does not resolve to it"),
    ({"license": "unknown"}, "license must be set"),
    ({"runtimes": {"vllm": {"max-model-len": 65536}}}, "max-model-len 65536 must be 1..32768"),
    ({"weight_bytes": 4000 * 2**30, "parameters": 2_000_000_000_000}, "fits no instance type"),
    ({"gated": True, "deprecated": "gone"}, None),
])
def test_each_fault_is_named(changes, fault):
    if fault is None:  # a deprecated preset that validation refuses as deprecated is fine
        assert _check(_variant(**changes))
        return
    with pytest.raises(AssertionError) as err:
        _check(_variant(**changes))
    assert fault in str(err.value) and "acme-7b-instruct" in str(err.value)


def test_a_broken_or_empty_plugin_fails():
    class Broken:
        @hookimpl
        def kaito_register_presets(self, register):
            raise RuntimeError("cannot read catalog")

    pm = get_plugin_manager(entry_points=False, extra=[("broken", Broken())], cached=False)
    with pytest.raises(AssertionError, match="cannot read catalog"):
        check_preset_plugin("broken", plugin_manager=pm)
    with pytest.raises(AssertionError, match="registers no presets"):
        _check()
    with pytest.raises(AssertionError, match="no installed kaito plugin is called 'nope'"):
        check_preset_plugin("nope")


def test_chat_detection_and_rendering():
    reg = get_registry()
    assert is_instruct(reg.get_preset("gpt-oss-20b")) and not is_instruct(reg.get_preset("mistral-7b"))
    assert "Hello from kaito" in render_chat(reg.get_preset("gemma-3-27b-instruct"))


def test_upstream_problems_names_each_difference():
    sup = {"name": GOOD.name, "tag": "9.9.9", "downloadAtRuntime": True,
           "version": f"https://huggingface.co/{GOOD.hf_repo}/commit/{'0' * 40}"}
    cat = {"license": "mit", "modelTokenLimit": 4096, "numHiddenLayers": GOOD.num_layers, "hiddenSize": GOOD.hidden_size,
           "modelFileSize": "1.00Gi", "numAttentionHeads": GOOD.num_attention_heads, "numKeyValueHeads": 1}
    text = " ".join(upstream_problems(GOOD, sup, cat))
    for fault in ("revision", "weights_source", "license", "(context, layers, hidden)", "weights 14.19 GiB",
                  "heads", "KV cache"):
        assert fault in text
