"""Wall time of `kaito presets list` vs `python -c "import pluggy"` (the floor for any plugin CLI).

Median of several runs of each, measured in the same run; prints both, the difference in ms
and the ratio. Goal: at most 300 ms over the baseline.

    .venv/bin/python bench/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    kaito = shutil.which("kaito", path=str(Path(sys.executable).parent)) or "kaito"
    baseline_cmd = [sys.executable, "-c", "import pluggy"]
    kaito_cmd = [kaito, "presets", "list"]
    timed(baseline_cmd, 2), timed(kaito_cmd, 2)  # warm the file cache
    base = timed(baseline_cmd, args.runs)
    ours = timed(kaito_cmd, args.runs)
    b, k = statistics.median(base), statistics.median(ours)
    print(f"{'command':38} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    label = 'python -c "import pluggy" (baseline)'
    print(f"{label:38} {b:10.1f} {min(base):8.1f} {max(base):8.1f}")
    print(f"{'kaito presets list':38} {k:10.1f} {min(ours):8.1f} {max(ours):8.1f}")
    over = k - b
    print(f"difference: {over:+.1f} ms   ratio: {k / b:.2f}x   goal: <= 300 ms over -> "
          f"{'MET' if over <= 300 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
