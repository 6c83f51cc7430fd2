"""The generic resolver: presets from config.json + safetensors headers, never the weights."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from safetensors import safe_open

from kaito_core import sizing
from kaito_core.builtins import hf
from kaito_core.plugins import get_registry


def header_truth(folder: Path) -> tuple[int, int]:
    """Parameter count and bytes, read independently through safetensors' own reader."""
    params = nbytes = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), framework="numpy") as st:
            for k in st.keys():
                sl = st.get_slice(k)
                n = 1
                for d in sl.get_shape():
                    n *= d
                params += n
                nbytes += n * {"F32": 4, "BF16": 2, "F16": 2}[sl.get_dtype()]
    return params, nbytes


@pytest.mark.parametrize("arch,cls,kv,targets", [
    ("llama", "LlamaForCausalLM", 2, ("q_proj", "v_proj")),
    ("phi3", "Phi3ForCausalLM", 4, ("qkv_proj", "o_proj")),
    ("falcon", "FalconForCausalLM", 1, ("query_key_value",)),
])
def test_local_directory_becomes_a_preset(tiny_models, arch, cls, kv, targets):
    folder = tiny_models[arch]
    p = hf.resolve(str(folder))
    assert p is not None
    params, nbytes = header_truth(folder)
    assert (p.parameters, p.weight_bytes) == (params, nbytes)
    cfg = json.loads((folder / "config.json").read_text())
    assert p.revision == hashlib.sha1((folder / "config.json").read_bytes()).hexdigest()
    assert (p.architecture, p.num_kv_heads, p.hidden_size, p.num_layers) == (cls, kv, 64, 2)
    assert p.context_length == cfg["max_position_embeddings"] == 512
    assert p.family == "hf" and p.weights_source == "local" and p.hf_repo == f"local/{arch}"
    assert p.dtype == ("bfloat16" if arch == "llama" else "float32")
    assert p.tuning.target_modules == targets
    assert p.chat_template and "<|assistant|>" in p.chat_template  # from tokenizer_config.json
    assert str(folder) in p.aliases
    # Sized like any preset.
    req = sizing.place(p, get_registry().instance_types, cloud="aws")
    assert req.ok and req.instance_type == "g5.xlarge"


def test_headers_only_are_read(tiny_models, tmp_path):
    # Truncate the weights after the header: sizing still works, so the data is never read.
    src = tiny_models["phi3"]
    dst = tmp_path / "headers-only"
    shutil.copytree(src, dst)
    f = next(dst.glob("*.safetensors"))
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    f.write_bytes(raw[: 8 + n])
    assert hf.resolve(str(dst)).parameters == hf.resolve(str(src)).parameters


def test_sharded_and_index_only(tiny_models, tmp_path):
    from safetensors.numpy import save_file
    import numpy as np

    d = tmp_path / "sharded"
    d.mkdir()
    shutil.copy(tiny_models["llama"] / "config.json", d / "config.json")
    save_file({"a": np.zeros((10, 64), dtype=np.float16)}, str(d / "model-00001-of-00002.safetensors"))
    save_file({"b": np.zeros((5, 64), dtype=np.float16)}, str(d / "model-00002-of-00002.safetensors"))
    p = hf.resolve(str(d))
    assert (p.parameters, p.weight_bytes, p.dtype) == (15 * 64, 15 * 64 * 2, "float16")
    # No safetensors files, only the index: bytes from its metadata, count from the config's dtype.
    for f in d.glob("*.safetensors"):
        f.unlink()
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 2_000_000}}))
    p = hf.resolve(str(d))
    assert (p.weight_bytes, p.parameters, p.dtype) == (2_000_000, 1_000_000, "bfloat16")


def test_config_only_estimates_parameters(tiny_models, tmp_path):
    d = tmp_path / "config-only"
    d.mkdir()
    shutil.copy(tiny_models["llama"] / "config.json", d / "config.json")
    p = hf.resolve(str(d))
    true_params, _ = header_truth(tiny_models["llama"])
    assert p.parameters == pytest.approx(true_params, rel=0.05)
    assert "estimated from config.json" in p.description


def test_a_latent_attention_config_is_sized_by_its_latent(tmp_path):
    d = tmp_path / "mla"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_size": 256,
        "num_hidden_layers": 3, "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1000,
        "kv_lora_rank": 64, "qk_rope_head_dim": 16, "torch_dtype": "bfloat16"}))
    p = hf.resolve(str(d))
    assert (p.kv_lora_rank, p.qk_rope_head_dim) == (64, 16)
    assert p.kv_bytes_per_token(2) == 3 * (64 + 16) * 2


def test_unusable_inputs_say_why(tmp_path):
    assert hf.try_resolve(str(tmp_path / "missing"))[1].endswith("not a model directory (expected a folder with config.json)")
    (tmp_path / "vision").mkdir()
    (tmp_path / "vision" / "config.json").write_text(json.dumps({"architectures": ["ViTForImageClassification"]}))
    p, why = hf.try_resolve(str(tmp_path / "vision"))
    assert p is None and "ForCausalLM" in why and "ViTForImageClassification" in why
    assert "neither a local model directory nor" in hf.try_resolve("not a model")[1]


def _cache_snapshot(cache: Path, repo: str, commit: str, src: Path) -> None:
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(src, root / "snapshots" / commit)


def test_hub_cache_then_offline(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "a" * 40
    _cache_snapshot(tmp_path, "acme/Tiny-Llama", commit, tiny_models["llama"])
    p = hf.resolve("acme/Tiny-Llama")
    assert (p.name, p.hf_repo, p.revision, p.weights_source) == ("acme-tiny-llama", "acme/Tiny-Llama", commit,
                                                                 "runtime-download")
    p2, why = hf.try_resolve("acme/Other")
    assert p2 is None and "not in the Hugging Face cache" in why and "HF_HUB_OFFLINE" in why


class FakeHub(BaseHTTPRequestHandler):
    """A tiny stand-in for the hub's HTTP API (model info, resolve with Range)."""

    files: dict[str, bytes] = {}
    commit = "b" * 40
    token_required = False

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        if self.token_required and self.headers.get("Authorization") != "Bearer sekret":
            self.send_response(401, "Unauthorized")
            self.end_headers()
            return
        if self.path.startswith("/api/models/acme/tiny/revision/"):
            body = json.dumps({"sha": self.commit, "gated": self.token_required, "cardData": {"license": "mit"},
                               "siblings": [{"rfilename": n} for n in self.files]}).encode()
            status = 200
        else:
            prefix = f"/acme/tiny/resolve/{self.commit}/"
            name = self.path[len(prefix):] if self.path.startswith(prefix) else None
            if name not in self.files:
                self.send_response(404, "Not Found")
                self.end_headers()
                return
            body, status = self.files[name], 200
            rng = self.headers.get("Range")
            if rng:
                a, b = (int(x) for x in rng.removeprefix("bytes=").split("-"))
                body, status = body[a:b + 1], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def fake_hub(tiny_models, monkeypatch, tmp_path):
    folder = tiny_models["falcon"]
    FakeHub.files = {f.name: f.read_bytes() for f in folder.iterdir()
                     if f.name in ("config.json", "model.safetensors", "tokenizer_config.json")}
    FakeHub.token_required = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield folder
    server.shutdown()
    server.server_close()


def test_hub_over_http_reads_headers_with_range_requests(fake_hub):
    p = hf.resolve("acme/tiny")
    params, nbytes = header_truth(fake_hub)
    assert (p.parameters, p.weight_bytes, p.revision, p.license) == (params, nbytes, FakeHub.commit, "mit")
    assert p.architecture == "FalconForCausalLM" and p.num_kv_heads == 1 and "acme/tiny" in p.aliases


def test_hub_gated_model_needs_a_token(fake_hub, monkeypatch):
    FakeHub.token_required = True
    p, why = hf.try_resolve("acme/tiny")
    assert p is None and "401" in why and "HF_TOKEN" in why and "modelAccessSecret" in why
    monkeypatch.setenv("HF_TOKEN", "sekret")
    p = hf.resolve("acme/tiny")
    assert p is not None and p.gated is True
