"""``kaito serve --runtime NAME`` for runtimes that plugins register: one with a local entry
runs on this machine, a cluster-only one is refused with a message that says so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kaito_core.hookspecs import hookimpl
from kaito_core.runtime.cli import main
from kaito_core.types import Runtime

CALLS: list = []


def local_entry(opts) -> int:
    CALLS.append(opts)
    return 0


class EchoRuntimes:
    @hookimpl
    def kaito_register_runtimes(self, register):
        register(Runtime(name="echo-local", module="json", local_entry=f"{__name__}:local_entry"))
        register(Runtime(name="big-cluster", module="json", cluster_only=True))
        register(Runtime(name="no-entry", module="json"))
        register(Runtime(name="broken-entry", module="json", local_entry="no_such_module_xyz:run"))


@pytest.fixture
def plugin_registry(monkeypatch):
    import kaito_core.plugins as plugins

    registry = plugins.get_plugin_manager(extra=[("echo-runtimes", EchoRuntimes())], cached=False).registry
    monkeypatch.setattr(plugins, "get_registry", lambda: registry)
    return registry


def test_a_plugin_runtime_with_a_local_entry_runs_here(plugin_registry):
    CALLS.clear()
    assert main(["--model", "m", "--runtime", "echo-local", "--port", "5111"]) == 0
    assert len(CALLS) == 1 and CALLS[0].runtime == "echo-local" and CALLS[0].port == 5111


@pytest.mark.parametrize("name,words", [("big-cluster", "cluster_only"), ("no-entry", "no local_entry"),
                                        ("broken-entry", "cannot be loaded"), ("nope", "not a registered runtime")])
def test_runtimes_that_cannot_run_here_say_why(plugin_registry, capsys, name, words):
    assert main(["--model", "m", "--runtime", name]) == 1
    err = capsys.readouterr().err
    assert words in err and repr(name) in err, err
    if name != "nope":
        assert "--runtime transformers" in err or "plugin" in err


def test_the_server_module_does_not_import_vllm():
    code = ("import sys, kaito_core.runtime.server; "
            "bad = [m for m in sys.modules if m in ('kaito_core.runtime.vllm', 'kaito_core.runtime.vllm_proxy')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_create_app_refuses_a_plugin_runtime():
    from kaito_core.runtime.options import OptionsError
    from kaito_core.runtime.server import create_app

    with pytest.raises(OptionsError, match="echo-local"):
        create_app(model="m", runtime="echo-local")
