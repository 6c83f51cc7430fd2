"""``kaito tune`` from flags and from a Workspace YAML + ConfigMap; ``python -m kaito_core.tuning``."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

import pytest

from kaito_core.cli import main
from kaito_core.tuning.oci import pull_adapter
from kaito_core.tuning.output import is_complete

TRAINING_CONFIG = textwrap.indent(textwrap.dedent("""\
    training_config:
      ModelConfig:
        torch_dtype: "bfloat16"
        local_files_only: true
        device_map: "auto"
      QuantizationConfig:
        load_in_4bit: true
        bnb_4bit_quant_type: "nf4"
        bnb_4bit_compute_dtype: "float32"
        bnb_4bit_use_double_quant: true
      LoraConfig:
        r: 8
        lora_alpha: 16
        lora_dropout: 0.0
      TrainingArguments:
        output_dir: "/mnt/results"
        save_strategy: "epoch"
        per_device_train_batch_size: 2
        max_steps: 4
        learning_rate: 1e-2
      DataCollator:
        mlm: true
      DatasetConfig:
        shuffle_dataset: true
        train_test_split: 1
    """), "    ")


def test_flags(tiny_models, chat_jsonl, tmp_path, capsys):
    cfg = tmp_path / "training_config.yaml"
    cfg.write_text("training_config:\n  TrainingArguments: {max_steps: 3}\n")
    code = main(["tune", "--model-dir", str(tiny_models["phi3"]), "--preset", "phi-3-mini-4k-instruct",
                 "--method", "lora", "--data", str(chat_jsonl), "--config", str(cfg),
                 "--output", str(tmp_path / "out"), "--progress", "none", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 3 and summary["preset"] == "phi-3-mini-4k-instruct"
    assert summary["target_modules"] == ["qkv_proj", "o_proj"]
    assert is_complete(tmp_path / "out")


def test_base_model_flag_and_method_in_any_case(tiny_models, chat_jsonl, tmp_path, capsys):
    """Weights from a directory without --preset record a model id, not the host path, when told."""
    cfg = tmp_path / "training_config.yaml"
    cfg.write_text("training_config:\n  TrainingArguments: {max_steps: 2}\n")
    out = tmp_path / "out"
    code = main(["tune", "--model-dir", str(tiny_models["llama"]), "--method", "LoRA", "--data", str(chat_jsonl),
                 "--config", str(cfg), "--base-model", "meta-llama/Llama-3.1-8B-Instruct", "--output", str(out),
                 "--progress", "none", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "lora" and summary["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "meta-llama/Llama-3.1-8B-Instruct"


def test_workspace_with_configmap_in_another_file_pushes_to_the_registry(
        tiny_models, http_server, auth_registry, tmp_path, capsys, monkeypatch):
    """Upstream's falcon-7b 'oai' tuning Workspace shape: URL input, QLoRA, image output + push secret."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"messages": [{"content": f"Count to {i}.", "role": "user"},
                          {"content": " ".join(str(k) for k in range(1, i + 1)), "role": "assistant"}]}
            for i in range(1, 9)]
    pq.write_table(pa.Table.from_pylist(rows), http_server.root / "train-00000-of-00001.parquet")
    ref = f"{auth_registry.host}/adapters/falcon-oai:0.0.1"
    ws = tmp_path / "workspace.yaml"
    ws.write_text(textwrap.dedent(f"""\
        apiVersion: kaito.sh/v1beta1
        kind: Workspace
        metadata:
          name: workspace-tuning-falcon-7b-oai-chatbot
        resource:
          instanceType: "Standard_NC12s_v3"
          labelSelector:
            matchLabels:
              app: tuning-falcon-7b-oai
        tuning:
          preset:
            name: falcon-7b
          method: qlora
          config: my-qlora-params
          input:
            urls:
              - "{http_server.url}/train-00000-of-00001.parquet?download=true"
          output:
            image: "{ref}"
            imagePushSecret: registry-secret
        """))
    docker_cfg = {"auths": {auth_registry.host: {"auth": base64.b64encode(b"kaito:kaito-test-pass").decode()}}}
    other = tmp_path / "configmap.yaml"
    other.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: my-qlora-params\ndata:\n  training_config.yaml: |\n"
        + TRAINING_CONFIG + "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: registry-secret\n"
        "type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: "
        + base64.b64encode(json.dumps(docker_cfg).encode()).decode() + "\n")
    args = ["tune", "-f", str(ws), "-f", str(other), "--model-dir", str(tiny_models["falcon"]), "--progress", "none"]
    monkeypatch.delenv("KAITO_ALLOW_PRIVATE_URLS", raising=False)
    assert main(args) == 1  # the data server is on 127.0.0.1: refused without the operator setting
    assert "is refused" in capsys.readouterr().err
    monkeypatch.setenv("KAITO_ALLOW_PRIVATE_URLS", "1")
    assert main(args + ["--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "qlora" and summary["preset"] == "falcon-7b" and summary["steps"] == 4
    assert summary["data"]["rows_used"] == 8 and summary["output"]["digest"].startswith("sha256:")
    notes = " ".join(summary["notes"])
    assert "output_dir" in notes and "mlm" in notes and "fp32" in notes  # Falcon's QLoRA says it stays fp32
    pulled = pull_adapter(ref, tmp_path / "pulled", docker_config=docker_cfg)
    assert json.loads((pulled / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiiuae/falcon-7b"


def test_workspace_errors_are_clear(tmp_path, capsys):
    ws = tmp_path / "ws.yaml"
    ws.write_text(textwrap.dedent("""\
        apiVersion: kaito.sh/v1beta1
        kind: Workspace
        metadata: {name: t}
        resource: {instanceType: Standard_NC24ads_A100_v4, labelSelector: {matchLabels: {a: b}}}
        tuning:
          preset: {name: phi-3-mini-4k-instruct}
          method: lora
          config: missing-config
          input: {urls: ["https://example.com/d.parquet"]}
          output: {volumeSource: {persistentVolumeClaim: {claimName: results}}}
        """))
    assert main(["tune", "-f", str(ws)]) == 1
    assert "tuning.config names ConfigMap 'missing-config'" in capsys.readouterr().err
    text = ws.read_text().replace("  config: missing-config\n", "")
    ws.write_text(text)
    assert main(["tune", "-f", str(ws)]) == 1
    assert "tuning.output.volumeSource is not a hostPath; give --output DIR" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["-m", "kaito_core.tuning", "--help"]])
def test_python_m_has_the_same_flags(argv):
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--preset", "--model-dir", "--method", "--data", "--config", "--output", "--output-image",
                 "--push-secret", "-f FILE", "--metrics-port"):
        assert flag in out.stdout


def test_the_job_command_line_of_the_reconciler(tiny_models, chat_jsonl, auth_registry, tmp_path, monkeypatch):
    """The flags kaito_core/reconcile/tuning.py gives the Job's container: --model, --data DIR,
    --output /mnt/results, --push REF, and the push secret mounted as $DOCKER_CONFIG/config.json."""
    from kaito_core.tuning.cli import main as module_main

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "train.jsonl").write_text(chat_jsonl.read_text())
    secret_dir = tmp_path / "push-secret"
    secret_dir.mkdir()
    auth_registry.docker_config(secret_dir / "config.json")
    monkeypatch.setenv("DOCKER_CONFIG", str(secret_dir))
    config = tmp_path / "training_config.yaml"
    config.write_text("training_config:\n  TrainingArguments: {max_steps: 2}\n")
    ref = f"{auth_registry.host}/adapters/job:1"
    code = module_main(["--preset", "llama-3.1-8b-instruct", "--method", "lora", "--model", str(tiny_models["llama"]),
                        "--config", str(config), "--data", str(data_dir), "--output", str(tmp_path / "results"),
                        "--push", ref, "--progress", "log"])
    assert code == 0
    assert is_complete(tmp_path / "results")
    pulled = pull_adapter(ref, tmp_path / "pulled")  # credentials from $DOCKER_CONFIG again
    assert (pulled / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "results" / "adapter_model.safetensors").read_bytes()
