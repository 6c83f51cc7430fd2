"""The vllm runtime: vLLM's own OpenAI server, started with the preset's engine arguments.

Engine arguments come from the preset (``ModelPreset.runtimes["vllm"]``), then the Workspace's
``inference_config.yaml`` ``vllm:`` map on top (upstream KAITO's order: the user's file wins),
then explicit flags (``--max-model-len``, ``--dtype``). vLLM listens on a private loopback port;
kaito's proxy app (:mod:`.vllm_proxy`) listens on ``--port``. This module builds the command
line only (no fastapi import), so the operator can use it too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import sys
import tempfile
from typing import Any, Mapping

from kaito_core.errors import KaitoError
from kaito_core.runtime.options import ServeOptions

log = logging.getLogger("kaito.runtime.vllm")
VLLM_ENTRY = ("-m", "vllm.entrypoints.openai.api_server")
# Settings that belong to kaito, never passed to vLLM as flags.
_NOT_FLAGS = {"model", "served-model-name", "host", "port", "api-key"}


class VLLMUnavailable(KaitoError, RuntimeError):
    """vllm is not installed in this environment."""


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_available():
        raise VLLMUnavailable(
            "--runtime vllm needs the 'vllm' package, which is not installed in this Python "
            f"({sys.executable}); install it on a GPU machine (pip install vllm) or use the runtime-vllm "
            "image, or serve with --runtime transformers (CPU or GPU)")


def _flag(key: str) -> str:
    return "--" + str(key).strip().lstrip("-").replace("_", "-")


def engine_args(opts: ServeOptions, preset: Any = None) -> dict[str, Any]:
    """Preset defaults, then ``inference_config.yaml``'s ``vllm:`` map, then explicit flags."""
    args: dict[str, Any] = {}
    if preset is not None:
        args.update({_flag(k)[2:]: v for k, v in dict(preset.runtimes.get("vllm", {})).items()})
    args.update({_flag(k)[2:]: v for k, v in opts.vllm_args.items()})
    if opts.max_model_len is not None:
        args["max-model-len"] = opts.max_model_len
    if opts.dtype:
        args["dtype"] = opts.dtype
    if opts.trust_remote_code:
        args["trust-remote-code"] = True
    if opts.revision:
        args["revision"] = opts.revision
    if opts.max_batch and "max-num-seqs" not in args and opts.max_batch != 16:
        args["max-num-seqs"] = opts.max_batch
    clash = sorted(k for k in args if k in _NOT_FLAGS)
    if clash:
        raise KaitoError(f"inference_config.yaml vllm: {clash} are set by kaito itself (from --model, --port, "
                         "--served-model-name, --api-key); remove them from the file")
    return args


def to_flags(args: Mapping[str, Any]) -> list[str]:
    """``{"max-model-len": 8192, "enforce-eager": True, "x": [1, 2]}`` -> vLLM command-line flags."""
    out: list[str] = []
    for key in sorted(args):
        value = args[key]
        flag = _flag(key)
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out.append(flag)
            out.extend(str(v) for v in value)
        elif isinstance(value, Mapping):
            out.extend([flag, json.dumps(dict(value), separators=(",", ":"))])
        else:
            out.extend([flag, str(value)])
    return out


def vllm_command(opts: ServeOptions, preset: Any = None, *, port: int | None = None, host: str = "127.0.0.1",
                 adapter_paths: Mapping[str, str] | None = None, python: str | None = None) -> list[str]:
    """The vLLM OpenAI server command line for ``opts`` (and the preset's engine arguments)."""
    args = engine_args(opts, preset)
    adapters = dict(adapter_paths if adapter_paths is not None else {a.name: a.source for a in opts.adapters})
    cmd = [python or sys.executable, *VLLM_ENTRY, "--model", opts.model, "--served-model-name", opts.model_name,
           "--host", host, "--port", str(port if port is not None else opts.port)]
    if adapters:
        args.setdefault("enable-lora", True)
    cmd += to_flags(args)
    if adapters:
        cmd.append("--lora-modules")
        cmd.extend(f"{name}={path}" for name, path in sorted(adapters.items()))
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_adapters(opts: ServeOptions) -> dict[str, str]:
    """Directories for the adapters (OCI references pulled first). vLLM has no per-adapter
    strength: an adapter with strength below 1 is refused rather than served at full strength."""
    from kaito_core.runtime.adapters import resolve_source, scan_adapters_dir

    specs = list(opts.adapters)
    if opts.adapters_dir:
        specs += [s for s in scan_adapters_dir(opts.adapters_dir, opts.adapter_strengths)
                  if s.name not in {a.name for a in specs}]
    weak = [s.name for s in specs if s.strength != 1.0]
    if weak:
        raise KaitoError(f"adapters {weak} have a strength below 1.0, which vLLM cannot apply; use "
                         "--runtime transformers for weighted adapters, or strength 1.0")
    cache = tempfile.mkdtemp(prefix="kaito-vllm-adapters-")
    from pathlib import Path

    return {s.name: str(resolve_source(s.source, Path(cache), s.name)) for s in specs}


def run_vllm(opts: ServeOptions) -> int:
    """Serve with vLLM behind kaito's proxy (same routes as the transformers runtime)."""
    require_vllm()
    import uvicorn

    from kaito_core.runtime.vllm_proxy import create_proxy_app

    uvicorn.run(create_proxy_app(opts), host=opts.host, port=opts.port, log_level=opts.log_level)
    return 0
