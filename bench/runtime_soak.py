"""Soak: 1,000 mixed requests at 32 concurrency against ``python -m kaito_core.runtime``.

The mix: chat and completions, streaming and not, KAITO ``/chat``, two LoRA adapters, random
sampling parameters and lengths; 10% bad requests (malformed JSON, wrong types, out-of-range
values, unknown models, oversized bodies) and 5% clients that disconnect mid-stream. Checks:
no 5xx at all, every bad request answered 4xx, every good one 200, the server still healthy
with no request left in its batch, and its RSS growth from after warm-up to the end < 5%.

    .venv/bin/python bench/runtime_soak.py [--quick] [--requests N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

BAD = [
    b'{"messages": [',
    b'\xff\xfe\x00',
    b'[1, 2]',
    json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": -3}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 99}).encode(),
    json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}]}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "stop": list(range(40))}).encode(),
]
WORDS = "the quick brown fox jumps over lazy dog kubernetes pods nodes gpu memory model adapter".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_adapters(base: Path, root: Path) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    for seed, name in ((1, "sql"), (2, "poet")):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False, task_type="CAUSAL_LM"))
        peft_model.save_pretrained(root / name)
        out[name] = root / name
    return out


def good_request(rng: random.Random) -> tuple[str, dict, bool]:
    prompt = " ".join(rng.choices(WORDS, k=rng.randint(2, 40)))
    model = rng.choice(["base", "base", "sql", "poet"])
    common = {"max_tokens": rng.randint(1, 48), "temperature": rng.choice([0, 0.7, 1.0]),
              "top_p": rng.choice([1.0, 0.9]), "seed": rng.randint(0, 1000)}
    if model != "base":
        common["model"] = model
    kind = rng.random()
    if kind < 0.45:
        stream = rng.random() < 0.5
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}], "stream": stream,
                                        **common}, stream
    if kind < 0.9:
        stream = rng.random() < 0.5
        return "/v1/completions", {"prompt": prompt, "stream": stream, "stop": ["zz"], **common}, stream
    return "/chat", {"prompt": prompt, "generate_kwargs": {"max_new_tokens": common["max_tokens"]}}, False


async def run(url: str, total: int, concurrency: int, seed: int, stats: Counter, failures: list) -> None:
    import httpx

    rng = random.Random(seed)
    plan = []
    for i in range(total):
        r = rng.random()
        plan.append("bad" if r < 0.10 else "disconnect" if r < 0.15 else "good")
    queue = list(enumerate(plan))

    async def one(client: httpx.AsyncClient, i: int, kind: str) -> None:
        if kind == "bad":
            body = rng.choice(BAD)
            resp = await client.post(url + "/v1/chat/completions", content=body,
                                     headers={"content-type": "application/json"})
            stats[f"bad {resp.status_code // 100}xx"] += 1
            if not 400 <= resp.status_code < 500:
                failures.append((i, "bad request answered", resp.status_code, resp.text[:200]))
            return
        if kind == "disconnect":
            body = {"prompt": "keep talking", "max_tokens": 400, "ignore_eos": True, "stream": True}
            async with client.stream("POST", url + "/v1/completions", json=body) as resp:
                n = 0
                async for line in resp.aiter_lines():
                    n += line.startswith("data: ")
                    if n >= 3:
                        break  # leave mid-stream; the connection closes with the context
            stats["disconnected"] += 1
            return
        path, body, stream = good_request(rng)
        if stream:
            async with client.stream("POST", url + path, json=body) as resp:
                lines = [line async for line in resp.aiter_lines() if line]
            ok = resp.status_code == 200 and lines and lines[-1] == "data: [DONE]" and not any(
                '"error"' in line for line in lines)
        else:
            resp = await client.post(url + path, json=body)
            ok = resp.status_code == 200
        stats[f"good {resp.status_code // 100}xx"] += 1
        if not ok:
            failures.append((i, path, resp.status_code, body))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i, kind = queue.pop(0)
            try:
                await one(client, i, kind)
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                failures.append((i, kind, type(exc).__name__, str(exc)[:200]))

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency + 8)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))


def count_5xx(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith('kaito_requests_total{code="5'))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="250 requests")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (1 suits a busy box)")
    args = ap.parse_args()
    total = args.requests or (250 if args.quick else 1000)

    import httpx
    import psutil

    from kaito_core.testing.tiny_models import build_tiny_model

    root = Path(tempfile.mkdtemp(prefix="kaito-soak-"))
    model = build_tiny_model(root / "llama", "llama")
    adapters = make_adapters(model, root / "adapter")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "kaito_core.runtime", "--model", str(model), "--served-model-name", "base",
           "--adapters-dir", str(root / "adapter"), "--port", str(port), "--max-batch", "16",
           "--threads", str(args.threads), "--max-body-bytes", str(256 * 1024), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stats: Counter = Counter()
    failures: list = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("server did not become healthy")
            time.sleep(0.2)
        ps = psutil.Process(proc.pid)
        warm = max(50, total // 10)
        asyncio.run(run(url, warm, args.concurrency, 1, Counter(), []))  # warm-up: allocator, caches
        rss0 = ps.memory_info().rss
        five0 = count_5xx(httpx.get(url + "/metrics").text)  # /health said 503 while loading: not ours
        t0 = time.perf_counter()
        asyncio.run(run(url, total, args.concurrency, 2, stats, failures))
        wall = time.perf_counter() - t0
        time.sleep(1.0)
        rss1 = ps.memory_info().rss
        health = httpx.get(url + "/health").status_code
        metrics = httpx.get(url + "/metrics").text
        running = [line for line in metrics.splitlines() if line.startswith("kaito_running_requests ")]
        five = count_5xx(metrics) - five0
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    growth = (rss1 - rss0) / rss0 * 100
    print(f"{total} requests at concurrency {args.concurrency} in {wall:.1f}s ({total / wall:.1f} req/s)")
    for key in sorted(stats):
        print(f"  {key:16} {stats[key]}")
    print(f"  5xx during the soak (server metrics): {five:.0f}")
    print(f"  failures: {len(failures)}")
    for f in failures[:10]:
        print("   ", f)
    print(f"server RSS after warm-up {rss0 / 2**20:.1f} MiB -> end {rss1 / 2**20:.1f} MiB ({growth:+.2f}%)")
    print(f"health after: {health}; {running[0] if running else 'kaito_running_requests ?'}")
    ok = not failures and five == 0 and growth < 5 and health == 200
    print(f"goal (0 5xx, every answer as expected, RSS growth < 5%): {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
