"""Training tokens/s with and without packing, same model, same data, same run.

Short chat rows (about a dozen tokens each, like dolly-style one-liners) are what made tuning
slow: without packing every optimizer step sees one short row (upstream's templates use
``per_device_train_batch_size: 1``), so per-step overhead dominates. With
``TrainingArguments.packing: true`` each row holds as many whole samples as fit in
``max_length`` tokens, each attending only to itself. Both runs go through the real recipe
(:func:`kaito_core.tuning.run`) on the same random-weight Llama, in this process, one after
the other; the number is the recipe's own ``tokens_per_s`` (non-padding training tokens over
training time). Goal on CPU: packing >= 5x.

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

WORDS = ("red green blue cat dog bird tree river stone cloud fast slow small big one two three four "
         "north south east west apple bread water fire").split()


def rows(n: int, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        q = " ".join(rnd.choice(WORDS) for _ in range(3))
        a = " ".join(rnd.choice(WORDS) for _ in range(3))
        out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    return out


def one(model: Path, data: Path, out: Path, *, packing: bool, steps: int, max_length: int) -> dict:
    import time

    from kaito_core.tuning import run

    cfg = {"training_config": {
        "TrainingArguments": {"per_device_train_batch_size": 1, "max_steps": steps, "learning_rate": 1e-4,
                              "save_strategy": "no", "packing": packing, "logging_steps": 1},
        "DatasetConfig": {"train_test_split": 1, "max_seq_length": max_length},
    }}
    marks: list[tuple[float, int]] = []  # (CPU seconds of this process, tokens seen) at each step's end
    s = run(model_dir=str(model), data=[str(data)], config=cfg, output=str(out), progress="none",
            on_step=lambda info: marks.append((time.process_time(), info.tokens_seen))).summary
    (c0, t0), (c1, t1) = marks[0], marks[-1]
    return {"packing": packing, "steps": s["steps"], "tokens": s["tokens_seen"], "seconds": s["train_seconds"],
            "tokens_per_s": s["tokens_per_s"], "rows": (s["packing"] or {}).get("rows"),
            # after the first step, per CPU second: what a busy shared machine does not blur
            "tokens_per_cpu_s": (t1 - t0) / (c1 - c0) if c1 > c0 else float("nan")}


def calibrated(model: Path, data: Path, root: Path, *, packing: bool, seconds: float, max_length: int) -> int:
    """Steps for about ``seconds`` of training, from a short run of the same side."""
    probe = one(model, data, root / f"probe-{packing}", packing=packing, steps=4 if packing else 20,
                max_length=max_length)
    per_step = probe["seconds"] / probe["steps"]
    return max(8 if packing else 50, min(2000, round(seconds / per_step)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller model, one short round")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine, 2 threads spin against the "
                         "other processes and both sides' numbers swing by 2-5x)")
    ap.add_argument("--seconds", type=float, default=None, help="training seconds per side and round")
    ap.add_argument("--rounds", type=int, default=None, help="plain/packed pairs, alternating (median reported)")
    args = ap.parse_args()
    import statistics

    import torch

    from kaito_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(args.threads)
    hidden, layers, max_len = (128, 2, 512) if args.quick else (256, 4, 1024)
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    rounds = args.rounds or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", "llama", hidden=hidden, layers=layers, heads=4, vocab_size=512,
                                 context=max_len)
        data = root / "short.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows(2000)))
        # The probes double as warm-up (first-call costs: kernels, allocator), so neither side pays them.
        steps = {p: calibrated(model, data, root, packing=p, seconds=seconds, max_length=max_len)
                 for p in (False, True)}
        results: dict[bool, list[dict]] = {False: [], True: []}
        for i in range(rounds):  # alternate the sides, so a load change on the machine hits both
            for p in (False, True):
                results[p].append(one(model, data, root / f"r{i}-{p}", packing=p, steps=steps[p],
                                      max_length=max_len))
    plain, packed = results[False], results[True]
    print(f"model: random Llama hidden {hidden}, {layers} layers, vocab 512; rows of "
          f"~{plain[0]['tokens'] / plain[0]['steps']:.0f} tokens; batch size 1; packing max_length {max_len}; "
          f"torch threads {args.threads}; {rounds} round(s) of ~{seconds:.0f}s per side")
    for r in [x for pair in zip(plain, packed) for x in pair]:
        print(f"  packing={str(r['packing']):5}  steps {r['steps']:4}  tokens {r['tokens']:7}  "
              f"{r['seconds']:7.2f}s  {r['tokens_per_s']:9.1f} tokens/s  {r['tokens_per_cpu_s']:9.1f} tokens/CPU-s")
    for key, what in (("tokens_per_s", "tokens/s (wall clock, the recipe's own number)"),
                      ("tokens_per_cpu_s", "tokens per CPU second (steps 2..n)")):
        a = statistics.median(r[key] for r in plain)
        b = statistics.median(r[key] for r in packed)
        pairs = ", ".join(f"{q[key] / p[key]:.1f}x" for p, q in zip(plain, packed))
        print(f"{what}: no packing {a:.1f}, packing {b:.1f}: {b / a:.1f}x (goal >= 5x; per round: {pairs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
