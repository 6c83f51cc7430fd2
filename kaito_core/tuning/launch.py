"""``--nproc-per-node N``: start N copies of the recipe, one per GPU, as torchrun would.

Each worker gets torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), which the Trainer (accelerate) reads to
train distributed data parallel; the recipe also runs unchanged under ``torchrun`` or
``accelerate launch``. We launch the workers ourselves for one reason: a stopped Job. SIGTERM
and SIGINT are passed on to every worker, each saves its part of the checkpoint and exits 75,
and so does this launcher, with no elastic-agent traceback (torchrun answers a SIGTERM with a
``SignalException`` and exit code 1, which hides "interrupted, resumable" from the Job).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

from kaito_core.tuning.train import EXIT_INTERRUPTED

log = logging.getLogger("kaito.tuning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(rank: int, n: int, port: int) -> dict[str, str]:
    return dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n),
                GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def run_workers(n: int, argv: list[str]) -> int:
    """Run ``python -m kaito_core.tuning ARGV`` as ``n`` ranks; returns the launcher's exit code:
    75 when the workers were interrupted, else the first failure's code, else 0."""
    port = _free_port()
    cmd = [sys.executable, "-m", "kaito_core.tuning", *argv]
    log.info("data parallel: %d processes on 127.0.0.1:%d", n, port)
    procs = [subprocess.Popen(cmd, env=worker_env(r, n, port)) for r in range(n)]
    got: list[int] = []

    def forward(signum, frame):  # noqa: ARG001 - signal handler signature
        got.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = _wait_all(procs)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if got and EXIT_INTERRUPTED in codes:
        return EXIT_INTERRUPTED
    failed = [c for c in codes if c != 0]
    return failed[0] if failed else 0


def _wait_all(procs: list[subprocess.Popen]) -> list[int]:
    """Wait for every worker; when one fails, the others cannot finish (they would wait for it at
    the next collective), so they are stopped."""
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return [int(c) for c in codes]
        if any(c not in (None, 0, EXIT_INTERRUPTED) for c in codes):
            time.sleep(5)  # let the others report their own error first
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
