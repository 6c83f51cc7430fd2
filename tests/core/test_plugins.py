"""Contract tests: the plugin manager with in-test plugins and the REAL installed entry points."""

from __future__ import annotations

import dataclasses
import types
from importlib import metadata

import pytest

from kaito_core.errors import ContractError
from kaito_core.hookspecs import hookimpl
from kaito_core.plugins import DISABLE_ENV, UnknownPreset, get_plugin_manager
from kaito_core.types import InstanceType, ModelPreset, Runtime

from tests.core.presets import make_preset


def plugin(**hooks) -> types.SimpleNamespace:
    """An in-test plugin: hook functions marked with hookimpl."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def presets_plugin(*presets):
    def kaito_register_presets(register):
        for p in presets:
            register(p)
    return plugin(kaito_register_presets=kaito_register_presets)


def test_installed_preset_plugins_are_discovered_through_entry_points():
    pm = get_plugin_manager(cached=False)
    reg = pm.registry
    for entry, dist, preset in [("phi3", "kaito-preset-phi3", "phi-3-mini-4k-instruct"),
                                ("llama", "kaito-preset-llama", "llama-3.1-8b-instruct"),
                                ("falcon", "kaito-preset-falcon", "falcon-7b")]:
        info = pm.infos[entry]
        assert info.distribution == dist
        assert info.version == metadata.version(dist)
        assert info.errors == []
        assert preset in info.registered["presets"]
        assert reg.plugin_of("presets", preset) == entry
    assert reg.get_preset("microsoft/Phi-3-mini-4k-instruct").name == "phi-3-mini-4k-instruct"


def test_builtins_are_plugins_too():
    pm = get_plugin_manager(cached=False)
    assert pm.infos["kaito.runtimes"].builtin
    assert {"transformers", "vllm"} <= set(pm.registry.runtimes)


def test_in_test_plugin_registers_a_preset():
    pm = get_plugin_manager(entry_points=False, extra=[("mine", presets_plugin(make_preset("tiny-1")))])
    assert pm.registry.get_preset("tiny-1").family == "test"
    assert pm.infos["mine"].registered == {"presets": ["tiny-1"]}


def test_invalid_preset_is_refused_naming_plugin_preset_and_field():
    def kaito_register_presets(register):
        register(make_preset("ok-one"))
        register(make_preset("bad-one", context_length=0))

    pm = get_plugin_manager(entry_points=False,
                            extra=[("sloppy", plugin(kaito_register_presets=kaito_register_presets))])
    with pytest.raises(ContractError) as err:
        make_preset("bad-one", context_length=0)
    assert "context_length" in str(err.value)
    # the preset object itself cannot even be built, so the hook raised: recorded, isolated
    errors = pm.infos["sloppy"].errors
    assert len(errors) == 1
    assert "sloppy" in errors[0] or "kaito_register_presets" in errors[0]
    assert "bad-one" in errors[0] and "context_length" in errors[0]
    assert "ok-one" in pm.registry.presets  # registered before the failure


def test_registering_a_non_preset_names_the_plugin():
    def kaito_register_presets(register):
        register({"name": "dict-preset"})

    pm = get_plugin_manager(entry_points=False, extra=[("dicty", plugin(kaito_register_presets=kaito_register_presets))])
    (err,) = pm.infos["dicty"].errors
    assert "plugin 'dicty'" in err and "ModelPreset" in err


def test_duplicate_preset_names_are_refused_naming_both_plugins():
    pm = get_plugin_manager(entry_points=False, extra=[
        ("first", presets_plugin(make_preset("same-name"))),
        ("second", presets_plugin(make_preset("same-name", parameters=2_000_000)))])
    reg = pm.registry
    assert reg.plugin_of("presets", "same-name") == "first"
    (err,) = pm.infos["second"].errors
    assert "'second'" in err and "'first'" in err and "same-name" in err


def test_alias_collision_is_refused():
    pm = get_plugin_manager(entry_points=False, extra=[
        ("a", presets_plugin(make_preset("alpha", aliases=("org/model",)))),
        ("b", presets_plugin(make_preset("beta", aliases=("ORG/model",))))])
    assert pm.registry.get_preset("org/MODEL").name == "alpha"
    assert "org/model" in pm.infos["b"].errors[0]


def test_hook_that_raises_is_isolated_and_recorded():
    def kaito_register_presets(register):
        raise RuntimeError("boom in plugin")

    pm = get_plugin_manager(entry_points=False, extra=[
        ("boom", plugin(kaito_register_presets=kaito_register_presets)),
        ("fine", presets_plugin(make_preset("fine-model")))])
    assert "fine-model" in pm.registry.presets
    (err,) = pm.infos["boom"].errors
    assert "RuntimeError: boom in plugin" in err


def test_plugin_failing_to_import_is_recorded_not_fatal():
    eps = [metadata.EntryPoint(name="ghost", value="kaito_no_such_module_xyz", group="kaito")]
    pm = get_plugin_manager(entry_points=False)
    pm.load_entry_points(set(), entry_points=eps)
    err = pm.infos["ghost"].errors[0]
    assert "import failed" in err and "kaito_no_such_module_xyz" in err
    assert "transformers" in pm.registry.runtimes  # the rest still works


def test_duplicate_entry_point_name_is_reported():
    eps = [metadata.EntryPoint(name="twin", value="tests.core.presets", group="kaito"),
           metadata.EntryPoint(name="twin", value="tests.core.presets", group="kaito")]
    pm = get_plugin_manager(entry_points=False)
    pm.load_entry_points(set(), entry_points=eps)
    dup = [i for n, i in pm.infos.items() if n.startswith("twin@")]
    assert dup and "already used" in dup[0].errors[0]


def test_unknown_hook_name_is_refused():
    def kaito_register_modelz(register):  # typo of a hook name
        pass

    pm = get_plugin_manager(entry_points=False, extra=[("typo", plugin(kaito_register_modelz=kaito_register_modelz))])
    assert "kaito_register_modelz" in pm.infos["typo"].errors[0]


def test_disable_env_blocks_plugins(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "phi3, kaito.runtimes")
    pm = get_plugin_manager(cached=False)
    reg = pm.registry
    assert pm.infos["phi3"].blocked and pm.infos["kaito.runtimes"].blocked
    assert "phi-3-mini-4k-instruct" not in reg.presets and not reg.runtimes
    with pytest.raises(UnknownPreset, match="blocked"):
        reg.get_preset("phi-3-mini-4k-instruct")
    assert "llama-3.1-8b-instruct" in reg.presets


def test_unknown_preset_of_a_known_family_says_what_to_install():
    reg = get_plugin_manager(cached=False).registry
    with pytest.raises(UnknownPreset) as err:
        reg.get_preset("gemma-2-9b")
    assert "kaito-preset-gemma" in str(err.value)
    with pytest.raises(UnknownPreset) as err:
        reg.get_preset("totally-unknown-model")
    assert "no installed plugin provides it" in str(err.value) and "'org/model'" in str(err.value)
    with pytest.raises(UnknownPreset) as err:
        reg.get_preset("gpt-oss-7b")
    assert "kaito-preset-gptoss" in str(err.value) and "gpt-oss-20b" in str(err.value)
    with pytest.raises(UnknownPreset) as err:
        reg.get_preset("llama-2-7b-chat")
    assert "removed by upstream KAITO in v0.4.6" in str(err.value) and "llama-3.1-8b-instruct" in str(err.value)


def test_instance_types_same_facts_twice_ok_different_refused():
    a100 = InstanceType(name="Test_A100", cloud="azure", gpu_count=1, gpu_memory_gib=80, gpu_model="A100")

    def same(register):
        register(a100)

    def different(register):
        register(dataclasses.replace(a100, gpu_memory_gib=40))

    def same_again(register):
        register(dataclasses.replace(a100))

    pm = get_plugin_manager(entry_points=False, extra=[
        ("one", plugin(kaito_register_instance_types=same)),
        ("two", plugin(kaito_register_instance_types=same_again)),
        ("three", plugin(kaito_register_instance_types=different))])
    assert pm.registry.instance_types["Test_A100"].gpu_memory_gib == 80
    assert pm.infos["two"].errors == []
    assert "differ" in pm.infos["three"].errors[0]


def test_duplicate_runtime_refused():
    def kaito_register_runtimes(register):
        register(Runtime(name="vllm", module="vllm"))

    pm = get_plugin_manager(entry_points=False, extra=[("fake-vllm", plugin(kaito_register_runtimes=kaito_register_runtimes))])
    assert "kaito.runtimes" in pm.infos["fake-vllm"].errors[0]


def test_provisioner_must_satisfy_protocol():
    class Half:
        name = "half"

    def kaito_register_provisioners(register):
        register(Half())

    pm = get_plugin_manager(entry_points=False, extra=[("halfp", plugin(kaito_register_provisioners=kaito_register_provisioners))])
    assert "half" not in pm.registry.provisioners
    assert "Provisioner" in pm.infos["halfp"].errors[0]


def test_registered_presets_are_frozen():
    p = make_preset("frozen-one", runtimes={"transformers": {"dtype": "float32"}}, default_runtime="transformers")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.runtimes["transformers"]["dtype"] = "x"  # type: ignore[index]
    assert isinstance(p, ModelPreset)
