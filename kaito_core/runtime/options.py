"""Options of the inference server: flags, environment and ``inference_config.yaml``.

Shared by ``kaito serve`` and ``python -m kaito_core.runtime`` (what local mode and the runtime
image run), so both accept exactly the same flags. Standard library + PyYAML only: the CLI
imports this module at every start.

Precedence, highest first: command-line flag, environment variable (``KAITO_*``), the
``inference_config.yaml`` given with ``--config`` (in a pod: the Workspace's ConfigMap), default.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kaito_core.errors import KaitoError

RUNTIMES = ("transformers", "vllm")   # served by kaito's own server; others come from plugins
RUNTIME_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$")
DEFAULT_MAX_BODY = 8 * 2**20
KV_CACHES = ("auto", "slots", "dynamic")
CUDA_GRAPHS = ("auto", "on", "off")  # --cuda-graphs / $KAITO_CUDA_GRAPHS (kaito_core.runtime.graphs)
DEFAULT_ADAPTER_ROOT = "/mnt/adapter"


class OptionsError(KaitoError, ValueError):
    """A flag, environment variable or config entry the server cannot start with."""


@dataclass(frozen=True)
class AdapterSpec:
    """One LoRA adapter to load at start: a directory or an OCI reference."""

    name: str
    source: str
    strength: float = 1.0


@dataclass
class ServeOptions:
    """Everything the server needs to start. Built by :func:`options_from_args` or by hand."""

    model: str
    preset: str | None = None
    runtime: str = "transformers"
    adapters: list[AdapterSpec] = field(default_factory=list)
    adapters_dir: str | None = None
    adapter_strengths: dict[str, float] = field(default_factory=dict)  # for adapters found in adapters_dir
    revision: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    api_key: str | None = None
    max_batch: int = 16
    max_model_len: int | None = None
    dtype: str | None = None
    device: str | None = None
    served_model_name: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_queue: int = 256
    threads: int | None = None
    config_path: str | None = None
    vllm_args: dict[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    timeout_header: float = 30.0        # seconds for a request head to arrive (0: no limit)
    timeout_body: float = 60.0          # seconds between two chunks of a request body
    timeout_send: float = 120.0         # seconds a stream may wait on a client that reads nothing
    timeout_keep_alive: float = 5.0     # idle seconds before a keep-alive connection closes (uvicorn's)
    adapter_fetch_timeout: float = 120.0  # seconds to pull an adapter at run time (admin routes)
    kv_cache: str = "auto"              # slots (preallocated, chunked prefill) | dynamic | auto
    prefill_chunk: int = 512            # prompt tokens prefilled per engine turn (slots)
    disable_any_whitespace: bool = False  # JSON mode: compact JSON for every request (vLLM's setting)
    cuda_graphs: str | None = None      # auto | on | off (None: $KAITO_CUDA_GRAPHS, else auto)

    def __post_init__(self) -> None:
        if not self.model:
            raise OptionsError("--model is required: a local model directory or a Hugging Face id 'org/model'")
        if not isinstance(self.runtime, str) or not RUNTIME_NAME.fullmatch(self.runtime):
            raise OptionsError(f"--runtime is {self.runtime!r}, expected a runtime name such as "
                               f"{' or '.join(RUNTIMES)} (or one a plugin registers)")
        if not 0 < self.port < 65536:
            raise OptionsError(f"--port is {self.port}, expected 1..65535")
        if self.max_batch < 1:
            raise OptionsError(f"--max-batch is {self.max_batch}, expected a positive integer")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise OptionsError(f"--max-model-len is {self.max_model_len}, expected at least 2 tokens")
        if self.threads is not None and self.threads < 1:
            raise OptionsError(f"--threads is {self.threads}, expected a positive integer")
        if self.max_body_bytes < 1024:
            raise OptionsError(f"--max-body-bytes is {self.max_body_bytes}, expected at least 1024")
        if self.kv_cache not in KV_CACHES:
            raise OptionsError(f"--kv-cache is {self.kv_cache!r}, expected one of {list(KV_CACHES)}")
        if self.cuda_graphs is not None and self.cuda_graphs not in CUDA_GRAPHS:
            raise OptionsError(f"--cuda-graphs is {self.cuda_graphs!r}, expected one of {list(CUDA_GRAPHS)} "
                               "(auto: CUDA graphs on GPUs, the eager decode on CPUs)")
        if self.prefill_chunk < 1:
            raise OptionsError(f"--prefill-chunk is {self.prefill_chunk}, expected a positive number of tokens")
        for flag, value in (("--timeout-header", self.timeout_header), ("--timeout-body", self.timeout_body),
                            ("--timeout-send", self.timeout_send),
                            ("--timeout-keep-alive", self.timeout_keep_alive),
                            ("--adapter-fetch-timeout", self.adapter_fetch_timeout)):
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise OptionsError(f"{flag} is {value!r}, expected a number of seconds >= 0")
        seen: set[str] = set()
        for spec in self.adapters:
            if spec.name in seen:
                raise OptionsError(f"adapter {spec.name!r} is given twice; adapter names must be unique")
            seen.add(spec.name)

    @property
    def model_name(self) -> str:
        """The id clients use in ``model``: the served name, else the preset, else the path/id."""
        return self.served_model_name or self.preset or self.model


def parse_adapter(text: str, strengths: Mapping[str, float] | None = None) -> AdapterSpec:
    """``NAME=PATH_OR_OCI_REF`` -> :class:`AdapterSpec` (strength from ``strengths``)."""
    name, sep, source = text.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source:
        raise OptionsError(f"--adapter {text!r}: expected NAME=PATH_OR_OCI_REF, e.g. "
                           "--adapter sql=/mnt/adapter/sql or --adapter sql=myregistry.io/adapters/sql:v1")
    check_adapter_name(name, where=f"--adapter {text!r}")
    strength = (strengths or {}).get(name, 1.0)
    return AdapterSpec(name=name, source=source, strength=check_strength(strength, where=f"adapter {name!r}"))


def check_adapter_name(name: str, where: str = "adapter") -> str:
    if not isinstance(name, str) or not ADAPTER_NAME.fullmatch(name):
        raise OptionsError(f"{where}: name {name!r} is not valid; use 1-63 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return name


def check_strength(value: Any, where: str = "adapter") -> float:
    try:
        strength = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float's range
        raise OptionsError(f"{where}: strength {value!r} is not a number; expected 0.0..1.0") from None
    if not 0.0 <= strength <= 1.0:
        raise OptionsError(f"{where}: strength {strength} is out of range; expected 0.0..1.0 "
                           "(upstream KAITO's adapter strength)")
    return strength


def _parse_strength(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise OptionsError(f"--adapter-strength {text!r}: expected NAME=STRENGTH, e.g. sql=0.5")
    return name.strip(), check_strength(value, where=f"--adapter-strength {text!r}")


def load_inference_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``inference_config.yaml`` (upstream's ConfigMap key), refusing what it cannot use."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise OptionsError(f"--config {str(p)!r}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise OptionsError(f"--config {str(p)!r}: not valid YAML ({exc})") from None
    # Upstream's ConfigMap holds the file under the key inference_config.yaml; accept the
    # whole ConfigMap data too, so `kubectl get cm -o yaml | yq .data` works unchanged.
    if isinstance(data, dict) and isinstance(data.get("inference_config.yaml"), str):
        data = yaml.safe_load(data["inference_config.yaml"]) or {}
    if not isinstance(data, dict):
        raise OptionsError(f"--config {str(p)!r}: expected a mapping at the top level, got {type(data).__name__}")
    for key in ("vllm", "transformers"):
        if key in data and not isinstance(data[key], dict):
            raise OptionsError(f"--config {str(p)!r}: '{key}' must be a mapping of settings, "
                               f"got {type(data[key]).__name__}")
    if "adapters" in data and not isinstance(data["adapters"], list):
        raise OptionsError(f"--config {str(p)!r}: 'adapters' must be a list of {{name, source, strength}}")
    return data


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags (``kaito serve`` and ``python -m kaito_core.runtime``)."""
    env = os.environ.get
    parser.add_argument("--model", default=env("KAITO_MODEL"),
                        help="local model directory (safetensors) or Hugging Face id org/model")
    parser.add_argument("--revision", default=env("KAITO_MODEL_REVISION"),
                        help="hub revision (commit) to download when --model is a Hugging Face id")
    parser.add_argument("--preset", default=env("KAITO_PRESET"),
                        help="preset name: dtype, context, chat template and engine arguments")
    parser.add_argument("--runtime", default=env("KAITO_RUNTIME"), metavar="NAME",
                        help=f"inference backend: {', '.join(RUNTIMES)} or one a plugin registers "
                             "(default: transformers)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH_OR_OCI_REF",
                        help="LoRA adapter to load (repeatable): a directory or an OCI reference")
    parser.add_argument("--adapter-strength", action="append", default=[], metavar="NAME=STRENGTH",
                        help="weight 0.0..1.0 of an adapter's LoRA delta (default 1.0)")
    parser.add_argument("--adapters-dir", default=env("KAITO_ADAPTERS_DIR"),
                        help=f"load every adapter directory under this one (pods: {DEFAULT_ADAPTER_ROOT})")
    parser.add_argument("--host", default=env("KAITO_HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 5000, or env KAITO_PORT)")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY'; visible in ps: prefer --api-key-file or "
                             "env KAITO_API_KEY. /health stays open")
    parser.add_argument("--api-key-file", default=env("KAITO_API_KEY_FILE"), metavar="PATH",
                        help="read the API key from this file (e.g. a mounted Secret)")
    parser.add_argument("--max-batch", type=int, default=None, help="most sequences decoded together (16)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context limit in tokens (default: the preset's or the model's)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the preset's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is best on a busy machine)")
    parser.add_argument("--served-model-name", default=None, help="model id clients use (default: preset or --model)")
    parser.add_argument("--config", default=env("KAITO_INFERENCE_CONFIG"), metavar="inference_config.yaml",
                        help="upstream KAITO's inference_config.yaml: a 'vllm:' map, 'transformers:' settings")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow loading pickle (.bin/.pt) weights; only for weights you trust")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model repo")
    parser.add_argument("--max-body-bytes", type=int, default=None, help=f"request size limit ({DEFAULT_MAX_BODY})")
    parser.add_argument("--timeout-header", type=float, default=None, metavar="SECONDS",
                        help="close a connection whose request head takes longer (30; 0: no limit)")
    parser.add_argument("--timeout-send", type=float, default=None, metavar="SECONDS",
                        help="drop a stream whose client has read nothing for this long (120; 0: no limit)")
    parser.add_argument("--timeout-body", type=float, default=None, metavar="SECONDS",
                        help="answer 408 when a request body stalls longer between two chunks (60)")
    parser.add_argument("--timeout-keep-alive", type=float, default=None, metavar="SECONDS",
                        help="close idle keep-alive connections after this long (5)")
    parser.add_argument("--adapter-fetch-timeout", type=float, default=None, metavar="SECONDS",
                        help="give up pulling an adapter at run time after this long (120)")
    parser.add_argument("--kv-cache", choices=KV_CACHES, default=None,
                        help="slots: preallocated KV-cache slots with chunked prefill; dynamic: transformers' "
                             "DynamicCache, re-padded when requests join; auto (default): slots when the model "
                             "allows")
    parser.add_argument("--prefill-chunk", type=int, default=None, metavar="TOKENS",
                        help="prompt tokens prefilled per engine turn with --kv-cache slots (512)")
    parser.add_argument("--disable-any-whitespace", action="store_true", default=None,
                        help="JSON mode writes compact JSON, no whitespace between tokens, for every request "
                             "(vLLM's structured-outputs disable_any_whitespace; per request: "
                             "structured_outputs.disable_any_whitespace)")
    parser.add_argument("--cuda-graphs", choices=CUDA_GRAPHS, default=None,
                        help="decode with a static-shape step per batch/length bucket, captured as CUDA graphs "
                             "on GPUs: auto (default; $KAITO_CUDA_GRAPHS): on for CUDA, off for CPU; on: the "
                             "static step everywhere (eager on CPU); off: the eager dynamic decode")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


_CONFIG_KEYS = {  # transformers: settings in inference_config.yaml -> ServeOptions field
    "max_batch": int, "max-batch": int, "max_model_len": int, "max-model-len": int, "dtype": str,
    "device": str, "max_body_bytes": int, "threads": int, "allow_pickle": bool, "served_model_name": str,
    "timeout_header": float, "timeout_body": float, "timeout_keep_alive": float, "adapter_fetch_timeout": float,
    "timeout_send": float,
    "kv_cache": str, "prefill_chunk": int, "disable_any_whitespace": bool, "cuda_graphs": str,
}


def read_api_key(args: argparse.Namespace) -> str | None:
    """--api-key-file, else --api-key (which ``ps`` shows: warned), else env KAITO_API_KEY."""
    import logging

    path = getattr(args, "api_key_file", None)
    if path:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise OptionsError(f"--api-key-file {path!r}: cannot read it ({exc.strerror})") from None
        if not key:
            raise OptionsError(f"--api-key-file {path!r} is empty; put the key on its first line")
        return key
    if getattr(args, "api_key", None):
        logging.getLogger("kaito.runtime").warning(
            "--api-key is visible to every user of this machine (ps, /proc/*/cmdline); "
            "use --api-key-file or the KAITO_API_KEY environment variable instead")
        return args.api_key
    return os.environ.get("KAITO_API_KEY") or None


def _flag(value: Any, key: str, config: str | None) -> bool:
    if not isinstance(value, bool):  # YAML's true/false; a string "false" must not read as true
        raise OptionsError(f"--config {config!r}: transformers.{key} is {value!r}, expected true or false")
    return value


def _typed(key: str, value: Any, config: str | None) -> Any:
    """A transformers setting of the config file, of the type its flag takes (``max_batch:
    lots`` used to end in an internal error)."""
    kind = _CONFIG_KEYS[key]
    ok = ((kind is bool and isinstance(value, bool))
          or (kind is int and isinstance(value, int) and not isinstance(value, bool))
          or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
          or (kind is str and isinstance(value, str)))
    if not ok:
        what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]
        raise OptionsError(f"--config {config!r}: transformers.{key} is {value!r}; expected {what}")
    return value


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    """Merge flags, environment and the config file into :class:`ServeOptions`."""
    config: dict[str, Any] = load_inference_config(args.config) if args.config else {}
    tcfg = dict(config.get("transformers") or {})
    unknown = sorted(k for k in tcfg if k not in _CONFIG_KEYS)
    if unknown:
        raise OptionsError(f"--config {args.config!r}: unknown transformers setting(s) {unknown}; "
                           f"known: {sorted({k.replace('-', '_') for k in _CONFIG_KEYS})}")
    # a null setting is an absent one (the flag's default), as in upstream's YAML files
    tcfg = {k.replace("-", "_"): _typed(k, v, args.config) for k, v in tcfg.items() if v is not None}

    strengths = dict(_parse_strength(s) for s in args.adapter_strength)
    adapters = [parse_adapter(a, strengths) for a in args.adapter]
    for i, entry in enumerate(config.get("adapters") or []):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("source"):
            raise OptionsError(f"--config {args.config!r}: adapters[{i}] must have 'name' and 'source'")
        name = check_adapter_name(str(entry["name"]), where=f"adapters[{i}]")
        if any(a.name == name for a in adapters):
            continue  # a flag wins over the file
        adapters.append(AdapterSpec(name=name, source=str(entry["source"]),
                                    strength=check_strength(strengths.get(name, entry.get("strength", 1.0)),
                                                            where=f"adapters[{i}]")))
    unknown_strength = sorted(set(strengths) - {a.name for a in adapters})
    if unknown_strength and not args.adapters_dir:
        raise OptionsError(f"--adapter-strength names {unknown_strength}, which no --adapter defines "
                           "(and there is no --adapters-dir to find it in)")

    def pick(flag: Any, key: str, default: Any) -> Any:
        return flag if flag is not None else tcfg.get(key, default)

    port = args.port
    if port is None:
        env_port = os.environ.get("KAITO_PORT", "5000")
        if not env_port.isdigit():
            raise OptionsError(f"environment KAITO_PORT is {env_port!r}, expected a port number")
        port = int(env_port)

    return ServeOptions(
        model=args.model or "",
        preset=args.preset,
        runtime=args.runtime or "transformers",
        adapters=adapters,
        adapters_dir=args.adapters_dir,
        adapter_strengths={k: v for k, v in strengths.items() if k in unknown_strength},
        revision=args.revision or None,
        host=args.host,
        port=port,
        api_key=read_api_key(args),
        max_batch=int(pick(args.max_batch, "max_batch", 16)),
        max_model_len=pick(args.max_model_len, "max_model_len", None),
        dtype=pick(args.dtype, "dtype", None),
        threads=pick(args.threads, "threads", None),
        device=pick(args.device, "device", None),
        served_model_name=pick(args.served_model_name, "served_model_name", None),
        allow_pickle=bool(args.allow_pickle or tcfg.get("allow_pickle", False)),
        trust_remote_code=bool(args.trust_remote_code),
        max_body_bytes=int(pick(args.max_body_bytes, "max_body_bytes", DEFAULT_MAX_BODY)),
        config_path=args.config,
        vllm_args=dict(config.get("vllm") or {}),
        log_level=args.log_level,
        timeout_header=float(pick(args.timeout_header, "timeout_header", 30.0)),
        timeout_body=float(pick(args.timeout_body, "timeout_body", 60.0)),
        timeout_send=float(pick(args.timeout_send, "timeout_send", 120.0)),
        timeout_keep_alive=float(pick(args.timeout_keep_alive, "timeout_keep_alive", 5.0)),
        adapter_fetch_timeout=float(pick(args.adapter_fetch_timeout, "adapter_fetch_timeout", 120.0)),
        kv_cache=str(pick(args.kv_cache, "kv_cache", "auto")),
        prefill_chunk=int(pick(args.prefill_chunk, "prefill_chunk", 512)),
        disable_any_whitespace=_flag(pick(args.disable_any_whitespace, "disable_any_whitespace", False),
                                     "disable_any_whitespace", args.config),
        cuda_graphs=pick(args.cuda_graphs, "cuda_graphs", None),
    )


def build_parser(prog: str = "kaito serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Serve a model over the OpenAI and KAITO APIs.")
    add_serve_arguments(parser)
    return parser
