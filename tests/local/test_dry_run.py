"""``kaito up --dry-run``: the Plan's pod command, realised here with only explicit differences."""

from __future__ import annotations

import json
import sys

from kaito_core.cli import main
from tests.local.conftest import inference_yaml

TUNING = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: tune
resource:
  instanceType: Standard_NV36ads_A10_v5
  labelSelector:
    matchLabels: {apps: tune}
tuning:
  preset: {name: phi-3-mini-4k-instruct}
  method: qlora
  input: {urls: ["https://example.com/data.jsonl"]}
  output: {volumeSource: {hostPath: {path: ./out}}}
"""


def dry(path, capsys, *extra):
    rc = main(["up", str(path), "--dry-run", "-o", "json", *extra])
    return rc, json.loads(capsys.readouterr().out)


def test_inference_runs_the_pods_command_with_listed_differences(write_yaml, kaito_home, capsys):
    rc, view = dry(write_yaml("ws.yaml", inference_yaml("phi")), capsys, "--port", "5123", "--weights", "/w")
    assert rc == 0 and view["local"]["refused"] is None
    pod, local = view["plan"]["command"], view["local"]["command"]
    assert pod[:3] == ["python", "-m", "kaito_core.runtime"] and local[0] == sys.executable
    assert local[1:3] == pod[1:3]
    # the same flags in the same order, less those the differences say are dropped; only values
    # the differences name may change
    diffs = " | ".join(view["local"]["differences"])
    dropped = {d.split()[0] for d in view["local"]["differences"] if "dropped here" in d}
    assert dropped == {"--config"}  # no ConfigMap: the generated one holds the preset's defaults
    kept = [a for a in pod if a.startswith("--") and a not in dropped]
    assert [a for a in local if a.startswith("--")] == kept
    pod_pairs = dict(zip(pod[3::2], pod[4::2]))
    local_pairs = dict(zip(local[3::2], local[4::2]))
    changed = {k for k in kept if pod_pairs.get(k) != local_pairs.get(k)}
    assert changed <= {"--model", "--host", "--port", "--runtime"}
    assert all(flag in diffs for flag in changed)
    assert local[local.index("--port") + 1] == "5123" and local[local.index("--model") + 1] == "/w"
    assert view["local"]["env"]["KAITO_TENSOR_PARALLEL_SIZE"] == "1"
    assert not (kaito_home / "workspaces").exists() or not any((kaito_home / "workspaces").iterdir())


def test_tuning_uses_the_plans_method_and_says_where_data_comes_from(write_yaml, kaito_home, capsys):
    rc, view = dry(write_yaml("tune.yaml", TUNING), capsys)
    assert rc == 0
    local = view["local"]["command"]
    assert local[local.index("--method") + 1] == "qlora" == view["plan"]["command"][
        view["plan"]["command"].index("--method") + 1]
    assert local[local.index("--data") + 1] == "https://example.com/data.jsonl"
    assert any(d.startswith("--data /mnt/data") for d in view["local"]["differences"])
    # the pod resumes from the output volume; here from the run directory; no --overwrite (the
    # recipe lets a Workspace replace its own adapter: KAITO_WORKSPACE)
    pod = view["plan"]["command"]
    assert pod[pod.index("--work-dir") + 1] == "/mnt/results/.kaito-work"
    assert local[local.index("--work-dir") + 1].endswith("/tune/work")
    assert "--overwrite" not in local and view["local"]["env"]["KAITO_WORKSPACE"] == "tune"


def test_local_weights_that_are_not_the_presets_record_its_id_as_base_model():
    from types import SimpleNamespace

    from kaito_core.local.realise import tuning_run

    plan = SimpleNamespace(command=["python", "-m", "kaito_core.tuning", "--preset", "phi-3-mini-4k-instruct",
                                    "--model", "/workspace/weights", "--output", "/mnt/results"], env=[])
    run = tuning_run(plan, weights="/tmp/w", config=None, data_args=["--data", "d.jsonl"], output="/tmp/o",
                     work_dir="/tmp/work", keep_preset=False, base_model="microsoft/Phi-3-mini-4k-instruct")
    assert "--preset" not in run.argv
    assert run.argv[run.argv.index("--base-model") + 1] == "microsoft/Phi-3-mini-4k-instruct"
    kept = tuning_run(plan, weights="/tmp/w", config=None, data_args=[], output="/tmp/o", work_dir="/tmp/work",
                      base_model="microsoft/Phi-3-mini-4k-instruct")
    assert "--base-model" not in kept.argv and "--preset" in kept.argv


def test_an_invalid_workspace_is_refused_as_the_webhook_refuses_it(write_yaml, kaito_home, capsys):
    text = inference_yaml("bad").replace("    name: phi-3-mini-4k-instruct", "    name: phi-3-mini-4k-instruct\n"
                                         "  adapters:\n  - source: {name: a, image: example.com/a:1}\n"
                                         "    strength: \"0.2\"")
    rc, view = dry(write_yaml("bad.yaml", text), capsys)
    assert rc == 1 and "strength" in view["local"]["refused"]
    assert any("inference.adapters[0].strength" in e for e in view["plan"]["errors"])
