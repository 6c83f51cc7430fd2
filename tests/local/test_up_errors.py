"""`kaito up` refuses what it cannot run, before starting anything, with errors a person can act on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from kaito_core.cli import main as kaito
from kaito_core.local import state
from kaito_core.local import status as st
from kaito_core.local.machine import GPU, Machine, check
from kaito_core.local.up import UpError, UpOptions, up
from kaito_core.local.weights import WeightsError, locate

from .conftest import cond, huge_model_dir, inference_yaml

TUNING = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: {name}
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels:
      apps: {name}
tuning:
  preset:
    name: phi-3-mini-4k-instruct
  method: lora
  input:
    volumeSource:
      hostPath:
        path: {data}
  output:
    volumeSource:
      hostPath:
        path: {out}
"""


def nothing_started() -> bool:
    root = state.state_root()
    return not root.exists() or not any(root.iterdir())


def test_model_too_large_for_this_machine_is_refused_with_the_numbers(kaito_home, tmp_path, write_yaml, capsys):
    big = huge_model_dir(tmp_path / "big", tib=4)
    path = write_yaml("ws.yaml", inference_yaml("big"))
    assert kaito(["up", str(path), "--weights", str(big)]) == 1
    captured = capsys.readouterr()
    assert "DOES NOT FIT" in captured.out
    assert "does not fit this machine" in captured.err
    assert "GiB of RAM" in captured.err and "GiB is available" in captured.err
    assert "kaito.sh/bypass-resource-checks" in captured.err
    assert nothing_started()


def test_invalid_workspace_lists_every_problem_and_starts_nothing(kaito_home, tiny_phi3, write_yaml):
    path = write_yaml("bad.yaml", """\
        apiVersion: kaito.sh/v1beta1
        kind: Workspace
        metadata:
          name: Bad_Name
        resource:
          instanceType: Standard_NC24ads_A100_v4
        inference:
          preset:
            name: phi-3-mini-4k-instruct
    """)
    with pytest.raises(UpError) as exc:
        up(UpOptions(file=str(path), weights=str(tiny_phi3), port=0), out=io.StringIO())
    text = str(exc.value)
    assert "metadata.name" in text and "resource.labelSelector" in text and "2 problems" in text
    assert nothing_started()


def test_weights_errors_name_the_source_and_the_ways_to_give_them(kaito_home, tmp_path, monkeypatch, write_yaml):
    from kaito_core.api import load_workspaces
    from kaito_core.plugins import get_registry

    preset = get_registry().get_preset("phi-3-mini-4k-instruct")
    ws = load_workspaces(write_yaml("a.yaml", inference_yaml("w")))[0]
    with pytest.raises(WeightsError, match=r"--weights '.*/nope' does not exist"):
        locate(ws, preset, str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="has no config.json"):
        locate(ws, preset, str(tmp_path / "empty"))
    flag = load_workspaces(write_yaml("b.yaml", inference_yaml("w", annotations={
        "kaito.sh/use-local-weights": "True"})))[0]
    # "True" means upstream's node cache /opt/kaito/models/<preset>, here as on a node
    with pytest.raises(WeightsError, match=f"/opt/kaito/models/{preset.name}' does not exist"):
        locate(flag, preset)
    # No weights anywhere and no hub: the error says so and lists the three ways to give them.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as exc:
        locate(ws, preset)
    text = str(exc.value)
    assert "not on this machine" in text and "HF_HUB_OFFLINE" in text
    assert "--weights DIR" in text and "kaito.sh/use-local-weights" in text and "huggingface-cli download" in text
    # Online mode with an unreachable hub (a closed local port) fails the same clear way.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsError, match=rf"127\.0\.0\.1:{port} is not reachable"):
        locate(ws, preset)


def test_annotation_means_upstreams_node_cache(kaito_home, write_yaml):
    """kaito.sh/use-local-weights: "true" is /opt/kaito/models/<preset> (upstream's node cache),
    "false" is off; local mode reads it the same way."""
    from kaito_core.api import load_workspaces
    from kaito_core.local.weights import _annotation_path
    from kaito_core.plugins import get_registry

    preset = get_registry().get_preset("phi-3-mini-4k-instruct")
    on = load_workspaces(write_yaml("a.yaml", inference_yaml("w", annotations={
        "kaito.sh/use-local-weights": "true"})))[0]
    off = load_workspaces(write_yaml("b.yaml", inference_yaml("w", annotations={
        "kaito.sh/use-local-weights": "false"})))[0]
    assert _annotation_path(on, preset) == "/opt/kaito/models/phi-3-mini-4k-instruct"
    assert _annotation_path(off, preset) is None


def test_fit_check_numbers_cpu_and_gpu() -> None:
    cpu = Machine(cpus=2, ram_total_gib=16, ram_available_gib=8, disk_free_gib=100)
    ok = check(4.0, cpu, weights_gib=2.0)
    assert ok.ok and ok.device == "cpu" and "needs 4.00 GiB of RAM" in ok.message
    no = check(7.5, cpu, weights_gib=2.0)
    assert not no.ok and "7.0 GiB usable" in no.message and "pick a smaller model" in no.message
    disk = check(1.0, Machine(cpus=2, ram_total_gib=16, ram_available_gib=8, disk_free_gib=0.5), weights_gib=2.0)
    assert not disk.ok and "disk" in disk.message
    gpu = Machine(cpus=8, ram_total_gib=64, ram_available_gib=60, disk_free_gib=100,
                  gpus=(GPU(0, "NVIDIA A10", 24.0, 20.0),))
    assert check(15.0, gpu, weights_gib=7).ok
    bad = check(21.0, gpu, weights_gib=7)
    assert not bad.ok and bad.device == "gpu" and "20.0 GiB free" in bad.message


def test_failed_tuning_job_is_reported_as_workspace_succeeded_false(kaito_home, tiny_phi3, tmp_path, write_yaml):
    data = tmp_path / "train.jsonl"
    data.write_text('{"neither": "messages nor prompt/completion"}\n')
    path = write_yaml("tune.yaml", TUNING.format(name="tune-bad", data=data, out=tmp_path / "adapter"))
    out = io.StringIO()
    with pytest.raises(UpError, match="tuning failed: the tuning process exited with code 1"):
        up(UpOptions(file=str(path), weights=str(tiny_phi3)), out=out)
    assert "| error:" in out.getvalue()  # the job's own error was streamed to the terminal
    status = state.read_json(state.workspace_dir("tune-bad") / state.STATUS)
    assert status["state"] == "Failed"
    assert cond(status, st.JOB_STARTED)["status"] == "True"
    failed = cond(status, st.WORKSPACE_SUCCEEDED)
    assert failed["status"] == "False" and failed["reason"] == st.R_JOB_FAILED
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()


def test_missing_training_data_is_refused_before_starting(kaito_home, tiny_phi3, tmp_path, write_yaml):
    path = write_yaml("tune.yaml", TUNING.format(name="tune-none", data=tmp_path / "missing.jsonl",
                                                 out=tmp_path / "adapter"))
    with pytest.raises(UpError, match=r"tuning.input.volumeSource.hostPath.path .*missing.jsonl' does not exist"):
        up(UpOptions(file=str(path), weights=str(tiny_phi3)), out=io.StringIO())
    assert nothing_started()


def test_cli_ps_logs_down_without_workspaces(kaito_home, capsys):
    assert kaito(["ps"]) == 0
    assert "no Workspaces are running here" in capsys.readouterr().out
    assert kaito(["logs", "ghost"]) == 1
    assert "no local Workspace named 'ghost'" in capsys.readouterr().err
    assert kaito(["down"]) == 2
    assert kaito(["down", "ghost"]) == 1
    assert kaito(["ps", "-o", "json"]) == 0
    assert capsys.readouterr().out.strip().endswith("[]")


def test_state_dir_follows_kaito_home(kaito_home: Path) -> None:
    assert state.state_root() == kaito_home / "local"
