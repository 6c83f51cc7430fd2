"""Checkpoints and resume: SIGTERM saves a checkpoint and exits 75; the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kaito_core.tuning import TuningConfigError, run
from kaito_core.tuning.output import is_complete
from kaito_core.tuning.train import EXIT_INTERRUPTED
from tests.tuning.helpers import run_until_sigterm, step_lines

ROOT = Path(__file__).resolve().parents[2]


def _command(model, data, config, out, work, max_steps):
    return [sys.executable, "-m", "kaito_core.tuning", "--model-dir", str(model), "--data", str(data),
            "--config", str(config), "--output", str(out), "--work-dir", str(work), "--progress", "log",
            "--max-steps", str(max_steps)]


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tiny_models, chat_jsonl, fast_config, tmp_path):
    fast_config["training_config"]["TrainingArguments"].pop("max_steps")
    config = tmp_path / "training_config.yaml"
    config.write_text(yaml.safe_dump(fast_config))
    out, work = tmp_path / "adapter", tmp_path / "work"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    returncode, stderr = run_until_sigterm(_command(tiny_models["llama"], chat_jsonl, config, out, work, 100000),
                                           cwd=ROOT, env=env)
    assert returncode == EXIT_INTERRUPTED, stderr[-2000:]
    last = step_lines(stderr)[-1]
    stopped = last["step"]
    assert f"interrupted: interrupted by SIGTERM at step {stopped} of" in stderr
    assert (work / "checkpoints" / f"checkpoint-{stopped}" / "adapter_model.safetensors").is_file()
    assert not out.exists()  # nothing published, no empty directory
    assert last["eta_s"] is not None and last["eta_s"] > 0

    again = subprocess.run(_command(tiny_models["llama"], chat_jsonl, config, out, work, stopped + 2) + ["--json"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    steps = [s["step"] for s in step_lines(again.stderr)]
    assert steps == [stopped + 1, stopped + 2]  # continued from the saved step, not from 0
    summary = json.loads(again.stdout)
    assert summary["resumed_from"].endswith(f"checkpoint-{stopped}") and summary["steps"] == stopped + 2
    assert is_complete(out)
    # the work dir the user named keeps its checkpoints
    assert (work / "checkpoints" / f"checkpoint-{stopped + 2}").is_dir()


def test_resume_from_checkpoint_key_is_honoured_and_checked(tiny_models, chat_jsonl, fast_config, tmp_path):
    ta = fast_config["training_config"]["TrainingArguments"]
    ta.update(max_steps=4, save_strategy="steps", save_steps=2)
    work = tmp_path / "work"
    kwargs = dict(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], progress="none", work_dir=str(work))
    first = run(config=fast_config, output=str(tmp_path / "a"), **kwargs)
    assert first.summary["resumed_from"] is None
    # A completed run in the same work dir is not resumed by itself ...
    again = run(config=fast_config, output=str(tmp_path / "b"), **kwargs)
    assert again.summary["resumed_from"] is None
    assert any("were not resumed (that run completed)" in n for n in again.summary["notes"])
    # ... but resume_from_checkpoint names one to continue from (here: step 2 of 4).
    ta.update(resume_from_checkpoint=str(work / "checkpoints" / "checkpoint-2"))
    steps = []
    third = run(config=fast_config, output=str(tmp_path / "c"), on_step=steps.append, **kwargs)
    assert third.summary["resumed_from"].endswith("checkpoint-2") and [s.step for s in steps] == [3, 4]
    ta.update(resume_from_checkpoint=str(tmp_path / "nowhere"))
    with pytest.raises(TuningConfigError, match="resume_from_checkpoint: is not a checkpoint directory"):
        run(config=fast_config, output=str(tmp_path / "d"), **kwargs)


def test_logging_steps_larger_than_the_run_still_publishes(tiny_models, chat_jsonl, fast_config, tmp_path):
    fast_config["training_config"]["TrainingArguments"].update(max_steps=3, logging_steps=50)
    result = run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
                 output=str(tmp_path / "a"), progress="none")
    assert result.summary["steps"] == 3 and result.summary["final_loss"] > 0
    assert is_complete(tmp_path / "a")


def test_sigterm_while_downloading_leaves_nothing_and_exits_75(tiny_models, tmp_path):
    """A data server that accepts and never answers: the run is blocked in the download."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(120)
    out = tmp_path / "adapter"
    proc = subprocess.Popen([sys.executable, "-m", "kaito_core.tuning", "--model-dir", str(tiny_models["llama"]),
                             "--data", f"http://127.0.0.1:{server.getsockname()[1]}/train.jsonl",
                             "--allow-private-urls", "--output", str(out), "--progress", "log"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        conn, _ = server.accept()  # the run is now waiting for the answer
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        conn.close()
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "interrupted: interrupted by SIGTERM outside a training step: nothing was published" in err
    assert "Traceback" not in err and not out.exists()
