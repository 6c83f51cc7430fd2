"""Bad input, each in one clear line: huge files in bounded memory, offline hub, disk full while
checkpointing, another Workspace's adapter, and datasets' save_to_disk directories."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kaito_core.tuning import OutputError, TuningError, run
from kaito_core.tuning.output import SUMMARY, is_complete
from tests.tuning.helpers import chat_rows, free_port

ROOT = Path(__file__).resolve().parents[2]

# Runs the real CLI and prints the process's peak RSS (VmHWM) last, whatever the outcome.
CHILD = """
import sys
from kaito_core.tuning.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print("VmHWM_KiB", hwm, flush=True)
sys.exit(rc)
"""


def _write_with_bad_last_row(path: Path, n_rows: int) -> Path:
    line = json.dumps(chat_rows()[0]) + "\n"
    block = line * 10000
    with open(path, "w") as f:
        for _ in range(n_rows // 10000):
            f.write(block)
        f.write(line * (n_rows % 10000))
        f.write(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}) + "\n")
    return path


def _peak_kib(model, data: Path, out: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-c", CHILD, "--model-dir", str(model), "--data", str(data),
                           "--output", str(out), "--progress", "none"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    peak = int(proc.stdout.split("VmHWM_KiB")[-1].split()[0])
    return peak, proc.stderr


def test_a_huge_file_with_a_bad_row_fails_in_bounded_memory(tiny_models, tmp_path):
    small = _write_with_bad_last_row(tmp_path / "small.jsonl", 1000)
    big = _write_with_bad_last_row(tmp_path / "big.jsonl", 1_500_000)
    assert big.stat().st_size > 200 * 2**20
    base, _ = _peak_kib(tiny_models["llama"], small, tmp_path / "a")
    peak, err = _peak_kib(tiny_models["llama"], big, tmp_path / "b")
    assert "big.jsonl (line 1500001): no assistant message" in err and "Traceback" not in err
    # The whole file used to be read (and parsed) first: several times its size. Now a stream.
    assert (peak - base) * 1024 < 64 * 2**20, (base, peak)
    assert not (tmp_path / "b").exists()


def test_offline_preset_fails_at_once_in_one_line(chat_jsonl, tmp_path, monkeypatch):
    # A hub that refuses connections: the same as no network, without depending on this machine's.
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "adapter"
    with pytest.raises(TuningError) as err:
        run(preset="phi-3-mini-4k-instruct", data=[str(chat_jsonl)], output=str(out), progress="none")
    msg = str(err.value)
    assert "'microsoft/Phi-3-mini-4k-instruct': it is not a local directory and the Hugging Face hub cannot be " \
           "reached (offline)" in msg and "\n" not in msg
    assert not out.exists()


def test_disk_full_while_checkpointing_is_one_clear_error(tiny_models, chat_jsonl, fast_config, tmp_path):
    fast_config["training_config"]["TrainingArguments"].update(max_steps=3, save_strategy="steps", save_steps=2)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def fill_disk(info):
        if info.step == 1:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1024, old_limit[1]))

    try:
        with pytest.raises(OutputError, match=r"writing a checkpoint under .*checkpoints failed: File too large"):
            run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
                output=str(tmp_path / "a"), progress="none", on_step=fill_disk)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert not (tmp_path / "a").exists()


def test_another_workspaces_adapter_is_not_replaced(tiny_models, chat_jsonl, fast_config, tmp_path, monkeypatch):
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 2
    out = tmp_path / "shared"
    kwargs = dict(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
                  output=str(out), progress="none")
    monkeypatch.setenv("KAITO_WORKSPACE", "first")
    run(**kwargs)
    assert json.loads((out / SUMMARY).read_text())["workspace"] == "first"
    monkeypatch.setenv("KAITO_WORKSPACE", "second")
    with pytest.raises(OutputError, match="already holds an adapter written by Workspace 'first'.*--overwrite"):
        run(**kwargs)
    monkeypatch.setenv("KAITO_WORKSPACE", "first")
    run(**kwargs)  # the same Workspace run again replaces its own adapter
    assert is_complete(out)


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_save_to_disk_directory_is_training_data(as_dict, tiny_models, fast_config, tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(chat_rows())
    target = tmp_path / "saved"
    if as_dict:
        datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(target))
    else:
        ds.save_to_disk(str(target))
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 2
    result = run(model_dir=str(tiny_models["llama"]), data=[str(target)], config=fast_config,
                 output=str(tmp_path / "a"), progress="none")
    d = result.summary["data"]
    assert d["rows_total"] == len(chat_rows()) and all(f.endswith(".arrow") for f in d["files"])
    assert not any(os.path.basename(f) in ("state.json", "dataset_info.json") for f in d["files"])
