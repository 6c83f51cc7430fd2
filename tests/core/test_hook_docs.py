"""Meta-tests (datasette's habit): every hook is documented with its exact signature, and
every hook has a ``test_hook_<name>`` that exercises it through the plugin manager."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

from kaito_core import hookspecs
from kaito_core.hookspecs import hookimpl
from kaito_core.plugins import HOOKS, get_plugin_manager
from kaito_core.types import InstanceType, NodeRequest, NodeState, Runtime

from tests.core.presets import make_preset

ROOT = Path(__file__).resolve().parents[2]
HOOK_NAMES = sorted(n for n in dir(hookspecs) if n.startswith("kaito_"))


def _signature(name: str) -> str:
    fn = getattr(hookspecs, name)
    hints = fn.__annotations__
    params = ", ".join(f"{p}: {hints[p]}" for p in inspect.signature(fn).parameters)
    return f"{name}({params}) -> {hints['return']}"


def test_hook_list_matches_the_manager():
    assert HOOK_NAMES == sorted(HOOKS)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_is_documented_with_its_exact_signature(name):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"### {name}" in docs
    assert _signature(name) in docs, f"docs/plugins.md must show: {_signature(name)}"
    assert getattr(hookspecs, name).__doc__.strip(), f"{name} needs a docstring"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_has_a_test(name):
    this = Path(__file__).read_text()
    assert re.search(rf"^def test_hook_{name}\(", this, re.M)


def _run(hook: str, fn) -> object:
    plugin = types.SimpleNamespace(**{hook: hookimpl(fn)})
    return get_plugin_manager(entry_points=False, extra=[("hooktest", plugin)])


def test_hook_kaito_register_presets():
    pm = _run("kaito_register_presets", lambda register: register(make_preset("hook-preset")))
    assert pm.registry.get_preset("hook-preset").hf_repo == "org/tiny"
    assert pm.infos["hooktest"].registered == {"presets": ["hook-preset"]}


class _Prov:
    name = "hook-prov"
    creates_nodes = False

    def desired_objects(self, *, requests):
        return []

    def ensure(self, *, requests, ctx):
        return [NodeState(name=r.name, ready=True) for r in requests]

    def observe(self, *, requests, ctx):
        return self.ensure(requests=requests, ctx=ctx)

    def release(self, *, workspace, ctx):
        return None


def test_hook_kaito_register_provisioners():
    pm = _run("kaito_register_provisioners", lambda register: register(_Prov()))
    prov = pm.registry.provisioners["hook-prov"]
    reqs = [NodeRequest(name="n0", workspace="w", namespace="default", instance_type="x", index=0)]
    assert [s.ready for s in prov.ensure(requests=reqs, ctx=None)] == [True]


def test_hook_kaito_register_instance_types():
    it = InstanceType(name="Hook_GPU", cloud="azure", gpu_count=2, gpu_memory_gib=24, gpu_model="A10")
    pm = _run("kaito_register_instance_types", lambda register: register(it))
    assert pm.registry.instance_types["Hook_GPU"].total_gpu_memory_gib == 48


def test_hook_kaito_register_runtimes():
    pm = _run("kaito_register_runtimes", lambda register: register(Runtime(name="hookrt", module="json")))
    assert pm.registry.runtimes["hookrt"].module == "json"
