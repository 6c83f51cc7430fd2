"""A fake ``vllm`` command: ``vllm serve MODEL [options]``.

It refuses what the pinned vLLM refuses before loading a model (an option not in
``data/vllm_serve_args.txt``; ``--enable-auto-tool-choice`` without ``--tool-call-parser``;
bfloat16 below compute capability 8.0), checks the distributed invariants vLLM needs
(TP x PP GPUs: on this pod, or with ``--distributed-executor-backend ray`` in the Ray cluster,
queried through the same ``ray`` package the real one uses), then serves ``/health`` and
``/v1/models`` on ``--host``/``--port`` until SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fakes import state  # noqa: E402

ARGS_FILE = Path(__file__).resolve().parents[1] / "data" / "vllm_serve_args.txt"


def known_options() -> set[str]:
    out: set[str] = set()
    for line in ARGS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            out.update(line.split())
    return out


def parse(argv: list[str]) -> tuple[str, dict[str, list[str]]]:
    """``serve MODEL --a 1 --b --c x y`` -> (MODEL, {"--a": ["1"], "--b": [], "--c": ["x", "y"]})."""
    if argv[:1] != ["serve"] or len(argv) < 2 or argv[1].startswith("-"):
        raise SystemExit(f"usage: vllm serve MODEL_TAG [options] (got {argv})")
    opts: dict[str, list[str]] = {}
    current = None
    for a in argv[2:]:
        if a.startswith("-") and not _number(a):
            current = a.split("=", 1)[0]
            opts[current] = [a.split("=", 1)[1]] if "=" in a else []
        elif current is None:
            raise SystemExit(f"vllm: error: unrecognized arguments: {a}")
        else:
            opts[current].append(a)
    return argv[1], opts


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def one(opts: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = opts.get(name)
    return values[0] if values else default


# argparse choices of the options kaito sets (vllm/config: ModelDType, DistributedExecutorBackend).
CHOICES = {"--dtype": {"auto", "half", "float16", "bfloat16", "float", "float32"},
           "--distributed-executor-backend": {"ray", "mp", "uni", "external_launcher"}}


def check(opts: dict[str, list[str]]) -> str | None:
    unknown = sorted(set(opts) - known_options())
    if unknown:
        return f"vllm: error: unrecognized arguments: {' '.join(unknown)}"
    for name, allowed in CHOICES.items():
        if name in opts and one(opts, name) not in allowed:
            return f"vllm: error: argument {name}: invalid choice: {one(opts, name)!r}"
    if "--enable-auto-tool-choice" in opts and "--tool-call-parser" not in opts:
        return "TypeError: Error: --enable-auto-tool-choice requires --tool-call-parser"
    cc = float(os.environ.get("FAKE_COMPUTE_CAPABILITY", "9.0"))
    if one(opts, "--dtype") == "bfloat16" and cc < 8.0:
        return (f"ValueError: Bfloat16 is only supported on GPUs with compute capability of at least 8.0. "
                f"Your GPU has compute capability {cc}.")
    tp = int(one(opts, "--tensor-parallel-size", "1"))
    pp = int(one(opts, "--pipeline-parallel-size", "1"))
    dp = int(one(opts, "--data-parallel-size", "1"))
    if one(opts, "--distributed-executor-backend") == "ray":
        import ray  # the fake package on PYTHONPATH, like vLLM's ray executor

        ray.init(address="auto")
        have = int(ray.cluster_resources().get("GPU", 0))
        where = f"the Ray cluster ({len(ray.nodes())} nodes)"
    else:
        have, where = state.gpus(), "this node"
    if tp * pp * dp > have:
        return (f"ValueError: The number of required GPUs ({tp * pp * dp}) exceeds the total number of "
                f"available GPUs in {where} ({have})")
    return None


def serve(model: str, opts: dict[str, list[str]]) -> int:
    names = opts.get("--served-model-name") or [model]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                body = b""
            elif self.path == "/v1/models":
                body = json.dumps({"object": "list", "data": [{"id": n, "object": "model"} for n in names]}).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            return

    server = ThreadingHTTPServer((one(opts, "--host", "127.0.0.1"), int(one(opts, "--port", "8000"))), Handler)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _stop(*_args) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    model, opts = parse(argv)
    problem = check(opts)
    state.record("vllm", argv, model=model, problem=problem)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return serve(model, opts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
