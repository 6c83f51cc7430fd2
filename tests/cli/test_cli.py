"""The `kaito` command, run as a user runs it (a subprocess of the installed console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tests" / "data" / "reference" / "kaito-examples"


def kaito(*args: str, env: dict | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kaito_core", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=stdin, timeout=120)


def test_help_lists_commands():
    out = kaito("--help").stdout
    for cmd in ("plugins", "presets", "validate", "crd"):
        assert cmd in out


def test_presets_list_table_and_json():
    table = kaito("presets", "list")
    assert table.returncode == 0
    assert "phi-3-mini-4k-instruct" in table.stdout and "falcon-7b" in table.stdout
    data = json.loads(kaito("presets", "list", "--output", "json").stdout)
    by_name = {p["name"]: p for p in data}
    assert by_name["llama-3.1-8b-instruct"]["gated"] is True
    assert by_name["llama-3.1-8b-instruct"]["plugin"] == "llama"
    assert by_name["phi-3-mini-4k-instruct"]["revision"] == "0a67737cc96d2554230f90338b163bc6380a2a85"


def test_presets_show_by_alias_and_unknown():
    shown = json.loads(kaito("presets", "show", "tiiuae/falcon-7b", "-o", "json").stdout)
    assert shown["name"] == "falcon-7b" and shown["num_kv_heads"] == 1
    missing = kaito("presets", "show", "gemma-2-9b")
    assert missing.returncode == 1
    assert "kaito-preset-gemma" in missing.stderr


def test_no_presets_says_how_to_install_from_the_repository():
    blocked = "phi3,llama,falcon,mistral,qwen,deepseek,gemma,gptoss"
    res = kaito("presets", "list", env={"KAITO_DISABLE_PLUGINS": blocked})
    assert res.returncode == 0 and "no presets installed" in res.stdout
    assert "pip install ./plugins/phi3" in res.stdout and "kaito-preset-phi3" not in res.stdout


def test_plugins_list_shows_distributions_and_versions():
    res = kaito("plugins", "list")
    assert res.returncode == 0
    assert "kaito-preset-phi3" in res.stdout and "kaito.runtimes" in res.stdout
    data = json.loads(kaito("plugins", "list", "-o", "json").stdout)
    assert {"phi3", "llama", "falcon"} <= {p["name"] for p in data}


@pytest.fixture
def broken_plugin_path(tmp_path: Path) -> Path:
    """A REAL installed distribution (dist-info on sys.path) whose entry point cannot import."""
    dist = tmp_path / "kaito_preset_broken-0.0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kaito-preset-broken\nVersion: 0.0.1\n")
    (dist / "entry_points.txt").write_text("[kaito]\nbroken = kaito_preset_broken_missing_module\n")
    return tmp_path


def test_doctor_ok_then_broken(broken_plugin_path):
    assert kaito("plugins", "doctor").returncode == 0
    env = {"PYTHONPATH": str(broken_plugin_path)}
    res = kaito("plugins", "doctor", env=env)
    assert res.returncode == 1
    assert "BROKEN" in res.stdout and "kaito_preset_broken_missing_module" in res.stdout
    # a broken plugin never takes the rest down
    listed = kaito("presets", "list", env=env)
    assert listed.returncode == 0 and "phi-3-mini-4k-instruct" in listed.stdout
    # ...and can be blocked
    blocked = kaito("plugins", "doctor", env={**env, "KAITO_DISABLE_PLUGINS": "broken"})
    assert blocked.returncode == 0 and "blocked" in blocked.stdout


def test_validate_examples_exit_codes(tmp_path):
    good = kaito("validate", str(EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml"))
    assert good.returncode == 0, good.stdout
    bad = tmp_path / "ws.yaml"
    bad.write_text((EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml").read_text().replace(
        "phi-3-mini-4k-instruct", "gemma-2-9b"))
    refused = kaito("validate", str(bad))
    assert refused.returncode == 1
    assert "inference.preset.name" in refused.stdout and "kaito-preset-gemma" in refused.stdout


def test_validate_lists_all_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""
        apiVersion: kaito.sh/v1beta1
        kind: Workspace
        metadata: {name: Bad_Name}
        resource: {labelSelector: {matchLabels: {a: b}}}
        inference:
          preset: {name: phi-3-mini-4k-instruct}
          adapters:
            - source: {name: a, image: "r.io/a:1"}
              strength: "2"
        """))
    res = kaito("validate", str(bad))
    assert res.returncode == 1
    assert "metadata.name" in res.stdout and "inference.adapters[0].strength" in res.stdout
    assert "2 problems" in res.stdout


def test_validate_stdin_and_missing_file():
    res = kaito("validate", "-", stdin=(EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml").read_text())
    assert res.returncode == 0
    missing = kaito("validate", "/nonexistent/ws.yaml")
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_crd_prints_the_generated_crd():
    import yaml

    res = kaito("crd")
    crd = yaml.safe_load(res.stdout)
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["spec"]["names"]["shortNames"] == ["wk", "wks"]


PLANNING = [
    ["plugins", "list"], ["plugins", "doctor"], ["presets", "list"], ["presets", "show", "falcon-7b"],
    ["validate", str(EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml")], ["crd"],
]
if (ROOT / "kaito_core" / "cli" / "cmd_plan.py").exists():
    PLANNING.append(["plan", str(EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml")])
if (ROOT / "kaito_core" / "cli" / "cmd_render.py").exists():
    PLANNING.append(["render", str(EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml")])


@pytest.mark.parametrize("argv", PLANNING, ids=[" ".join(a[:2]) for a in PLANNING])
def test_planning_commands_never_import_heavy_libraries(argv):
    code = textwrap.dedent(f"""
        import sys, io, contextlib
        from kaito_core.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main({argv!r})
        heavy = sorted(m for m in ("torch", "transformers", "peft", "bitsandbytes", "datasets") if m in sys.modules)
        print(rc, heavy)
        """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, heavy = res.stdout.strip().split(" ", 1)
    assert heavy == "[]", f"{argv} imported {heavy}"
    assert rc in ("0", "1")


def test_validate_warns_what_admission_will_refuse_and_strict_refuses_it():
    example = str(EXAMPLES / "kaito_workspace_custom_config.yaml")  # vLLM TP 2 on a 1-GPU type
    res = kaito("validate", example)
    assert res.returncode == 0
    assert "warning: admission will refuse it: inference.config: ConfigMap 'ds-inference-params' key " \
           "inference_config.yaml vllm.tensor-parallel-size 2 exceeds" in res.stdout
    strict = kaito("validate", "--strict", example)
    assert strict.returncode == 1 and "admission will refuse it" in strict.stdout
