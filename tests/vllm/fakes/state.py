"""Shared state of the fake ``vllm`` / ``ray`` executables: one directory per test (FAKE_STATE),
one "node" per simulated pod (FAKE_NODE). Every call is appended to ``calls.jsonl`` with its
argv and the pod's KAITO_* environment, so the tests can check what each pod ran."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def root() -> Path:
    return Path(os.environ["FAKE_STATE"])


def node() -> str:
    return os.environ.get("FAKE_NODE", "0")


def record(tool: str, argv: list[str], **extra) -> None:
    entry = {"tool": tool, "node": node(), "pid": os.getpid(), "argv": argv, "time": time.time(),
             "env": {k: v for k, v in os.environ.items() if k.startswith(("KAITO_", "VLLM_"))}, **extra}
    with open(root() / "calls.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def calls(state_dir: Path) -> list[dict]:
    path = Path(state_dir) / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not reaped) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def members() -> list[dict]:
    """Ray nodes that are up: the head daemon and every blocking worker."""
    out = []
    for path in sorted(root().glob("raynode-*.json")):
        info = json.loads(path.read_text())
        if alive(info["pid"]):
            out.append(info)
    return out


def gpus() -> int:
    """GPUs this "pod" holds: the container's nvidia.com/gpu limit, which the test passes."""
    return int(os.environ.get("FAKE_GPUS", "0"))
