"""Data parallel with one process per device: 2 CPU processes (gloo) under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from kaito_core.tuning.output import SUMMARY, is_complete

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_train_disjoint_shards_and_write_one_adapter(tiny_models, fast_config, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"What is {i}?"},
                          {"role": "assistant", "content": f"It is {i}."}]} for i in range(16)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fast_config["training_config"]["TrainingArguments"].update(max_steps=4, save_strategy="no")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(fast_config))
    out, work = tmp_path / "adapter", tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "kaito_core.tuning", "--nproc-per-node", "2",
                           "--model-dir", str(tiny_models["llama"]), "--data", str(data), "--config", str(config),
                           "--output", str(out), "--work-dir", str(work), "--progress", "none", "--json"],
                          cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = [set(json.loads((work / f"kaito-rank{r}-rows.json").read_text())) for r in (0, 1)]
    # batch 2 x 4 steps per rank = 8 rows each: two halves of the 16 rows, no row on both ranks
    assert len(shards[0]) == len(shards[1]) == 8
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(16))
    assert is_complete(out)
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["distributed"] == {"rank": 0, "world_size": 2, "rows_this_rank": 8}
    # one report on stdout (rank 0's), and the gathered token count covers both ranks' rows
    assert json.loads(proc.stdout)["tokens_seen"] == summary["tokens_seen"] > 16 * 5


def test_sigterm_stops_every_rank_at_one_checkpoint_and_exits_75(tiny_models, chat_jsonl, fast_config, tmp_path):
    import signal
    import time

    fast_config["training_config"]["TrainingArguments"].update(max_steps=100000, save_strategy="no")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(fast_config))
    work = tmp_path / "work"
    log = tmp_path / "log.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kaito_core.tuning", "--nproc-per-node", "2",
                                 "--model-dir", str(tiny_models["llama"]), "--data", str(chat_jsonl),
                                 "--config", str(config), "--output", str(tmp_path / "adapter"),
                                 "--work-dir", str(work), "--progress", "log"],
                                cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=err, text=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and '"step": 2,' not in log.read_text():
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 75, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.startswith("interrupted: ")]
    assert len(lines) == 1 and "interrupted by SIGTERM at step" in lines[0]  # one line, from rank 0
    step = int(lines[0].split(" at step ")[1].split()[0])
    assert (work / "checkpoints" / f"checkpoint-{step}" / "adapter_model.safetensors").is_file()
    assert "Traceback" not in text


def test_two_processes_train_packed_rows_with_per_sample_attention(tiny_models, chat_jsonl, fast_config, tmp_path):
    """The collator's per-sample layout travels through DistributedDataParallel's forward."""
    fast_config["training_config"]["TrainingArguments"].update(max_steps=3, save_strategy="no", packing=True,
                                                                per_device_train_batch_size=1)
    fast_config["training_config"]["DatasetConfig"].update(max_seq_length=256, train_test_split=1)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(fast_config))
    out = tmp_path / "adapter"
    proc = subprocess.run([sys.executable, "-m", "kaito_core.tuning", "--nproc-per-node", "2",
                           "--model-dir", str(tiny_models["llama"]), "--data", str(chat_jsonl), "--config", str(config),
                           "--output", str(out), "--work-dir", str(tmp_path / "work"), "--progress", "none", "--json"],
                          cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert is_complete(out) and summary["steps"] == 3 and summary["final_loss"] > 0
    assert summary["packing"]["samples_per_row"] > 1
    # 2 ranks x 3 steps x one packed row of several samples each
    assert summary["tokens_seen"] > 2 * 3 * 2 * 20
