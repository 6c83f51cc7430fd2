"""Training tokens/s with and without packing, same model, same data, same run.

Short chat rows (about a dozen tokens each, like dolly-style one-liners) are what made tuning
slow: without packing every optimizer step sees one short row (upstream's templates use
``per_device_train_batch_size: 1``), so per-step overhead dominates. With
``TrainingArguments.packing: true`` each row holds as many whole samples as fit in
``max_length`` tokens, each attending only to itself. Both runs go through the real recipe
(:func:`kaito_core.tuning.run`) on the same random-weight Llama, in this process, one after
the other; the number is the recipe's own ``tokens_per_s`` (non-padding training tokens over
training time). Goal on CPU: packing >= 5x.

    .venv/bin/python bench/tuning_throughput.py            # ~1-2 minutes on 2 busy cores
    .venv/bin/python bench/tuning_throughput.py --quick
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
    from kaito_core.tuning import run

    cfg = {"training_config": {
        "TrainingArguments": {"per_device_train_batch_size": 1, "max_steps": steps, "learning_rate": 1e-4,
                              "save_strategy": "no", "packing": packing, "logging_steps": 1},
        "DatasetConfig": {"train_test_split": 1, "max_seq_length": max_length},
    }}
    s = run(model_dir=str(model), data=[str(data)], config=cfg, output=str(out), progress="none").summary
    return {"packing": packing, "steps": s["steps"], "tokens": s["tokens_seen"], "seconds": s["train_seconds"],
            "tokens_per_s": s["tokens_per_s"], "rows": (s["packing"] or {}).get("rows")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller model and fewer steps")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from kaito_core.testing.tiny_models import build_tiny_model

    torch.set_num_threads(args.threads)
    hidden, layers, steps_plain, steps_packed, max_len = (
        (128, 2, 30, 6, 512) if args.quick else (256, 4, 60, 8, 1024))
    with tempfile.TemporaryDirectory(prefix="kaito-bench-") as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", "llama", hidden=hidden, layers=layers, heads=4, vocab_size=512,
                                 context=max_len)
        data = root / "short.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows(4000)))
        # warm-up (first-call costs: kernels, allocator) so neither side pays them
        one(model, data, root / "warm", packing=False, steps=3, max_length=max_len)
        plain = one(model, data, root / "plain", packing=False, steps=steps_plain, max_length=max_len)
        packed = one(model, data, root / "packed", packing=True, steps=steps_packed, max_length=max_len)
    print(f"model: random Llama hidden {hidden}, {layers} layers; rows of ~{plain['tokens'] / plain['steps']:.0f} "
          f"tokens; batch size 1; packing max_length {max_len}; torch threads {args.threads}")
    for r in (plain, packed):
        print(f"  packing={str(r['packing']):5}  steps {r['steps']:3}  tokens {r['tokens']:6}  "
              f"{r['seconds']:7.2f}s  {r['tokens_per_s']:9.1f} tokens/s")
    ratio = packed["tokens_per_s"] / plain["tokens_per_s"]
    print(f"packing / no packing: {ratio:.1f}x tokens/s (goal >= 5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
