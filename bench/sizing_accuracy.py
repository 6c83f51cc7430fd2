"""How close is kaito's memory estimate to what a model really uses? (CPU, random weights)

For each shape: build a random-weight model (Llama / Phi-3 / Falcon, float32 or bfloat16, up to
~100M parameters) with kaito_core.testing.tiny_models and save it as safetensors; then, in a
FRESH Python process, import torch + transformers, note the resident set size (RSS), load the
model with ``AutoModelForCausalLM.from_pretrained`` and run ``generate`` on ``batch`` random
prompts filling ``context`` tokens, while a sampler thread records the peak RSS every
millisecond. Measured = peak RSS - RSS before loading. Estimated = ``sizing.estimate(preset,
runtime="transformers", device="cpu", max_model_len=context, batch=batch)`` where the preset is
read by the generic resolver from the directory's config.json and safetensors headers.

What is measured is the whole process: weights, KV cache, activations, and whatever the loader
and glibc keep. ``MALLOC_MMAP_THRESHOLD_`` is fixed in the child so large tensors are mmap'd and
returned on free (glibc's default threshold drifts upward and keeps freed memory in the heap,
which makes RSS depend on allocation history rather than on live memory).

    .venv/bin/python bench/sizing_accuracy.py            # all shapes, context 512, batch 4
    .venv/bin/python bench/sizing_accuracy.py --quick    # two shapes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = [
    # name, arch, hidden, layers, heads, kv_heads, vocab, intermediate, dtype
    ("llama-small-fp32", "llama", 256, 4, 4, 4, 8000, 688, "float32"),
    ("llama-58m-bf16", "llama", 512, 8, 8, 2, 32000, 1376, "bfloat16"),
    ("phi3-30m-fp32", "phi3", 384, 6, 6, 6, 16000, 1024, "float32"),
    ("falcon-mq-bf16", "falcon", 512, 6, 8, 1, 32000, None, "bfloat16"),
    ("llama-100m-fp32", "llama", 768, 8, 12, 4, 32000, 2048, "float32"),
    ("phi3-60m-bf16", "phi3", 512, 8, 8, 8, 32000, 1376, "bfloat16"),
]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(model_dir: str, context: int, batch: int, new_tokens: int, dtype: str) -> dict:
    """Runs in the child process: peak RSS delta of load + generate."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(0)
    # Import the model's code before the baseline: transformers imports modeling modules lazily
    # (~100 MiB of Python and native code), which is the program, not the model's memory.
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(model_dir))]
    base = _rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model.eval()
    after_load = _rss_bytes()
    vocab = model.config.vocab_size
    prompt = torch.randint(10, vocab, (batch, context - new_tokens))
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False)
    stop.set()
    t.join()
    peak[0] = max(peak[0], _rss_bytes())
    return {"peak_delta": peak[0] - base, "load_delta": after_load - base, "tokens": int(out.shape[1]),
            "seconds": time.perf_counter() - t0}


def run_child(model_dir: Path, context: int, batch: int, new_tokens: int, dtype: str) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error")
    cmd = [sys.executable, __file__, "--measure", str(model_dir), "--context", str(context), "--batch", str(batch),
           "--new-tokens", str(new_tokens), "--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement of {model_dir} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--context", type=int, default=512, help="prompt + generated tokens per sequence")
    ap.add_argument("--batch", type=int, default=4, help="sequences generated at once")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="two shapes only")
    ap.add_argument("--workdir", default=None, help="where to keep the built models (default: a temp dir)")
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.context, args.batch, args.new_tokens, args.dtype)))
        return 0

    from kaito_core import sizing
    from kaito_core.builtins import hf
    from kaito_core.testing.tiny_models import build_tiny_model

    work = Path(args.workdir or tempfile.mkdtemp(prefix="kaito-sizing-"))
    shapes = SHAPES[:2] if args.quick else SHAPES
    mib = 2**20
    print(f"context {args.context} tokens x batch {args.batch}, {args.new_tokens} generated; CPU, "
          f"{os.cpu_count()} cores; measured = peak RSS delta of load + generate in a fresh process")
    header = f"{'shape':18} {'params':>8} {'dtype':9} {'weights':>8} {'kv':>6} {'act':>6} {'estimate':>9} " \
             f"{'measured':>9} {'error':>7}"
    print(header + "   (MiB)")
    worst = 0.0
    for name, arch, hidden, layers, heads, kv, vocab, inter, dtype in shapes:
        d = build_tiny_model(work / name, arch, hidden=hidden, layers=layers, heads=heads,
                             kv_heads=None if arch == "falcon" and kv == heads else kv, vocab_size=vocab,
                             context=max(2048, args.context), intermediate=inter, dtype=dtype)
        preset = hf.resolve(str(d))
        assert preset is not None, name
        est = sizing.estimate(preset, runtime="transformers", max_model_len=args.context, batch=args.batch,
                              device="cpu", dtype=dtype)
        got = run_child(d, args.context, args.batch, args.new_tokens, dtype)
        est_b = est.total_gib * 2**30
        err = (est_b - got["peak_delta"]) / got["peak_delta"]
        worst = max(worst, abs(err))
        print(f"{name:18} {preset.parameters / 1e6:7.1f}M {dtype:9} {est.weights_gib * 1024:8.1f} "
              f"{est.kv_cache_gib * 1024:6.1f} {est.activations_gib * 1024:6.1f} {est_b / mib:9.1f} "
              f"{got['peak_delta'] / mib:9.1f} {err:+7.1%}   (load alone {got['load_delta'] / mib:.1f})")
    print(f"worst error: {worst:.1%} (goal: within 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
