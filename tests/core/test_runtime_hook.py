"""``kaito_register_runtimes``: a plugin's third runtime supplies its image and its command, and the
one planner (``kaito plan``, ``kaito render``, the operator) uses both."""

from __future__ import annotations

import pytest
import yaml

from kaito_core.api import parse_workspace
from kaito_core.errors import ContractError
from kaito_core.hookspecs import hookimpl
from kaito_core.plugins import get_plugin_manager
from kaito_core.reconcile import Observed, plan_workspace
from kaito_core.types import Runtime
from tests.core.presets import make_preset

IMAGE = "registry.example.com/sglang-runtime:0.4"


def sglang_command(plan) -> list[str]:
    """How a third-party server is started from the Plan (its own flags, the plan's numbers)."""
    return ["python3", "-m", "sglang.launch_server", "--model-path", plan.model, "--host", plan.host,
            "--port", str(plan.port), "--tp-size", str(plan.tensor_parallel_size),
            "--served-model-name", plan.served_model_name]


class SglangPlugin:
    @hookimpl
    def kaito_register_runtimes(self, register):
        register(Runtime(name="sglang", module="sglang", image=IMAGE, build_command=sglang_command,
                         supports_multinode=False, requires_gpu=True, cluster_only=True,
                         description="SGLang's server (cluster only)"))

    @hookimpl
    def kaito_register_presets(self, register):
        register(make_preset("tiny-sg", runtimes={"sglang": {}, "transformers": {}}, default_runtime="sglang"))


class BrokenCommandPlugin:
    @hookimpl
    def kaito_register_runtimes(self, register):
        register(Runtime(name="brokenrt", module="x", build_command=lambda plan: [None]))

    @hookimpl
    def kaito_register_presets(self, register):
        register(make_preset("tiny-broken", runtimes={"brokenrt": {}}, default_runtime="brokenrt"))


@pytest.fixture
def registry():
    return get_plugin_manager(cached=False, extra=[("sglang", SglangPlugin()),
                                                   ("brokenrt", BrokenCommandPlugin())]).registry


def ws(preset: str, name: str = "sg"):
    return parse_workspace({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                            "metadata": {"name": name, "namespace": "default", "uid": "u-1"},
                            "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                                         "labelSelector": {"matchLabels": {"apps": name}}},
                            "inference": {"preset": {"name": preset}}})


def test_the_plan_runs_the_plugin_runtime_image_and_command(registry):
    byo = registry.provisioners["byo"]
    first = plan_workspace(ws("tiny-sg"), registry=registry, provisioner=byo)
    assert first.errors == [] and first.runtime == "sglang"
    p = plan_workspace(ws("tiny-sg"), registry=registry, provisioner=byo,
                       observed=Observed.nodes_ready(first.node_requests, first.gpus_per_node))
    assert p.image == IMAGE
    assert p.command[:3] == ("python3", "-m", "sglang.launch_server")
    assert p.command[p.command.index("--tp-size") + 1] == str(p.tensor_parallel_size)
    container = p.workload["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and tuple(container["command"]) == p.command and "args" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KAITO_NODE_COUNT"] == "1" and env["KAITO_GPUS_PER_NODE"] == "1"


def test_kaito_render_shows_the_plugin_runtime(registry, tmp_path, monkeypatch, capsys):
    import kaito_core.plugins as plugins
    from kaito_core.cli import main

    monkeypatch.setattr(plugins, "get_registry", lambda: registry)
    f = tmp_path / "ws.yaml"
    f.write_text(yaml.safe_dump(ws("tiny-sg").to_k8s()))
    assert main(["render", str(f), "--provisioner", "byo"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["command"][2] == "sglang.launch_server"


def test_a_runtime_whose_command_is_broken_is_a_plan_error_not_a_crash(registry):
    p = plan_workspace(ws("tiny-broken", "br"), registry=registry, provisioner=registry.provisioners["byo"])
    assert p.errors and "runtime 'brokenrt'" in p.errors[0] and "build_command" in p.errors[0]
    assert p.status["conditions"][0]["status"] == "False"


def test_runtime_fields_are_checked_on_the_way_in():
    with pytest.raises(ContractError, match="local_entry"):
        Runtime(name="r", module="m", local_entry="no-colon")
    with pytest.raises(ContractError, match="cluster_only"):
        Runtime(name="r", module="m", local_entry="pkg.mod:serve", cluster_only=True)
    with pytest.raises(ContractError, match="build_command"):
        Runtime(name="r", module="m", build_command="python -m server")
    assert Runtime(name="r", module="m", local_entry="pkg.mod:serve").local_entry == "pkg.mod:serve"
