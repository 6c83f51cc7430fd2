"""Fixtures for local mode: a private state directory, a tiny real phi-3 model, Workspace files.

Every Workspace a test brings up is stopped at the end by its pids (``kaito down``), and the
test fails if a process it started is still alive.
"""

from __future__ import annotations

import json
import os
import struct
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kaito_core.local import processes, state
from kaito_core.local import status as st
from kaito_core.local.workspaces import all_workspaces, down



@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kaito_core.testing.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "phi3", "phi3")


@pytest.fixture
def kaito_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """KAITO_HOME for this test; whatever is still running there at the end is stopped and reported."""
    home = tmp_path / "kaito-home"
    monkeypatch.setenv(state.HOME_ENV, str(home))
    yield home
    leftovers = []
    for lw in all_workspaces():
        pids = down(lw)
        leftovers += pids
    assert not [p for p in leftovers if processes.alive(p)], "kaito down left processes running"


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


def inference_yaml(name: str, preset: str = "phi-3-mini-4k-instruct", annotations: dict[str, str] | None = None) -> str:
    ann = ""
    if annotations:
        ann = "  annotations:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in annotations.items())
    return (f"apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: {name}\n{ann}"
            f"resource:\n  instanceType: Standard_NC24ads_A100_v4\n  labelSelector:\n    matchLabels:\n"
            f"      apps: {name}\ninference:\n  preset:\n    name: {preset}\n")


def wait_status(wdir: Path, pred: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
    """Poll the Workspace's status.json until ``pred`` holds."""
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = state.read_json(wdir / state.STATUS) or {}
        if pred(data):
            return data
        time.sleep(0.1)
    raise AssertionError(f"status of {wdir.name} did not reach the expected state in {timeout}s: {json.dumps(data)}")


def cond(data: dict[str, Any], ctype: str) -> dict[str, Any]:
    return st.condition(data, ctype) or {}


def huge_model_dir(path: Path, tib: float = 4.0) -> Path:
    """A model directory whose safetensors *header* claims ``tib`` TiB of weights (the sizing reads
    only headers, so nothing that large is written)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80,
        "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096,
        "intermediate_size": 28672, "torch_dtype": "bfloat16"}))
    n = int(tib * 2**40 / 2)
    rows = 65536
    cols = n // rows
    header = json.dumps({"model.embed_tokens.weight": {"dtype": "BF16", "shape": [rows, cols],
                                                       "data_offsets": [0, rows * cols * 2]}}).encode()
    header += b" " * (-len(header) % 8)
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    return path


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # Health checks and the OpenAI client talk to 127.0.0.1 only.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
