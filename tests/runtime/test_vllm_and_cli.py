"""The vllm runtime's command line (per installed preset), its proxy, and the command entry
points (``kaito serve`` and ``python -m kaito_core.runtime``)."""

from __future__ import annotations

import sys

import httpx
import openai
import pytest

from kaito_core.plugins import get_registry
from kaito_core.runtime.options import AdapterSpec, ServeOptions, build_parser, options_from_args
from kaito_core.runtime.vllm import VLLMUnavailable, engine_args, to_flags, vllm_available, vllm_command

PRESETS = sorted(get_registry().presets)
VLLM_PRESETS = sorted(n for n, p in get_registry().presets.items() if "vllm" in p.runtimes)


def test_presets_are_installed():
    assert {"phi-3-mini-4k-instruct", "llama-3.1-8b-instruct", "falcon-7b"} <= set(PRESETS)


@pytest.mark.parametrize("name", VLLM_PRESETS)
def test_vllm_command_for_each_preset(name):
    preset = get_registry().get_preset(name)
    opts = ServeOptions(model=preset.hf_repo, preset=name, port=5000)
    cmd = vllm_command(opts, preset, port=5001, python="python3")
    assert cmd[:5] == ["python3", "-m", "vllm.entrypoints.cli.main", "serve", preset.hf_repo]
    assert cmd[cmd.index("--served-model-name") + 1] == name
    assert cmd[cmd.index("--port") + 1] == "5001"
    for key, value in preset.runtimes["vllm"].items():
        flag = "--" + key.replace("_", "-")
        assert flag in cmd, (flag, cmd)
        if value is not True:
            assert cmd[cmd.index(flag) + 1] == str(value)
    assert "--enable-lora" not in cmd and "--api-key" not in cmd


def test_inference_config_overrides_preset_and_flags_override_config(tmp_path):
    preset = get_registry().get_preset("phi-3-mini-4k-instruct")
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text("vllm:\n  gpu-memory-utilization: 0.95\n  max-model-len: 2048\n  enforce_eager: true\n"
                   "  swap-space: 4\n  disable-log-stats: false\nmax_probe_steps: 6\n")
    args = build_parser().parse_args(["--model", "microsoft/Phi-3-mini-4k-instruct", "--preset",
                                      "phi-3-mini-4k-instruct", "--config", str(cfg), "--dtype", "float16",
                                      "--adapter", "sql=/mnt/adapter/sql"])
    opts = options_from_args(args)
    merged = engine_args(opts, preset)
    assert merged["gpu-memory-utilization"] == 0.95 and merged["max-model-len"] == 2048
    assert merged["dtype"] == "float16"  # the flag wins over the preset
    cmd = vllm_command(opts, preset, port=6000, adapter_paths={"sql": "/mnt/adapter/sql"})
    assert "--enforce-eager" in cmd and "--disable-log-stats" not in cmd
    assert cmd[cmd.index("--swap-space") + 1] == "4"
    assert "--enable-lora" in cmd and cmd[cmd.index("--lora-modules") + 1] == "sql=/mnt/adapter/sql"


def test_planned_gpu_memory_utilization_sits_between_preset_and_user(tmp_path, monkeypatch):
    preset = get_registry().get_preset("phi-3-mini-4k-instruct")
    opts = options_from_args(build_parser().parse_args(["--model", "m", "--preset", preset.name]))
    monkeypatch.setenv("KAITO_GPU_MEMORY_UTILIZATION", "0.82")
    assert engine_args(opts, preset)["gpu-memory-utilization"] == 0.82  # the plan's, not the preset's
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vllm:\n  gpu-memory-utilization: 0.7\n")
    user = options_from_args(build_parser().parse_args(["--model", "m", "--config", str(cfg)]))
    assert engine_args(user, preset)["gpu-memory-utilization"] == 0.7  # the user's ConfigMap wins
    monkeypatch.setenv("KAITO_GPU_MEMORY_UTILIZATION", "90")
    with pytest.raises(Exception, match="KAITO_GPU_MEMORY_UTILIZATION='90'"):
        engine_args(opts, preset)


def test_config_may_not_set_what_kaito_sets(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vllm:\n  port: 9999\n")
    opts = options_from_args(build_parser().parse_args(["--model", "m", "--config", str(cfg)]))
    with pytest.raises(Exception, match="port"):
        engine_args(opts)


def test_to_flags_shapes():
    assert to_flags({"a": 1, "b": True, "c": False, "d": [1, 2], "e": {"k": 1}, "f_g": None}) == [
        "--a", "1", "--b", "--d", "1", "2", "--e", '{"k":1}']


@pytest.mark.skipif(vllm_available(), reason="vllm is installed here")
def test_missing_vllm_is_a_clear_error(capsys):
    from kaito_core.cli import main
    from kaito_core.runtime.server import create_app

    with pytest.raises(VLLMUnavailable, match="pip install vllm"):
        create_app(model="m", runtime="vllm")
    assert main(["serve", "--model", "m", "--runtime", "vllm"]) == 1
    err = capsys.readouterr().err
    assert "vllm" in err and "--runtime transformers" in err


@pytest.mark.parametrize("argv,needle", [
    (["--model", "m", "--adapter", "no-equals-sign"], "NAME=PATH_OR_OCI_REF"),
    (["--model", "m", "--adapter", "bad name=/x"], "not valid"),
    (["--model", "m", "--adapter", "a=/x", "--adapter", "a=/y"], "twice"),
    (["--model", "m", "--adapter-strength", "a=2"], "0.0..1.0"),
    (["--model", "m", "--adapter-strength", "ghost=0.5"], "no --adapter defines"),
    (["--model", "m", "--max-batch", "0"], "--max-batch"),
    (["--model", "m", "--preset", "zzz-unknown-9b"], "no installed plugin provides it"),
    (["--model", "m", "--config", "/no/such/file.yaml"], "cannot read"),
    ([], "--model is required"),
    (["--model", "/definitely/missing/model-dir-xyz", "--port", "PORT"], "no such directory"),
    (["--model", "./relative/missing-dir", "--port", "PORT"], "no such directory"),
])
def test_kaito_serve_flag_errors(argv, needle, capsys, unused_port):
    from kaito_core.cli import main

    argv = [str(unused_port()) if a == "PORT" else a for a in argv]
    assert main(["serve", *argv]) == 1
    assert needle in capsys.readouterr().err


def test_pod_arguments_parse(monkeypatch):
    """What the reconciler puts in the pod: --adapters-dir with strengths, the revision from env."""
    monkeypatch.setenv("KAITO_MODEL_REVISION", "0a1b" * 10)
    opts = options_from_args(build_parser().parse_args(
        ["--model", "microsoft/Phi-3-mini-4k-instruct", "--preset", "phi-3-mini-4k-instruct", "--runtime", "vllm",
         "--host", "0.0.0.0", "--port", "5000", "--served-model-name", "phi-3-mini-4k-instruct",
         "--adapters-dir", "/mnt/adapter", "--adapter-strength", "sql=0.5"]))
    assert opts.adapter_strengths == {"sql": 0.5} and opts.revision == "0a1b" * 10
    cmd = vllm_command(opts, get_registry().get_preset("phi-3-mini-4k-instruct"), adapter_paths={})
    assert cmd[cmd.index("--revision") + 1] == "0a1b" * 10


def test_adapter_strength_flag_and_config_adapters(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("adapters:\n  - name: poet\n    source: reg.io/a/poet:v1\n    strength: 0.25\n"
                   "transformers:\n  max_batch: 4\n")
    opts = options_from_args(build_parser().parse_args(
        ["--model", "m", "--adapter", "sql=/a/sql", "--adapter-strength", "sql=0.5", "--config", str(cfg)]))
    assert opts.adapters == [AdapterSpec("sql", "/a/sql", 0.5), AdapterSpec("poet", "reg.io/a/poet:v1", 0.25)]
    assert opts.max_batch == 4


def test_proxy_in_front_of_a_server_started_with_python_m(tiny_models, serve_app, unused_port):
    """The vllm runtime's proxy (health, OpenAI routes, streaming, /chat), with
    ``python -m kaito_core.runtime`` as the upstream server in place of vLLM."""
    from kaito_core.runtime.vllm_proxy import create_proxy_app

    port = unused_port()
    command = [sys.executable, "-m", "kaito_core.runtime", "--model", str(tiny_models["llama"]), "--port",
               str(port), "--served-model-name", "up", "--threads", "1", "--api-key", "k1", "--log-level", "warning"]
    opts = ServeOptions(model=str(tiny_models["llama"]), served_model_name="up", api_key="k1", max_body_bytes=4096)
    proxy = serve_app(create_proxy_app(opts, command=command, upstream_port=port), timeout=90)
    assert httpx.get(proxy.url + "/healthz").json() == {"status": "Healthy"}
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k1", max_retries=0)
    assert [m.id for m in client.models.list()] == ["up"]
    kw = dict(model="up", messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0,
              extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**kw).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                       if c.choices)
    assert streamed == whole
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy.url + "/v1", api_key="wrong", max_retries=0).models.list()
    r = httpx.post(proxy.url + "/chat", json={"prompt": "Hello", "generate_kwargs": {"max_new_tokens": 3}},
                   headers={"Authorization": "Bearer k1"})
    assert r.status_code == 200 and r.json()["Result"].startswith("Hello")
    assert "kaito_requests_total" in httpx.get(proxy.url + "/metrics").text
    _proxy_refusals(proxy.url)


def _proxy_refusals(url: str) -> None:
    """What the proxy refuses itself is answered in OpenAI's shape, as kaito's own server does."""
    key = {"Authorization": "Bearer k1"}
    big = httpx.post(url + "/v1/completions", json={"prompt": "x" * 5000}, headers=key)  # never reaches vLLM
    assert big.status_code == 413 and big.json()["error"]["param"] == "body", big.text
    lost = httpx.get(url + "/no/such/route")
    assert lost.status_code == 404 and lost.json()["error"]["code"] == "not_found", lost.text
    wrong = httpx.put(url + "/chat", headers=key)
    assert wrong.status_code == 405 and "POST" in wrong.headers["allow"], wrong.text
    bad = httpx.post(url + "/chat", json={"prompt": "x", "generate_kwargs": {"max_length": "long"}}, headers=key)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "generate_kwargs.max_length", bad.text
    assert bad.json()["detail"] == bad.json()["error"]["message"]
    assert httpx.head(url + "/health").status_code == 200


def test_upstream_example_configmap_is_accepted(tmp_path):
    """upstream's kaito_workspace_custom_config.yaml ConfigMap, unchanged."""
    from pathlib import Path

    import yaml

    example = Path(__file__).resolve().parents[1] / "data/reference/kaito-examples/kaito_workspace_custom_config.yaml"
    cm = next(d for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "ConfigMap")
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text(cm["data"]["inference_config.yaml"])
    opts = options_from_args(build_parser().parse_args(["--model", "org/model", "--config", str(cfg)]))
    cmd = vllm_command(opts, port=7000, adapter_paths={})
    assert cmd[cmd.index("--max-model-len") + 1] == "131072"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    assert "--enable-chunked-prefill" in cmd and "--max-probe-steps" not in cmd
    # the reconciler's default file (preset engine args + transformers dtype) parses too
    cfg.write_text("transformers:\n  dtype: bfloat16\nvllm:\n  dtype: bfloat16\n  max-model-len: 4096\n")
    assert options_from_args(build_parser().parse_args(["--model", "m", "--config", str(cfg)])).dtype == "bfloat16"
