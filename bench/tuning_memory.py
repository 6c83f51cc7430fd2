"""LoRA vs QLoRA on the same weights-dominated model: peak RSS and step time, as ratios.

Each method runs in a fresh Python process (so one cannot inherit the other's peak) through
the real recipe (:func:`kaito_core.tuning.run`): load, train a few steps, write the adapter.
The model is a random-weight Llama whose parameters are almost all in the decoder's linear
layers (small vocabulary), i.e. the layers QLoRA stores in 4 bits. Peak RSS is reported as a
whole and above the process's RSS right after its imports (torch + transformers + peft), the
part that the method controls. Goal: QLoRA peak <= 0.5x LoRA's.

    .venv/bin/python bench/tuning_memory.py            # ~400M parameters (1.6 GB fp32)
    .venv/bin/python bench/tuning_memory.py --quick    # ~100M parameters
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # hidden, layers, heads, intermediate
    "full": (2048, 8, 16, 5632),
    "quick": (1024, 8, 16, 2816),
}


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mib() -> float:
    return _status("VmRSS")


def peak_mib() -> float:
    # VmHWM is this process's own high-water mark. getrusage's ru_maxrss is not: Linux keeps
    # it across fork+exec, so a child inherits the parent's RSS (the parent built the model).
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(method: str, model: str, data: str, steps: int) -> None:
    import torch  # noqa: F401 - imported before the baseline is taken
    import peft  # noqa: F401
    import transformers  # noqa: F401

    from kaito_core.tuning import run

    after_imports = rss_mib()
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(info):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    cfg = {"training_config": {"TrainingArguments": {"max_steps": steps, "per_device_train_batch_size": 1,
                                                     "learning_rate": 1e-4},
                               "DatasetConfig": {"train_test_split": 1, "max_seq_length": 64}}}
    with tempfile.TemporaryDirectory() as out:
        result = run(model_dir=model, method=method, data=[data], config=cfg, output=out, progress="none",
                     on_step=on_step)
    s = result.summary
    print(json.dumps({"method": method, "peak_mib": peak_mib(), "after_imports_mib": after_imports,
                      "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
                      "steps": s["steps"], "final_loss": s["final_loss"], "grad_norm_max": s["grad_norm_max"],
                      "quantized": f"{s['quantized_linear_layers']}/{s['linear_layers']}",
                      "total_params": s["total_params"]}))


def build(root: Path, size: str) -> tuple[Path, Path]:
    from kaito_core.testing.tiny_models import build_tiny_model

    hidden, layers, heads, inter = SIZES[size]
    model = build_tiny_model(root / f"llama-{size}", "llama", hidden=hidden, layers=layers, heads=heads,
                             intermediate=inter, vocab_size=512, context=256)
    data = root / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                          {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}
            for a in range(6) for b in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a ~100M-parameter model instead of ~400M")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--dir", help="where to build the model (default: a temp dir, removed after)")
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "MODEL", "DATA"), help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=2, metavar=("SIZE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build(Path(args.build[1]), args.build[0])
        return 0
    if args.child:
        child(*args.child, steps=args.steps)
        return 0
    size = "quick" if args.quick else "full"
    with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        t0 = time.perf_counter()
        # Build in a child too, so this process stays small while the runs are measured.
        subprocess.run([sys.executable, __file__, "--build", size, str(root)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        model, data = build(root, size)
        weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        print(f"model: random Llama {SIZES[size]} (hidden, layers, heads, intermediate), "
              f"{weights / 2**20:.0f} MiB of fp32 safetensors, built in {time.perf_counter() - t0:.0f}s")
        results = {}
        for method in ("lora", "qlora"):
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", method,
                                  str(model), str(data)], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    lo, q = results["lora"], results["qlora"]
    print(f"parameters: {lo['total_params'] / 1e6:.0f}M; QLoRA 4-bit linear layers: {q['quantized']}")
    print(f"{'method':8} {'peak RSS MiB':>13} {'after imports':>14} {'peak - imports':>15} {'step s':>8} "
          f"{'final loss':>11} {'grad norm max':>14}")
    for r in (lo, q):
        print(f"{r['method']:8} {r['peak_mib']:13.0f} {r['after_imports_mib']:14.0f} "
              f"{r['peak_mib'] - r['after_imports_mib']:15.0f} {r['step_s']:8.3f} {r['final_loss']:11.4f} "
              f"{r['grad_norm_max']:14.4g}")
    ratio = q["peak_mib"] / lo["peak_mib"]
    above = (q["peak_mib"] - q["after_imports_mib"]) / (lo["peak_mib"] - lo["after_imports_mib"])
    print(f"QLoRA/LoRA peak RSS: {ratio:.2f}x (above imports: {above:.2f}x)   "
          f"step time: {q['step_s'] / lo['step_s']:.2f}x   goal: peak <= 0.5x -> "
          f"{'MET' if ratio <= 0.5 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
