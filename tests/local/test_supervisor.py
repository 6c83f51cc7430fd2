"""The supervised runtime: ready -> crash -> InferenceReady False with the reason -> restarted ->
ready again; ``kaito down`` leaves no process behind; a dead supervisor takes its runtime along."""

from __future__ import annotations

import io
import os
import signal
import time

import httpx
import pytest

from kaito_core.cli import main as kaito
from kaito_core.local import processes, state
from kaito_core.local import status as st
from kaito_core.local.up import UpError, UpOptions, up
from kaito_core.local.workspaces import get

from .conftest import cond, inference_yaml, wait_status


def test_crash_is_reported_restarted_with_backoff_and_down_leaves_nothing(kaito_home, tiny_phi3, write_yaml, capsys):
    path = write_yaml("ws.yaml", inference_yaml("crashy"))
    out = io.StringIO()
    result = up(UpOptions(file=str(path), weights=str(tiny_phi3), port=0, backoff_s=1.0), out=out)
    text = out.getvalue()
    # kaito up prints the sizing table, the endpoint and a ready-to-paste example.
    assert "WHERE" in text and "this machine" in text and "fits" in text
    assert f"{result.endpoint}/v1/chat/completions" in text and "from openai import OpenAI" in text
    assert "RANDOM-WEIGHT" in text
    reply = httpx.post(f"{result.endpoint}/v1/chat/completions", timeout=30,
                       json={"model": "phi-3-mini-4k-instruct", "max_tokens": 4,
                             "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200, reply.text

    wdir = state.workspace_dir("crashy")
    data = state.read_json(wdir / state.STATUS)
    assert data["state"] == "Ready"
    assert cond(data, st.RESOURCE_READY)["status"] == "True"
    assert cond(data, st.INFERENCE_READY)["status"] == "True"
    sup = processes.supervisor_pid(wdir)
    first = data["local"]["runtimePid"]
    assert sup and first and processes.alive(first)

    os.kill(first, signal.SIGKILL)
    crashed = wait_status(wdir, lambda d: cond(d, st.INFERENCE_READY).get("reason") == st.R_CRASHED, timeout=15)
    msg = cond(crashed, st.INFERENCE_READY)["message"]
    assert cond(crashed, st.INFERENCE_READY)["status"] == "False"
    assert "killed by SIGKILL" in msg and "restart 1 in 1s" in msg
    assert crashed["state"] == "NotReady"
    # kaito ps shows the condition and its reason while it is down.
    assert kaito(["ps"]) == 0
    shown = capsys.readouterr().out
    assert "crashy" in shown and "CrashLoopBackOff" in shown

    again = wait_status(wdir, lambda d: cond(d, st.INFERENCE_READY).get("status") == "True", timeout=60)
    second = again["local"]["runtimePid"]
    assert second != first and again["local"]["restarts"] == 1 and again["local"]["lastExit"]["code"] == -9
    assert processes.supervisor_pid(wdir) == sup

    assert kaito(["logs", "crashy", "--tail", "50"]) == 0
    assert "was killed by SIGKILL" in capsys.readouterr().out

    assert kaito(["down", "crashy"]) == 0
    assert "stopped pid(s)" in capsys.readouterr().out
    for pid in (sup, first, second):
        assert not processes.alive(pid), f"pid {pid} survived kaito down"
    assert not wdir.exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{result.endpoint}/health", timeout=2)


def test_killed_supervisor_takes_the_runtime_along_and_ps_says_so(kaito_home, tiny_phi3, write_yaml, capsys):
    path = write_yaml("ws.yaml", inference_yaml("orphan"))
    up(UpOptions(file=str(path), weights=str(tiny_phi3), port=0, detach=True), out=io.StringIO())
    wdir = state.workspace_dir("orphan")
    data = wait_status(wdir, lambda d: (d.get("local") or {}).get("runtimePid"), timeout=30)
    runtime = data["local"]["runtimePid"]
    sup = processes.supervisor_pid(wdir)
    os.kill(sup, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and processes.alive(runtime):
        time.sleep(0.05)
    assert not processes.alive(runtime), "the runtime outlived its supervisor (PR_SET_PDEATHSIG)"
    status = get("orphan").status()
    assert status["state"] == "Stopped"
    assert cond(status, st.INFERENCE_READY)["reason"] == st.R_SUPERVISOR_GONE
    assert kaito(["ps", "-o", "json"]) == 0
    assert '"SupervisorGone"' in capsys.readouterr().out
    assert kaito(["down", "orphan"]) == 0
    assert "nothing was running" in capsys.readouterr().out
    assert not wdir.exists()


def test_runtime_that_cannot_load_fails_up_with_its_output_and_is_stopped(kaito_home, tiny_phi3, tmp_path, write_yaml):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_phi3.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    # The header (what sizing reads) is intact; the tensor data is cut short, so loading fails.
    raw = (tiny_phi3 / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(raw[: 8 + int.from_bytes(raw[:8], "little") + 64])
    path = write_yaml("ws.yaml", inference_yaml("broken"))
    out = io.StringIO()
    with pytest.raises(UpError) as exc:
        up(UpOptions(file=str(path), weights=str(broken), port=0, backoff_s=30.0, timeout_s=60), out=out)
    text = str(exc.value)
    # Whether the runtime exits or stays up answering /health "Failed", the user gets its reason.
    assert "did not start" in text and ("could not load the model" in text or "exited with code 1" in text)
    assert "deserializing header" in text
    assert "the runtime's last output" in out.getvalue()
    assert "stopped broken (nothing left running)" in out.getvalue()
    assert not state.workspace_dir("broken").exists()
