"""The installed ``gemma`` entry point registers Gemma 3 4B/27B instruction-tuned with upstream's facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_core import sizing
from kaito_core.api import parse_workspace, validate_workspace
from kaito_core.plugins import get_plugin_manager, get_registry
from kaito_core.testing.presets import check_preset_plugin, render_chat, upstream_problems, upstream_repo_and_commit

REF = yaml.safe_load((Path(__file__).parent / "data" / "reference.yaml").read_text())
SUPPORTED = {m["name"]: m for m in REF["supported_models"]}
CATALOG = {m["name"]: m for m in REF["model_catalog"]}
NAMES = sorted(SUPPORTED)


def test_entry_point_registers_every_upstream_gemma_preset():
    assert get_plugin_manager().infos["gemma"].errors == []
    assert sorted(get_registry().plugins["gemma"].registered["presets"]) == NAMES == [
        "gemma-3-27b-instruct", "gemma-3-4b-instruct"]


def test_conformance():
    assert len(check_preset_plugin("gemma")) == 2


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_upstream(name):
    p = get_registry().get_preset(name)
    repo, _ = upstream_repo_and_commit(SUPPORTED[name])
    assert upstream_problems(p, SUPPORTED[name], CATALOG[repo]) == []
    assert p.head_dim == CATALOG[repo]["headDim"]
    assert p.tuning is None and not p.supports_multinode  # upstream: no tuning, one node


@pytest.mark.parametrize("name", NAMES)
def test_gated_chat_model_with_model_turns(name):
    p = get_registry().get_preset(name)
    assert render_chat(p) == ("<bos><start_of_turn>user\nBe brief.\n\nHello from kaito<end_of_turn>\n"
                              "<start_of_turn>model\n")
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "g"},
          "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
          "inference": {"preset": {"name": name}}}
    errors = " ".join(str(e) for e in validate_workspace(parse_workspace(ws), registry=get_registry()).errors)
    assert "modelAccessSecret" in errors


@pytest.mark.parametrize("name,instance_type", [("gemma-3-4b-instruct", "Standard_NV36ads_A10_v5"),
                                                ("gemma-3-27b-instruct", "Standard_NC24ads_A100_v4")])
def test_fits_upstreams_example_type(name, instance_type):
    reg = get_registry()
    req = sizing.place(reg.get_preset(name), reg.instance_types, instance_type=instance_type)
    assert req.ok and (req.gpus_per_node, req.node_count) == (1, 1)
