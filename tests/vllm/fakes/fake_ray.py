"""A fake ``ray`` command: ``ray start --head``, ``ray start --address=H:P --block``, ``ray stop``.

Like Ray, the head is a daemon (here: a TCP listener on the GCS port) that outlives
``ray start --head``; a worker started with ``--block`` stays in the foreground, is a cluster
member while it runs, and exits 1 when its head goes away, as a raylet does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fakes import state  # noqa: E402 (tests/vllm, where this package lives)


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _register(kind: str, pid: int, **extra) -> None:
    info = {"kind": kind, "node": state.node(), "pid": pid, "gpus": state.gpus(), **extra}
    (state.root() / f"raynode-{kind}-{state.node()}-{pid}.json").write_text(json.dumps(info))


def head_daemon(port: int) -> int:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _register("head", os.getpid(), port=port)
    while True:
        conn, _ = srv.accept()
        conn.close()


def start_head(argv: list[str]) -> int:
    port = int(_option(argv, "--port") or 6379)
    proc = subprocess.Popen([sys.executable, __file__, "_head_daemon", str(port)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            print(f"Ray runtime started. To add another node: ray start --address='127.0.0.1:{port}'")
            return 0
        except OSError:
            if proc.poll() is not None:
                print(f"fake ray: the head could not bind port {port}", file=sys.stderr)
                return 1
            time.sleep(0.05)
    return 1


def start_worker(argv: list[str]) -> int:
    address = _option(argv, "--address") or ""
    host, _, port = address.rpartition(":")
    try:
        socket.gethostbyname(host)  # Ray resolves the address it is given
        socket.create_connection((host, int(port)), timeout=1).close()
    except (OSError, ValueError) as exc:
        print(f"ConnectionError: could not connect to the GCS at {address}: {exc}", file=sys.stderr)
        return 1
    if "--block" not in argv:
        print("fake ray: kaito always starts workers with --block", file=sys.stderr)
        return 2
    _register("worker", os.getpid(), address=address)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:  # a raylet dies when its GCS is gone
        time.sleep(0.3)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            print(f"Raylet lost the GCS at {address}", file=sys.stderr)
            return 1


def stop() -> int:
    """Stop this node's Ray processes (its head daemon and its workers), as `ray stop` does."""
    for path in state.root().glob(f"raynode-*-{state.node()}-*.json"):
        pid = json.loads(path.read_text())["pid"]
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["_head_daemon"]:
        return head_daemon(int(argv[1]))
    state.record("ray", argv)
    if argv[:1] == ["start"] and "--head" in argv:
        return start_head(argv)
    if argv[:1] == ["start"]:
        return start_worker(argv)
    if argv[:1] == ["stop"]:
        return stop()
    print(f"fake ray: unsupported {argv}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
