"""Training tokens/s with and without packing, same model, same data, same run.

The workload is the one that made tuning slow: chat rows of about a dozen tokens (a one- or
two-word question, a one-word answer; the measured mean is printed) and LoRA in bfloat16, as
upstream's template (``ModelConfig.torch_dtype: bfloat16``). Without packing every optimizer
step sees one short row (upstream's templates use ``per_device_train_batch_size: 1``), so the
per-step overhead dominates. With ``TrainingArguments.packing: true`` each row holds as many
whole samples as fit in ``max_length`` tokens, each attending only to itself. Every side goes
through the real recipe (:func:`kaito_core.tuning.run`) on the same random-weight Llama, in this
process, one after the other; the number is the recipe's own ``tokens_per_s`` (non-padding
training tokens over training time). Goal on CPU: packing >= 5x.

``--dtype`` defaults to bfloat16 where this CPU multiplies bf16 natively (oneDNN reports bf16
support: AVX512-BF16 or AMX) and to float32 elsewhere; ``--dtype float32`` measures fp32 (the
local default when a config names no dtype). ``--long-rows`` uses rows of about 27 tokens.

A third side, ``packed, 4D mask``, trains the same packed rows with the block-diagonal mask
that models outside :data:`kaito_core.tuning.attention.MODEL_TYPES` get (the path every model
took before per-sample attention): what that attention costs on a long row. Besides wall-clock
tokens/s, each side reports tokens per CPU second of this process after its first step; with one
torch thread that is the work per token, which other processes on a shared machine do not blur
(wall-clock numbers there swing by 2x between rounds).

Each side trains for about ``--seconds`` (step counts calibrated by a short probe of each
side), in ``--rounds`` alternating plain/packed pairs; the medians and their ratio are printed.

    .venv/bin/python bench/tuning_throughput.py            # ~1.5 minutes
    .venv/bin/python bench/tuning_throughput.py --quick    # ~20 s
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Words the tiny test tokenizer (kaito_core.testing.tiny_models) holds whole after a space.
WORDS = ("the model can add many nodes with that state type normal weights content need over you and "
         "capital France").split()


def rows(n: int, seed: int = 0, *, long: bool = False) -> list[dict]:
    """Chat rows: short ones (1-2 question words, 1 answer word; ~13 tokens with the template),
    or ``long`` ones (3 + 3 words; ~27 tokens)."""
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        q = " ".join(rnd.choice(WORDS) for _ in range(3 if long else rnd.randint(1, 2)))
        a = " ".join(rnd.choice(WORDS) for _ in range(3 if long else 1))
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return out


def native_bf16() -> bool:
    """Does this CPU multiply bfloat16 in hardware (oneDNN's own check)?"""
    import torch

    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check and check())
    except Exception:  # noqa: BLE001 - an older torch without the op: assume not
        return False


SIDES = (("no packing", False, False), ("packing", True, False), ("packed, 4D mask", True, True))


def one(model: Path, data: Path, out: Path, *, side: tuple, steps: int, max_length: int, dtype: str) -> dict:
    import time

    from kaito_core.tuning import attention, run

    name, packing, mask = side
    cfg = {"training_config": {
        "TrainingArguments": {"per_device_train_batch_size": 1, "max_steps": steps, "learning_rate": 1e-4,
                              "save_strategy": "no", "packing": packing, "logging_steps": 1},
        "DatasetConfig": {"train_test_split": 1, "max_seq_length": max_length},
        "ModelConfig": {"torch_dtype": dtype},
    }}
    marks: list[tuple[float, int]] = []  # (CPU seconds of this process, tokens seen) at each step's end
    known = attention.MODEL_TYPES
    attention.MODEL_TYPES = () if mask else known  # no model qualifies: the collator builds the 4D mask
    try:
        s = run(model_dir=str(model), data=[str(data)], config=cfg, output=str(out), progress="none",
                on_step=lambda info: marks.append((time.process_time(), info.tokens_seen))).summary
    finally:
        attention.MODEL_TYPES = known
    (c0, t0), (c1, t1) = marks[0], marks[-1]
    return {"side": name, "steps": s["steps"], "tokens": s["tokens_seen"], "seconds": s["train_seconds"],
            "tokens_per_s": s["tokens_per_s"],
            "tokens_per_cpu_s": (t1 - t0) / (c1 - c0) if c1 > c0 else float("nan"),
            "cpu_ms_per_step": 1000 * (c1 - c0) / max(1, len(marks) - 1)}


def calibrated(model: Path, data: Path, root: Path, *, side: tuple, seconds: float, max_length: int,
               dtype: str) -> int:
    """Steps for about ``seconds`` of training, from a short run of the same side (also the warm-up)."""
    packing = side[1]
    probe = one(model, data, root / f"probe-{side[0]}", side=side, steps=4 if packing else 20, max_length=max_length,
                dtype=dtype)
    per_step = probe["seconds"] / probe["steps"]
    return max(8 if packing else 50, min(2000, round(seconds / per_step)))


def matmul_floor(model: Path, rows: int, dtype: str) -> tuple[float, float]:
    """(µs per token, GFLOP/s): the CPU time of the matrix products every trained token needs
    (forward, and the backward pass's input gradients through the frozen weights: ~4 FLOP per
    weight), at this process's rate in ``dtype`` on a packed-row-sized product."""
    import time

    import torch

    c = json.loads((model / "config.json").read_text())
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = h * c.get("num_key_value_heads", c["num_attention_heads"]) // c["num_attention_heads"]
    weights = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + h * vocab
    a, w = torch.randn(rows, h, dtype=getattr(torch, dtype)), torch.randn(inter, h, dtype=getattr(torch, dtype))
    for _ in range(3):
        torch.nn.functional.linear(a, w)
    n, t0 = 20, time.process_time()
    for _ in range(n):
        torch.nn.functional.linear(a, w)
    rate = 2 * rows * h * inter * n / (time.process_time() - t0)
    return 4 * weights / rate * 1e6, rate / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller model, one short round")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine, 2 threads spin against the "
                         "other processes and both sides' numbers swing by 2-5x)")
    ap.add_argument("--seconds", type=float, default=None, help="training seconds per side and round")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the three sides in turn (medians reported)")
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                    help="ModelConfig.torch_dtype (default: bfloat16 where the CPU has bf16 units, else float32)")
    ap.add_argument("--long-rows", action="store_true", help="rows of ~27 tokens instead of ~13")
    args = ap.parse_args()
    import statistics

    import torch

    from kaito_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(args.threads)
    dtype = args.dtype or ("bfloat16" if native_bf16() else "float32")
    hidden, layers, max_len = (128, 2, 512) if args.quick else (256, 4, 1024)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", "llama", hidden=hidden, layers=layers, heads=4, vocab_size=512,
                                 context=max_len)
        data = root / "short.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows(2000, long=args.long_rows)))
        steps = {side: calibrated(model, data, root, side=side, seconds=seconds, max_length=max_len, dtype=dtype)
                 for side in SIDES}
        floor_us, gflops = matmul_floor(model, max_len, dtype)
        results: dict[tuple, list[dict]] = {side: [] for side in SIDES}
        for i in range(rounds):  # the sides in turn, so a load change on the machine hits all of them
            for j, side in enumerate(SIDES):
                results[side].append(one(model, data, root / f"r{i}-{j}", side=side, steps=steps[side],
                                         max_length=max_len, dtype=dtype))
    plain = results[SIDES[0]]
    print(f"model: random Llama hidden {hidden}, {layers} layers, vocab 512, {dtype}; rows of "
          f"~{plain[0]['tokens'] / plain[0]['steps']:.0f} tokens; batch size 1; packing max_length {max_len}; "
          f"torch threads {args.threads}; {rounds} round(s) of ~{seconds:.0f}s per side")
    for i in range(rounds):
        for side in SIDES:
            r = results[side][i]
            print(f"  {r['side']:16} steps {r['steps']:4}  tokens {r['tokens']:7}  {r['seconds']:6.2f}s  "
                  f"{r['tokens_per_s']:8.1f} tokens/s  {r['tokens_per_cpu_s']:8.1f} tokens/CPU-s  "
                  f"{r['cpu_ms_per_step']:7.1f} CPU-ms/step")
    med = {side: {k: statistics.median(r[k] for r in results[side]) for k in ("tokens_per_s", "tokens_per_cpu_s")}
           for side in SIDES}
    for key, what in (("tokens_per_s", "tokens/s (wall clock, the recipe's own number)"),
                      ("tokens_per_cpu_s", "tokens per CPU second (after the first step)")):
        line = ", ".join(f"{side[0]} {med[side][key]:.1f}" for side in SIDES)
        print(f"{what}: {line}")
        print(f"  packing / no packing: {med[SIDES[1]][key] / med[SIDES[0]][key]:.1f}x (goal >= 5x); "
              f"per-sample attention / 4D mask: {med[SIDES[1]][key] / med[SIDES[2]][key]:.2f}x")
    plain_us = 1e6 / med[SIDES[0]]["tokens_per_cpu_s"]
    packed_us = 1e6 / med[SIDES[1]]["tokens_per_cpu_s"]
    print(f"per token: no packing {plain_us:.0f} µs of CPU, packing {packed_us:.0f} µs, of which the matrix "
          f"products alone need ~{floor_us:.0f} µs ({gflops:.0f} GFLOP/s {dtype} here): packing cannot beat "
          f"{plain_us / floor_us:.1f}x on this model and CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
