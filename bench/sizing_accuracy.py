"""How close is kaito's memory estimate to what a model really uses? (CPU, random weights)

For each shape: build a random-weight model (Llama / Phi-3 / Falcon, float32 or bfloat16, up to
~100M parameters) with kaito_core.testing.tiny_models and save it as safetensors; then, in a
FRESH Python process, import torch + transformers and the model's code, note the resident set
size (RSS), load the model with ``AutoModelForCausalLM.from_pretrained``, read every weight once,
and run ``generate`` on ``batch`` random prompts filling ``context`` tokens, while a sampler
thread records the peak RSS every half millisecond. Measured = peak RSS - RSS before loading.
Estimated = ``sizing.estimate(preset, runtime="transformers", device="cpu",
max_model_len=context, batch=batch)`` where the preset is read by the generic resolver from the
directory's config.json and safetensors headers.

Why every weight is read once: transformers memory-maps the safetensors files, and a page of
the map only counts in RSS once it is touched. An embedding table is only touched at the rows
of the prompt's tokens, so without this step RSS would miss most of a large vocabulary's
embedding (on a GPU every weight is copied to the device). Reading each tensor once makes RSS
hold all the weights, the same way for every shape.

What is measured is the whole process: weights, KV cache, activations, and whatever the loader,
the compute libraries and glibc keep. ``MALLOC_MMAP_THRESHOLD_`` is fixed in the child so large
tensors are mmap'd and returned on free (glibc's default threshold drifts upward and keeps freed
memory in the heap, which makes RSS depend on allocation history rather than on live memory).

The fixed CPU overhead in the estimate (``sizing.CPU_RUNTIME_OVERHEAD_GIB``) is a constant, not
fitted here: it was measured on a 2-layer, hidden-64 calibration model that is not one of the
shapes. The bench re-measures that calibration model (float32 and bfloat16) on every run and
prints its overhead next to the constant, so drift shows up without feeding back into the
estimate.

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
# The calibration model of the CPU overhead constant: its own weights, KV cache and activations
# are a few MiB (estimated and subtracted), so what remains is the process's fixed cost.
CALIBRATION = [
    ("calibration-fp32", "llama", 64, 2, 4, 4, 512, None, "float32"),
    ("calibration-bf16", "llama", 64, 2, 4, 4, 512, None, "bfloat16"),
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
            time.sleep(0.0005)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    model.eval()
    with torch.no_grad():  # page every memory-mapped weight in (see the module docstring)
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()
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

    def build_and_measure(spec: tuple) -> tuple:
        name, arch, hidden, layers, heads, kv, vocab, inter, dtype = spec
        d = build_tiny_model(work / name, arch, hidden=hidden, layers=layers, heads=heads,
                             kv_heads=None if arch == "falcon" and kv == heads else kv, vocab_size=vocab,
                             context=max(2048, args.context), intermediate=inter, dtype=dtype)
        preset = hf.resolve(str(d))
        assert preset is not None, name
        est = sizing.estimate(preset, runtime="transformers", max_model_len=args.context, batch=args.batch,
                              device="cpu", dtype=dtype)
        return preset, est, run_child(d, args.context, args.batch, args.new_tokens, dtype)

    print(f"context {args.context} tokens x batch {args.batch}, {args.new_tokens} generated; CPU, "
          f"{os.cpu_count()} cores; measured = peak RSS delta of load (every weight read once) + generate "
          f"in a fresh process")
    const = sizing.CPU_RUNTIME_OVERHEAD_GIB * 1024
    for spec in CALIBRATION:
        _, est, got = build_and_measure(spec)
        overhead = got["peak_delta"] / mib - est.sharded_gib * 1024
        print(f"{spec[0]}: overhead measured {overhead:.1f} MiB (model state {est.sharded_gib * 1024:.1f} MiB "
              f"subtracted); sizing.CPU_RUNTIME_OVERHEAD_GIB = {const:.1f} MiB (not refitted)")
    header = f"{'shape':18} {'params':>8} {'dtype':9} {'weights':>8} {'kv':>6} {'act':>6} {'overhead':>8} " \
             f"{'estimate':>9} {'measured':>9} {'error':>7}"
    print(header + "   (MiB)")
    worst = 0.0
    for spec in shapes:
        preset, est, got = build_and_measure(spec)
        est_b = est.total_gib * 2**30
        err = (est_b - got["peak_delta"]) / got["peak_delta"]
        worst = max(worst, abs(err))
        print(f"{spec[0]:18} {preset.parameters / 1e6:7.1f}M {spec[-1]:9} {est.weights_gib * 1024:8.1f} "
              f"{est.kv_cache_gib * 1024:6.1f} {est.activations_gib * 1024:6.1f} {const:8.1f} {est_b / mib:9.1f} "
              f"{got['peak_delta'] / mib:9.1f} {err:+7.1%}   (load alone {got['load_delta'] / mib:.1f})")
    print(f"worst error: {worst:.1%} (goal: within 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
