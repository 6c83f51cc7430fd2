"""Shared helpers of the tuning tests (data, configs, model outputs)."""

from __future__ import annotations

import socket
from pathlib import Path

COUNTRIES = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
             ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"), ("Chile", "Santiago")]

# Small, fast and learnable: a constant learning rate so 20 steps move the loss clearly.
FAST_CONFIG = {"training_config": {
    "TrainingArguments": {"learning_rate": 2e-2, "lr_scheduler_type": "constant",
                          "per_device_train_batch_size": 2, "max_steps": 20},
    "LoraConfig": {"r": 8, "lora_alpha": 16},
    "DatasetConfig": {"train_test_split": 1, "max_seq_length": 64},
}}


def chat_rows() -> list[dict]:
    return [{"messages": [{"role": "system", "content": "Answer briefly."},
                          {"role": "user", "content": f"What is the capital of {c}?"},
                          {"role": "assistant", "content": f"The capital of {c} is {cap}."}]}
            for c, cap in COUNTRIES * 2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- model helpers ---------------------------------------------------------------------------


def logits_for(model_dir: Path, adapter_dir: Path | None, text: str = "What is the capital of Peru?"):
    """Logits of the base model (or base + adapter) for ``text``; a fresh model each call."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits[0]


class ThreadServer:
    """The inference runtime (uvicorn) in a thread of this process; ``stop()`` shuts it down."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 60.0) -> "ThreadServer":
        import time

        import httpx

        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"runtime at {self.url} not healthy within {timeout}s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def greedy(url: str, model: str, prompt: str, n: int = 12) -> str:
    import httpx

    r = httpx.post(url + "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": n,
                                                  "temperature": 0, "ignore_eos": True}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def step_lines(stderr: str) -> list[dict]:
    """The recipe's JSON progress lines (`... step {...}`) in ``stderr``, parsed."""
    import json

    return [json.loads(line.split(" step ", 1)[1]) for line in stderr.splitlines() if " step {" in line]


def run_until_sigterm(command: list[str], *, cwd: Path, env: dict, at_step: int = 3) -> tuple[int, str]:
    """Run the recipe, send SIGTERM once it reports step ``at_step`` (as a drained node's kubelet
    would), and return its exit code and whole stderr."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            steps = step_lines(line)
            if steps and steps[0]["step"] >= at_step:
                proc.send_signal(signal.SIGTERM)
                break
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines) + rest
