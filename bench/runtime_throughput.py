"""Serving throughput and latency: kaito's server vs a sequential baseline vs the static-batch ceiling.

One run, on a ~58M-parameter random Llama (hidden 512, 8 layers, vocab 32000), greedy, every
request generating exactly N tokens (ignore_eos):

  (a) baseline: one request at a time, ``model.generate`` + a text streamer behind a lock
      (how upstream KAITO's older transformers server serves),
  (b) kaito:    ``python -m kaito_core.runtime`` (continuous batching),
  (c) ceiling:  ``model.generate`` on 16 prompts at once, in process (no HTTP, no streaming).

(a) and (b) are separate server processes, driven by 1, 4 and 16 concurrent streaming clients
(OpenAI ``/v1/completions`` with ``stream: true``). Printed: tokens/s, p50/p95 time to first
token, p50 inter-token latency, and the ratios. Goal at 16 clients: kaito >= 0.85 x the ceiling
(about 5.8 x the baseline on 2 cores) and a p50 TTFT no worse than the baseline's.

    .venv/bin/python bench/runtime_throughput.py [--quick] [--tokens 64] [--threads N]
        [--device cpu|cuda] [--model-shape llama-58m|tinyllama-1.1b] [--kv-cache auto|slots|dynamic]
        [--cuda-graphs auto|on|off]

``--model-shape tinyllama-1.1b`` is TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads, 4 KV
heads, intermediate 5632, vocab 32000) with random weights: the shape of the GPU measurements in
issue 14 (bf16 on ``--device cuda``). The clients then also run 64 at once. ``--cuda-graphs`` reaches
the server as ``$KAITO_CUDA_GRAPHS`` (auto: the static decode step captured as CUDA graphs on GPUs,
the eager dynamic step on CPUs; on: the static step everywhere, eager on CPUs; see
kaito_core/runtime/graphs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fastapi import Request  # module level: FastAPI resolves the handler's annotation here

PROMPTS = [
    "The quick brown fox jumps over the lazy dog and then",
    "Kubernetes schedules pods onto nodes that have enough GPU memory, so",
    "A workspace describes a model, the instance type and how many nodes",
    "What is the capital of France? Paris is the capital of France and",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):",
    "LoRA adapters add low-rank matrices to attention projections to",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2048 4096 and then",
    "Hello! How can I help you today? I am a tiny model with random",
    "Quantization stores weights in four bits; nf4 keeps values",
    "Streaming responses arrive as server-sent events, ending with",
    "The operator reconciles the desired state with the observed state",
    "user assistant system tool function message content role and",
    "In the morning the cluster scaled up three GPU nodes because",
    "The benchmark measures tokens per second for sixteen clients that",
    "Continuous batching lets new requests join between decode steps so",
    "Every request streams its tokens back as soon as they are ready,",
]


# -- the sequential baseline server (runs in a subprocess of this script) --------------------


SHAPES = {  # name -> build_tiny_model arguments
    "llama-58m": dict(hidden=512, layers=8, heads=8, vocab_size=32000, context=2048, intermediate=1408),
    "tinyllama-1.1b": dict(hidden=2048, layers=22, heads=32, kv_heads=4, vocab_size=32000, context=2048,
                           intermediate=5632),
}


def torch_dtype(device: str):
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def baseline_app(model_dir: str, device: str = "cpu"):
    """One request at a time: model.generate with a TextIteratorStreamer behind a lock."""
    import torch
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(device)).to(device).eval()
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "Healthy"}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        ids = tok(body["prompt"], return_tensors="pt").to(device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        n = int(body["max_tokens"])

        def run():
            with lock, torch.inference_mode():
                model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=streamer,
                               pad_token_id=tok.pad_token_id)

        threading.Thread(target=run, daemon=True).start()

        async def events():
            loop = asyncio.get_running_loop()
            it = iter(streamer)
            while True:
                piece = await loop.run_in_executor(None, next, it, None)
                if piece is None:
                    break
                if piece:
                    yield f"data: {json.dumps({'choices': [{'text': piece, 'index': 0}]})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def run_baseline_server(model_dir: str, port: int, threads: int | None, device: str = "cpu") -> None:
    import torch
    import uvicorn

    if threads:
        torch.set_num_threads(threads)
    uvicorn.run(baseline_app(model_dir, device), host="127.0.0.1", port=port, log_level="warning")


# -- clients ---------------------------------------------------------------------------------


async def one_request(client, url: str, prompt: str, tokens: int) -> dict:
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", url + "/v1/completions", json={
            "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("choices") and data["choices"][0].get("text"):
                stamps.append(time.perf_counter())
    return {"start": t0, "stamps": stamps, "end": time.perf_counter()}


async def drive(url: str, clients: int, requests: int, tokens: int, tokenizer) -> dict:
    import httpx

    queue = list(range(requests))
    results = []

    async def worker(client):
        while queue:
            i = queue.pop()
            results.append(await one_request(client, url, PROMPTS[i % len(PROMPTS)], tokens))

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    ttft = [r["stamps"][0] - r["start"] for r in results if r["stamps"]]
    gaps = [b - a for r in results for a, b in zip(r["stamps"], r["stamps"][1:])]
    generated = requests * tokens
    return {"tok_s": generated / wall, "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95),
            "itl_p50": pct(gaps, 50), "wall": wall}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# -- ceiling ---------------------------------------------------------------------------------


def ceiling(model_dir: str, tokens: int, threads: int | None, device: str = "cpu", batch: int = 16) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(device)).to(device).eval()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    n = batch
    batch = tok(prompts, return_tensors="pt", padding=True).to(device)
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)  # warm up
        t0 = time.perf_counter()
        out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        wall = time.perf_counter() - t0
    assert out.shape[1] - batch["input_ids"].shape[1] == tokens
    return n * tokens / wall


# -- orchestration ---------------------------------------------------------------------------


def word_tokenizer(model_dir: str, vocab_size: int) -> None:
    """Replace the tiny BPE (512 tokens) with a word-level tokenizer covering all 32000 ids, so
    every generated token decodes to text and streams as a chunk (a random model mostly picks
    ids the small BPE cannot decode)."""
    import re

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    old = AutoTokenizer.from_pretrained(model_dir)
    words = list(dict.fromkeys(["<|endoftext|>", "<|pad|>", "<|end|>", "[UNK]"]
                               + [w for p in PROMPTS for w in re.findall(r"\w+|[^\w\s]", p)]))
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
                                   bos_token="<|endoftext|>", unk_token="[UNK]")
    fast.chat_template = old.chat_template
    fast.save_pretrained(model_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not healthy after {timeout}s")


def measure_server(cmd: list[str], port: int, levels, tokens: int, tokenizer, env: dict | None = None) -> dict:
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})
    try:
        wait_healthy(url, proc)
        asyncio.run(drive(url, 2, 2, 4, tokenizer))  # warm up
        return {c: asyncio.run(drive(url, c, r, tokens, tokenizer)) for c, r in levels}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 tokens and fewer requests (a few minutes less)")
    ap.add_argument("--tokens", type=int, default=None, help="tokens generated per request (64; quick: 32)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in every process (default: torch's)")
    ap.add_argument("--model-dir", default=None, help="where to build the 58M model (default: a temp dir)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 on cuda)")
    ap.add_argument("--model-shape", choices=sorted(SHAPES), default="llama-58m",
                    help="random-weight Llama shape (tinyllama-1.1b: issue 14's GPU model)")
    ap.add_argument("--kv-cache", choices=("auto", "slots", "dynamic"), default="auto",
                    help="kaito's KV cache (slots: preallocated with chunked prefill; dynamic: DynamicCache)")
    ap.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto",
                    help="kaito's decode step: static and captured as CUDA graphs (auto: on GPUs), or eager")
    ap.add_argument("--skip-baseline", action="store_true", help="measure only kaito and the ceiling")
    ap.add_argument("--baseline-server", nargs=2, metavar=("MODEL_DIR", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server[0], int(args.baseline_server[1]), args.threads, args.device)
        return 0

    from kaito_core.testing.tiny_models import build_tiny_model

    tokens = args.tokens or (32 if args.quick else 64)
    levels = [(1, 2), (4, 4), (16, 16)] if args.quick else [(1, 4), (4, 8), (16, 32)]
    if args.model_shape == "tinyllama-1.1b":
        levels += [(64, 64)] if args.quick else [(64, 128)]
    root = Path(args.model_dir or tempfile.mkdtemp(prefix="kaito-bench-"))
    dtype = "bfloat16" if args.device.startswith("cuda") else "float32"  # 2.2 GB on disk for 1.1B, not 4.4
    model_dir = str(build_tiny_model(root / f"{args.model_shape}-{dtype}", "llama", dtype=dtype,
                                     **SHAPES[args.model_shape]))
    word_tokenizer(model_dir, 32000)
    from transformers import AutoModelForCausalLM

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    top = max(c for c, _ in levels)
    print(f"model: random Llama ({args.model_shape}), {params / 1e6:.1f}M parameters; {tokens} tokens per request, "
          f"greedy; device {args.device}; {os.cpu_count()} CPUs; torch threads: {args.threads or 'default'}; "
          f"kv cache: {args.kv_cache}; cuda graphs: {args.cuda_graphs}")
    thread_flag = ["--threads", str(args.threads)] if args.threads else []
    device_flag = ["--device", args.device]

    ceil = ceiling(model_dir, tokens, args.threads, args.device, batch=top)
    print(f"ceiling (generate, {top} prompts at once): {ceil:.1f} tok/s")

    base = {}
    if not args.skip_baseline:
        port = free_port()
        base = measure_server([sys.executable, __file__, "--baseline-server", model_dir, str(port), *thread_flag,
                               *device_flag], port, levels, tokens, None)
    port = free_port()
    dtype_flag = ["--dtype", "bfloat16"] if args.device.startswith("cuda") else []
    ours = measure_server([sys.executable, "-m", "kaito_core.runtime", "--model", model_dir, "--port", str(port),
                           "--max-batch", str(top), "--log-level", "warning", "--kv-cache", args.kv_cache,
                           *thread_flag, *device_flag, *dtype_flag], port, levels, tokens, None,
                          env={"KAITO_CUDA_GRAPHS": args.cuda_graphs})

    print(f"\n{'server':10} {'clients':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8}")
    for name, res in (("baseline", base), ("kaito", ours)):
        for c, r in res.items():
            print(f"{name:10} {c:7d} {r['tok_s']:8.1f} {r['ttft_p50'] * 1000:7.0f}ms {r['ttft_p95'] * 1000:7.0f}ms "
                  f"{r['itl_p50'] * 1000:6.1f}ms")
    k = ours[top]
    if not base:
        print(f"\nat {top} clients: kaito / ceiling = {k['tok_s'] / ceil:.2f}; ITL p50 {k['itl_p50'] * 1000:.1f} ms")
        return 0
    b = base[top]
    ratio_ceiling, ratio_base = k["tok_s"] / ceil, k["tok_s"] / b["tok_s"]
    print(f"\nat {top} clients: kaito / ceiling = {ratio_ceiling:.2f} (goal >= 0.85), kaito / baseline = "
          f"{ratio_base:.2f}x (ceiling / baseline = {ceil / b['tok_s']:.2f}x), TTFT p50 kaito "
          f"{k['ttft_p50'] * 1000:.0f} ms vs baseline {b['ttft_p50'] * 1000:.0f} ms")
    met = ratio_ceiling >= 0.85 and k["ttft_p50"] <= b["ttft_p50"]
    print(f"goal: {'MET' if met else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
