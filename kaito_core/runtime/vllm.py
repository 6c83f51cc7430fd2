"""The vllm runtime: ``vllm serve``, started with the preset's engine arguments.

Engine arguments come from the preset (``ModelPreset.runtimes["vllm"]``), then the Workspace's
``inference_config.yaml`` ``vllm:`` map on top (upstream KAITO's order: the user's file wins),
then explicit flags (``--max-model-len``, ``--dtype``), then the plan's tensor/pipeline parallel
sizes from the pod's environment (:mod:`.parallel`), which a user value may not contradict.
vLLM listens on a private loopback port; kaito's proxy app (:mod:`.vllm_proxy`) listens on
``--port``. A multi-node group starts Ray first (:mod:`.multinode`). This module builds the
command line only (no fastapi import), so the operator can use it too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from typing import Any, Mapping

from kaito_core.errors import KaitoError
from kaito_core.runtime.options import ServeOptions
from kaito_core.runtime.parallel import ALIASES, GroupPlan, apply_plan

log = logging.getLogger("kaito.runtime.vllm")

# The share of GPU memory the plan sized for (upstream: 0.84, 0.82 on A10); the pod's env carries
# it so a user ConfigMap without the key still gets what sizing assumed, not vLLM's 0.9.
ENV_GPU_UTIL = "KAITO_GPU_MEMORY_UTILIZATION"


def _planned_gpu_utilization() -> float | None:
    text = os.environ.get(ENV_GPU_UTIL, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise KaitoError(f"{ENV_GPU_UTIL}={text!r} is not a fraction in (0, 1]; the operator sets it from the "
                         "plan: unset it or give e.g. 0.84")
    return value
# `vllm serve` is vLLM's documented entry point (the console script of the vllm package);
# `python -m vllm.entrypoints.cli.main serve` is the same parser when the script is not on PATH.
VLLM_MODULE_ENTRY = ("-m", "vllm.entrypoints.cli.main")
# Settings that belong to kaito, never passed to vLLM as flags.
_NOT_FLAGS = {"model", "served-model-name", "host", "port", "api-key"}


class VLLMUnavailable(KaitoError, RuntimeError):
    """vllm is not installed in this environment."""


def vllm_available() -> bool:
    return shutil.which("vllm") is not None or importlib.util.find_spec("vllm") is not None


def vllm_executable(python: str | None = None) -> list[str]:
    """``["vllm"]`` when the console script is on PATH, else ``[python, -m, ...cli.main]``."""
    found = shutil.which("vllm")
    if found and python is None:
        return [found]
    return [python or sys.executable, *VLLM_MODULE_ENTRY]


def require_vllm() -> None:
    if not vllm_available():
        raise VLLMUnavailable(
            "--runtime vllm needs vLLM: no 'vllm' command on PATH and no 'vllm' package in this Python "
            f"({sys.executable}); install it on a GPU machine (pip install vllm) or use the runtime-vllm "
            "image, or serve with --runtime transformers (CPU or GPU)")


def _flag(key: str) -> str:
    return "--" + str(key).strip().lstrip("-").replace("_", "-")


def _key(key: str) -> str:
    name = _flag(key)[2:]
    return ALIASES.get(name, name)


def _flag_dtype(opts: ServeOptions) -> str | None:
    """``opts.dtype`` when it came from ``--dtype``, not from the file's ``transformers:`` section
    (ServeOptions merges both; that section configures the transformers runtime, not vLLM)."""
    if not opts.dtype or not opts.config_path:
        return opts.dtype
    from kaito_core.runtime.options import load_inference_config

    section = load_inference_config(opts.config_path).get("transformers") or {}
    return None if section.get("dtype") == opts.dtype else opts.dtype


def engine_args(opts: ServeOptions, preset: Any = None, plan: GroupPlan | None = None,
                compute_capability: float | None = None) -> dict[str, Any]:
    """Preset defaults < the plan's ``gpu-memory-utilization`` (env) < ``inference_config.yaml``'s ``vllm:`` map < explicit flags < the plan's
    TP/PP (``plan``, from the pod's environment; a contradicting user value is refused).
    ``compute_capability``: the GPUs' (lowest), to keep bfloat16 off GPUs that lack it."""
    args: dict[str, Any] = {}
    if preset is not None:
        args.update({_key(k): v for k, v in dict(preset.runtimes.get("vllm", {})).items()})
    planned_util = _planned_gpu_utilization()
    if planned_util is not None:
        args["gpu-memory-utilization"] = planned_util
    user = {_key(k): v for k, v in opts.vllm_args.items()}
    args.update(user)
    if opts.max_model_len is not None:
        args["max-model-len"] = opts.max_model_len
    flag_dtype = _flag_dtype(opts)
    if flag_dtype:
        args["dtype"] = flag_dtype
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
    if args.get("tool-call-parser"):
        # vLLM parses tool calls only with auto tool choice on (upstream KAITO's presets set both;
        # vllm/entrypoints/openai/cli_args.py: --enable-auto-tool-choice requires --tool-call-parser).
        args.setdefault("enable-auto-tool-choice", True)
    if plan is not None:
        args = apply_plan(args, user, plan)
    if compute_capability is not None and compute_capability < 8.0 and str(args.get("dtype")) == "bfloat16":
        if flag_dtype == "bfloat16" or user.get("dtype") == "bfloat16":
            where = "--dtype" if flag_dtype == "bfloat16" else "inference_config.yaml vllm.dtype"
            raise KaitoError(f"{where} is bfloat16, but this node's GPU has compute capability "
                             f"{compute_capability:g}; vLLM needs 8.0 (Ampere) for bfloat16: set float16")
        # upstream KAITO buildVLLMInferenceCommand: float16 when !GPUConfig.SupportsBFloat16()
        log.warning("dtype bfloat16 -> float16: this GPU's compute capability is %g (< 8.0)", compute_capability)
        args["dtype"] = "float16"
    return args


def gpu_compute_capability() -> float | None:
    """The lowest compute capability of this pod's GPUs (``nvidia-smi``), None when unknown.
    Reconcile picks the dtype from the instance type; this covers nodes it cannot know (BYO)."""
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
        values = [float(line) for line in out.split() if line.strip()]
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return min(values) if values else None


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
                 adapter_paths: Mapping[str, str] | None = None, python: str | None = None,
                 plan: GroupPlan | None = None, compute_capability: float | None = None) -> list[str]:
    """The ``vllm serve`` command line for ``opts`` (the preset's engine arguments, the plan's TP/PP).
    The model is vLLM's positional ``model_tag`` (``vllm serve --help`` hides ``--model``)."""
    args = engine_args(opts, preset, plan, compute_capability)
    adapters = dict(adapter_paths if adapter_paths is not None else {a.name: a.source for a in opts.adapters})
    cmd = [*vllm_executable(python), "serve", opts.model, "--served-model-name", opts.model_name,
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


def check_strengths(opts: ServeOptions, specs: Any = ()) -> None:
    """vLLM has no per-adapter strength (upstream KAITO's PresetParam.Validate: "vLLM does not
    support adapter strength"): an adapter below 1 is refused rather than served at full strength.
    Checked before anything starts, also for strengths of adapters not pulled yet."""
    weak = sorted({s.name for s in [*opts.adapters, *specs] if s.strength != 1.0}
                  | {name for name, value in opts.adapter_strengths.items() if value != 1.0})
    if weak:
        raise KaitoError(f"adapters {weak} have a strength below 1.0, which vLLM cannot apply; set "
                         "inference.adapters[].strength to 1.0 (or remove it), or serve with the transformers "
                         "runtime for weighted adapters")


def prepare_adapters(opts: ServeOptions) -> dict[str, str]:
    """Directories for the adapters (OCI references pulled first); strengths below 1 refused."""
    from kaito_core.runtime.adapters import resolve_source, scan_adapters_dir

    specs = list(opts.adapters)
    if opts.adapters_dir:
        specs += [s for s in scan_adapters_dir(opts.adapters_dir, opts.adapter_strengths)
                  if s.name not in {a.name for a in specs}]
    check_strengths(opts, specs)
    cache = tempfile.mkdtemp(prefix="kaito-vllm-adapters-")
    from pathlib import Path

    return {s.name: str(resolve_source(s.source, Path(cache), s.name)) for s in specs}


def run_vllm(opts: ServeOptions) -> int:
    """Serve with vLLM behind kaito's proxy (same routes as the transformers runtime). In a
    multi-node group (``KAITO_NODE_COUNT`` > 1) pod 0 also starts the Ray head and the other pods
    only join it as Ray workers (:mod:`.multinode`)."""
    plan = GroupPlan.from_env()
    if plan.multinode and not plan.leader:
        from kaito_core.runtime.multinode import run_worker

        return run_worker(opts, plan)
    require_vllm()
    from kaito_core.runtime.vllm_proxy import serve_proxy

    return serve_proxy(opts, plan)
