"""kaito_core.hints: the advice for an unknown preset name is true for this installation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from kaito_core import hints
from kaito_core.hookspecs import hookimpl
from kaito_core.plugins import get_plugin_manager, get_registry

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "data" / "reference"
SUPPORTED = yaml.safe_load((REFERENCE / "supported_models.yaml").read_text())["models"]


def _entry_points(directory: Path) -> dict:
    data = tomllib.loads((directory / "pyproject.toml").read_text())
    return data["project"].get("entry-points", {}).get("kaito", {})


def test_every_family_is_a_plugin_of_this_repository_and_every_preset_plugin_a_family():
    assert hints.plugins_dir() == REPO / "plugins"
    for family in hints.FAMILIES:
        assert family.entry in _entry_points(REPO / "plugins" / family.directory), family
    preset_plugins = {d.name for d in (REPO / "plugins").iterdir()
                      if (d / "pyproject.toml").is_file() and d.name != "__pycache__"}
    assert preset_plugins == {f.directory for f in hints.FAMILIES}


@pytest.mark.parametrize("name", [m["name"] for m in SUPPORTED if m["name"] != "base" and not m.get("deprecated")])
def test_every_upstream_preset_comes_from_the_family_hints_name(name):
    reg = get_registry()
    family = hints.family_for(name)
    assert family is not None and reg.plugin_of("presets", name) == family.entry


def test_a_typo_gets_the_closest_installed_preset_and_the_org_model_route():
    hint = hints.unknown_preset_hint("mistral-7b-instrct", get_registry())
    assert "did you mean 'mistral-7b-instruct'?" in hint
    assert "'org/model'" in hint and "upgrade" not in hint and "pip install -U" not in hint
    assert "kaito-preset-mistral plugin provides" in hint and "mistral-large-3-675b-instruct" in hint


def test_an_alias_typo_names_the_preset():
    assert hints.closest_preset("deepseek-ai/deepseek-r1-0529", get_registry()) == "deepseek-r1-0528"


def test_family_not_installed_says_how_to_install_it_from_the_repository():
    reg = get_plugin_manager(entry_points=False, cached=False).registry
    hint = hints.unknown_preset_hint("gemma-3-4b-instruct", reg)
    assert f"pip install -e {REPO / 'plugins' / 'gemma'}" in hint
    assert "kaito-preset-gemma plugin, which is not installed" in hint
    assert "pip install kaito-preset" not in hint  # nothing is published on PyPI


def test_blocked_and_broken_plugins_are_named_as_such():
    reg = get_plugin_manager(disabled={"qwen"}, cached=False).registry
    assert "blocked by KAITO_DISABLE_PLUGINS" in hints.unknown_preset_hint("qwen2.5-coder-7b-instruct", reg)

    class Broken:
        @hookimpl
        def kaito_register_presets(self, register):
            raise RuntimeError("no weights")

    reg = get_plugin_manager(entry_points=False, extra=[("gptoss", Broken())], cached=False).registry
    assert "broken: see `kaito plugins doctor`" in hints.unknown_preset_hint("gpt-oss-20b", reg)


@pytest.mark.parametrize("name,version,pr,instead", [
    ("llama-2-7b", "v0.4.6", "kaito-project/kaito#1091", "llama-3.1-8b-instruct"),
    ("llama-2-13b-chat", "v0.4.6", "kaito-project/kaito#1091", "llama-3.1-8b-instruct"),
    ("llama-2-70b-chat", "v0.4.6", "kaito-project/kaito#1091", "llama-3.3-70b-instruct"),
    ("phi-2", "deprecated", "kaito-project/kaito#1667", "phi-3-mini-4k-instruct")])
def test_retired_presets_say_what_upstream_did_and_what_to_use(name, version, pr, instead):
    hint = hints.unknown_preset_hint(name, get_registry())
    assert version in hint and pr in hint and f"use {instead}" in hint
    assert "did you mean" not in hint and "upgrade" not in hint
    for replacement in hints.RETIRED[name].instead:
        get_registry().get_preset(replacement)  # the advice names presets that exist


def test_unrelated_names_get_the_list_command_and_the_org_model_route():
    hint = hints.unknown_preset_hint("my-favourite-model", get_registry())
    assert "`kaito presets list`" in hint and "'org/model'" in hint and "did you mean" not in hint
    assert "'org/model'" not in hints.unknown_preset_hint("acme/unknown", get_registry())
