"""``kaito plan``: table and JSON, ConfigMaps in the same file, generic models, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kaito_core.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "reference" / "kaito-examples"
KEYS = ("name", "preset", "runtime", "instanceType", "gpusPerNode", "nodeCount", "gpuMemoryRequiredGiB",
        "gpuMemoryAvailableGiB", "diskGiB", "reasons", "errors")


def ws(name: str, preset: str, instance_type: str | None = None, *, annotations: str = "", config: str = "",
       extra: str = "") -> str:
    it = f'  instanceType: "{instance_type}"\n' if instance_type else ""
    ann = f"  annotations: {{{annotations}}}\n" if annotations else ""
    cfg = f"  config: {config}\n" if config else ""
    return (f"apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: {name}\n{ann}resource:\n{it}"
            f"  labelSelector:\n    matchLabels:\n      apps: {name}\ninference:\n  preset:\n    name: \"{preset}\"\n"
            f"{extra}{cfg}")


def plan(tmp_path, text: str, *args: str, capsys) -> tuple[int, object]:
    f = tmp_path / "ws.yaml"
    f.write_text(text)
    rc = main(["plan", str(f), *args])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if "json" in args else out)


def test_json_has_the_documented_keys(tmp_path, capsys):
    rc, rows = plan(tmp_path, ws("phi", "phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4"), "-o", "json",
                    capsys=capsys)
    assert rc == 0 and len(rows) == 1
    row = rows[0]
    assert all(k in row for k in KEYS)
    assert (row["name"], row["preset"], row["runtime"], row["instanceType"], row["gpusPerNode"], row["nodeCount"]) \
        == ("phi", "phi-3-mini-4k-instruct", "vllm", "Standard_NC24ads_A100_v4", 1, 1)
    assert row["gpuMemoryRequiredGiB"] < row["gpuMemoryAvailableGiB"] == 67.2
    assert row["diskGiB"] == 88 and row["errors"] == [] and any("plugin 'phi3'" in r for r in row["reasons"])


def test_configmap_in_the_same_file_sets_max_model_len(tmp_path, capsys):
    cm = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: params\ndata:\n  inference_config.yaml: |\n"
          "    vllm:\n      max-model-len: 1024\n---\n")
    rc, rows = plan(tmp_path, cm + ws("phi", "phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4", config="params"),
                    "-o", "json", capsys=capsys)
    assert rc == 0 and rows[0]["contextTokens"] == 1024
    cm_long = cm.replace("1024", "65536")
    rc, rows = plan(tmp_path, cm_long + ws("phi", "phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4",
                                           config="params"), "-o", "json", capsys=capsys)
    assert rc == 1 and any("exceeds" in e for e in rows[0]["errors"])


def test_runtime_annotation_and_multi_node(tmp_path, capsys):
    text = (ws("big", "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4",
               extra="    presetOptions:\n      modelAccessSecret: hf-token\n")
            + "---\n" + ws("big-tf", "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4",
                           annotations='"kaito.sh/runtime": transformers',
                           extra="    presetOptions:\n      modelAccessSecret: hf-token\n"))
    rc, rows = plan(tmp_path, text, "-o", "json", capsys=capsys)
    assert rc == 1
    vllm, tf = rows
    assert vllm["errors"] == [] and vllm["nodeCount"] == 3 and vllm["pipelineParallelSize"] == 3
    assert tf["runtime"] == "transformers" and tf["errors"] and "cannot span nodes" in tf["errors"][0]


def test_gated_preset_without_secret_cannot_be_placed(tmp_path, capsys):
    rc, rows = plan(tmp_path, ws("l", "llama-3.1-8b-instruct", "Standard_NC24ads_A100_v4"), "-o", "json",
                    capsys=capsys)
    assert rc == 1 and any("modelAccessSecret" in e for e in rows[0]["errors"])


def test_no_instance_type_picks_the_cheapest(tmp_path, capsys):
    rc, rows = plan(tmp_path, ws("f", "falcon-7b"), "-o", "json", "--cloud", "azure", capsys=capsys)
    assert rc == 0 and rows[0]["instanceType"] == "Standard_NV36ads_A10_v5"
    assert "cheapest" in " ".join(rows[0]["reasons"])


def test_local_model_directory_is_planned(tmp_path, capsys, tiny_models):
    rc, rows = plan(tmp_path, ws("tiny", str(tiny_models["llama"]), "Standard_NV36ads_A10_v5"), "-o", "json",
                    capsys=capsys)
    assert rc == 0, rows
    assert rows[0]["preset"] == "local-llama" and rows[0]["errors"] == []
    assert "generic preset" in rows[0]["reasons"][0]


def test_unknown_preset_and_unknown_type(tmp_path, capsys):
    rc, rows = plan(tmp_path, ws("m", "gemma-2-9b", "Standard_NC24ads_A100_v4") + "---\n"
                    + ws("p", "phi-4", "Standard_Nope"), "-o", "json", capsys=capsys)
    assert rc == 1
    assert "kaito-preset-gemma" in rows[0]["errors"][0]
    assert any("Standard_Nope" in e for e in rows[1]["errors"])


def test_table_output_shows_reasons(tmp_path, capsys):
    rc, out = plan(tmp_path, ws("f", "falcon-7b", "Standard_NC24s_v3"), capsys=capsys)
    assert rc == 0
    assert out.splitlines()[0].split()[:4] == ["NAME", "PRESET", "RUNTIME", "INSTANCE"]
    assert "Standard_NC24s_v3" in out and "pipeline-parallel-size 4" in out


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="upstream examples not present")
@pytest.mark.parametrize("example,rc_want", [
    ("kaito_workspace_phi_3_mini_4k.yaml", 0), ("kaito_workspace_llama-3.1_8b_instruct.yaml", 0),
    ("kaito_workspace_tuning_falcon_7b_oai.yaml", 0), ("kaito_workspace_phi_3_with_adapters.yaml", 0)])
def test_upstream_examples_plan(example, rc_want, capsys):
    rc = main(["plan", str(EXAMPLES / example), "-o", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == rc_want, rows
    assert rows[0]["nodeCount"] == 1 and rows[0]["errors"] == []


def test_plan_never_imports_torch(tmp_path):
    f = tmp_path / "ws.yaml"
    f.write_text(ws("phi", "phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4"))
    code = ("import sys; from kaito_core.cli import main; rc = main(['plan', sys.argv[1], '-o', 'json']);"
            "heavy = [m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules];"
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc or (3 if heavy else 0))")
    proc = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr
