"""``kaito render``: multi-document YAML of the planned objects, from the pure reconciler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from kaito_core.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "reference" / "kaito-examples"


def test_render_nodes_ready_prints_valid_objects(capsys):
    rc = main(["render", str(EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml"), "--provisioner", "byo"])
    out = capsys.readouterr().out
    assert rc == 0
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Service", "Service", "StatefulSet"]
    for d in docs:
        kubernetes_validate.validate(d, "1.35", strict=True)


def test_render_observed_none_holds_back_the_workload(capsys):
    rc = main(["render", str(EXAMPLES / "kaito_workspace_tuning_phi_3.yaml"), "--provisioner", "byo",
               "--observed", "none", "--status"])
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert rc == 0
    assert [d["kind"] for d in docs] == ["Workspace", "ConfigMap"]
    assert docs[0]["status"]["state"] == "Pending"


def test_render_is_deterministic(capsys):
    args = ["render", str(EXAMPLES / "kaito_workspace_phi_3_with_adapters.yaml"), "--provisioner", "byo"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first and "adapter-0" in first


def test_render_reports_invalid_workspace_with_field(capsys, tmp_path):
    text = (EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml").read_text().replace(
        "phi-3-mini-4k-instruct", "gemma-2-9b")
    f = tmp_path / "ws.yaml"
    f.write_text(text)
    rc = main(["render", str(f), "--provisioner", "byo"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "inference.preset.name" in err and "kaito-preset-gemma" in err


def test_render_unknown_provisioner(capsys):
    rc = main(["render", str(EXAMPLES / "kaito_workspace_phi_3_mini_4k.yaml"), "--provisioner", "nope"])
    assert rc == 2 and "'nope' is not installed" in capsys.readouterr().err


def test_render_does_not_import_kopf_or_torch(tmp_path):
    code = ("import sys; from kaito_core.cli import main; "
            f"rc = main(['render', {str(EXAMPLES / 'kaito_workspace_phi_3_mini_4k.yaml')!r}, '--provisioner', 'byo']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('kopf', 'torch', 'transformers', 'kubernetes')]; "
            "print('BAD', bad, file=sys.stderr); sys.exit(rc or (1 if bad else 0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
