"""Generic preset resolver: any Hugging Face model id (``org/model``) or local model directory.

A Workspace may name a model no plugin knows. kaito then builds a :class:`ModelPreset` from
the model's ``config.json`` (shape, context, dtype) and its safetensors *headers* (exact
parameter count and weight bytes): the first 8 bytes of a ``.safetensors`` file give the length
of a JSON header listing every tensor's dtype, shape and byte range, so sizing never reads or
loads the weights themselves.

Where the files come from, in order:

1. a local directory holding ``config.json`` (weights source ``local``);
2. the Hugging Face cache (``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``)
   with a snapshot of ``org/model``;
3. the hub itself (``$HF_ENDPOINT``, default https://huggingface.co), unless
   ``HF_HUB_OFFLINE=1``: the model's API page for the pinned commit, ``config.json``, and two
   HTTP range requests per safetensors file for its header. ``HF_TOKEN`` is sent for gated
   models.

Only the standard library is used (the operator image has no huggingface_hub).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from kaito_core.errors import KaitoError
from kaito_core.images import runtime_image
from kaito_core.types import HF_REPO, ModelPreset, TuningRecipe

__all__ = ["resolve", "try_resolve", "load", "HFResolveError", "preset_from_files", "read_safetensors_header"]

FAMILY = "hf"
DEFAULT_CONTEXT = 2048
HTTP_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 100 * 2**20  # safetensors caps its header at 100 MB

# safetensors dtype codes -> (kaito dtype, bytes per element)
ST_DTYPES: dict[str, tuple[str, float]] = {
    "F64": ("float32", 8), "F32": ("float32", 4), "BF16": ("bfloat16", 2), "F16": ("float16", 2),
    "F8_E4M3": ("float8", 1), "F8_E5M2": ("float8", 1), "I64": ("int8", 8), "I32": ("int8", 4),
    "I16": ("int8", 2), "I8": ("int8", 1), "U8": ("int8", 1), "BOOL": ("int8", 1),
}
CONFIG_DTYPES = {"float32": "float32", "float": "float32", "bfloat16": "bfloat16", "float16": "float16",
                 "half": "float16"}

# Default LoRA targets per architecture prefix (the attention projections each one names).
LORA_TARGETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Phi3", ("qkv_proj", "o_proj")),
    ("Falcon", ("query_key_value",)),
    ("GPTNeoX", ("query_key_value",)),
    ("Bloom", ("query_key_value",)),
    ("GPT2", ("c_attn",)),
    ("GPTBigCode", ("c_attn",)),
    ("", ("q_proj", "v_proj")),  # Llama, Mistral, Qwen2/3, Gemma, Phi, OPT, ...
)


class HFResolveError(KaitoError, LookupError):
    """Why a model id or directory could not become a preset (names the source and the fix)."""


@dataclass(frozen=True)
class WeightsInfo:
    parameters: int
    weight_bytes: int
    dtype: str | None
    source: str


# -- safetensors headers --------------------------------------------------------------------


def parse_safetensors_header(raw: bytes, where: str) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise HFResolveError(f"{where}: the safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise HFResolveError(f"{where}: the safetensors header is not a JSON object")
    return header


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a local safetensors file (reads only the header's bytes)."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise HFResolveError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise HFResolveError(f"{path}: header length {n} is not plausible; is this a safetensors file?")
        return parse_safetensors_header(fh.read(n), str(path))


def summarize_headers(headers: list[dict[str, Any]], source: str) -> WeightsInfo:
    params = 0
    total = 0
    by_dtype: dict[str, float] = {}
    for header in headers:
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            numel = 1
            for d in info.get("shape", []):
                numel *= int(d)
            start, end = info.get("data_offsets", (0, 0))
            params += numel
            total += int(end) - int(start)
            kdtype = ST_DTYPES.get(str(info.get("dtype")), ("float32", 4))[0]
            by_dtype[kdtype] = by_dtype.get(kdtype, 0) + int(end) - int(start)
    dtype = max(by_dtype, key=lambda k: by_dtype[k]) if by_dtype else None
    return WeightsInfo(parameters=params, weight_bytes=total, dtype=dtype, source=source)


# -- config.json -> preset ------------------------------------------------------------------


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


def _estimate_parameters(cfg: Mapping[str, Any], hidden: int, layers: int, heads: int, kv: int,
                         head_dim: int, vocab: int) -> int:
    inter = _first(cfg, "intermediate_size", "ffn_hidden_size", "n_inner") or 4 * hidden
    attn = hidden * head_dim * (heads + 2 * kv) + heads * head_dim * hidden
    mlp = (3 if cfg.get("hidden_act", "silu") in ("silu", "swiglu", "gelu_pytorch_tanh") else 2) * hidden * inter
    tied = bool(cfg.get("tie_word_embeddings", False))
    return layers * (attn + mlp) + vocab * hidden * (1 if tied else 2)


def preset_name_for(text: str) -> str:
    """A valid preset name for a model id or directory name ('Qwen/Qwen3-8B' -> 'qwen-qwen3-8b')."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-.")
    return name or "model"


def preset_from_files(config: Mapping[str, Any], weights: WeightsInfo | None, *, name: str, hf_repo: str,
                      revision: str, weights_source: str, alias: str | None = None,
                      chat_template: str | None = None, license: str = "unknown", gated: bool = False,
                      where: str = "") -> ModelPreset:
    """Build a preset from a parsed ``config.json`` and the weights' header summary."""
    cfg: Mapping[str, Any] = config.get("text_config") or config  # multimodal configs nest the LM
    archs = config.get("architectures") or cfg.get("architectures") or []
    arch = archs[0] if archs else None
    if not arch or not str(arch).endswith("ForCausalLM"):
        raise HFResolveError(f"{where}config.json: architectures is {archs!r}; kaito serves text-generation "
                             "models whose class ends in 'ForCausalLM'")
    hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
    layers = _first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(cfg, "num_attention_heads", "n_head")
    missing = [k for k, v in (("hidden_size", hidden), ("num_hidden_layers", layers),
                              ("num_attention_heads", heads)) if not v]
    if missing:
        raise HFResolveError(f"{where}config.json: missing {', '.join(missing)}; cannot size the model")
    if cfg.get("model_type") == "falcon" and not cfg.get("new_decoder_architecture"):
        # Old Falcon decoder: multi-query (Falcon-7B, 1 KV head) or full multi-head attention.
        kv = 1 if cfg.get("multi_query", True) else heads
    else:
        kv = _first(cfg, "num_key_value_heads", "num_kv_heads", "n_head_kv") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    vocab = int(cfg.get("vocab_size") or 32000)
    context = int(_first(cfg, "max_position_embeddings", "n_positions", "seq_length", "max_seq_len")
                  or DEFAULT_CONTEXT)
    cfg_dtype = CONFIG_DTYPES.get(str(_first(config, "dtype", "torch_dtype") or ""), None)
    if weights is not None and weights.parameters > 0:
        params, nbytes, dtype = weights.parameters, weights.weight_bytes, weights.dtype or cfg_dtype or "float32"
        sized = f"sized from {weights.source}"
    else:
        dtype = cfg_dtype or "float32"
        params = _estimate_parameters(cfg, int(hidden), int(layers), int(heads), int(kv), int(head_dim), vocab)
        nbytes = int(params * {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 2))
        sized = "parameters estimated from config.json (no safetensors headers found)"
    serve_dtype = dtype if dtype in ("bfloat16", "float16", "float32") else "auto"
    runtimes = {"vllm": {"dtype": serve_dtype, "max-model-len": min(context, DEFAULT_CONTEXT)},
                "transformers": {"dtype": serve_dtype}}
    targets = next(t for prefix, t in LORA_TARGETS if str(arch).startswith(prefix))
    # Multi-head latent attention (DeepSeek-V2/V3 configs): the KV cache holds one latent per layer.
    mla = {k: cfg[k] for k in ("kv_lora_rank", "qk_rope_head_dim") if isinstance(cfg.get(k), int) and cfg[k] > 0}
    return ModelPreset(
        name=name, family=FAMILY, hf_repo=hf_repo, revision=revision, architecture=str(arch),
        parameters=int(params), weight_bytes=int(nbytes), dtype=dtype, context_length=context,
        num_layers=int(layers), hidden_size=int(hidden), num_attention_heads=int(heads), num_kv_heads=int(kv),
        vocab_size=vocab, head_dim=int(head_dim), license=license, gated=gated,
        intermediate_size=_intermediate(cfg), **(mla if len(mla) == 2 else {}),
        chat_template=chat_template if chat_template and "{" in chat_template else None,
        runtimes=runtimes, default_runtime="vllm", image=runtime_image("vllm"), weights_source=weights_source,
        tuning=TuningRecipe(methods=("lora", "qlora"), target_modules=targets), aliases=(alias,) if alias else (),
        supports_multinode=True, description=f"{hf_repo} (generic: {sized})")


def _chat_template_in(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    tok = folder / "tokenizer_config.json"
    if tok.is_file():
        try:
            value = json.loads(tok.read_text(encoding="utf-8")).get("chat_template")
        except ValueError:
            return None
        return value if isinstance(value, str) else None
    return None


def _read_config(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    try:
        cfg = json.loads(raw)
    except ValueError as exc:
        raise HFResolveError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise HFResolveError(f"{path}: expected a JSON object")
    return cfg, raw


def _weights_in(folder: Path) -> WeightsInfo | None:
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return summarize_headers([read_safetensors_header(f) for f in files],
                                 f"{len(files)} safetensors header(s)")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if total:
            return WeightsInfo(parameters=0, weight_bytes=int(total), dtype=None, source="safetensors index")
    return None


def from_directory(path: str | Path, *, hf_repo: str | None = None, revision: str | None = None,
                   name: str | None = None, weights_source: str = "local") -> ModelPreset:
    """A preset for a local model directory (``config.json`` + safetensors files)."""
    folder = Path(path).expanduser()
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise HFResolveError(f"{folder}: no config.json; expected a model directory saved with save_pretrained()")
    cfg, raw = _read_config(cfg_path)
    weights = _weights_in(folder)
    if weights is not None and weights.parameters == 0:
        weights = _with_params(cfg, weights)
    base = preset_name_for(folder.resolve().name)
    repo = hf_repo or f"local/{base}"
    if not HF_REPO.fullmatch(repo):
        repo = "local/model"
    return preset_from_files(
        cfg, weights, name=name or f"local-{base}"[:63].rstrip("-."), hf_repo=repo,
        # A directory has no commit: the config's sha1 pins what was sized.
        revision=revision or hashlib.sha1(raw).hexdigest(), weights_source=weights_source,
        alias=str(path), chat_template=_chat_template_in(folder), where=f"{folder}/")


def _with_params(cfg: Mapping[str, Any], w: WeightsInfo) -> WeightsInfo:
    # An index gives bytes but not counts: derive the count from the config's dtype.
    dtype = CONFIG_DTYPES.get(str(_first(cfg, "dtype", "torch_dtype") or ""), "bfloat16")
    per = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    return WeightsInfo(parameters=w.weight_bytes // per, weight_bytes=w.weight_bytes, dtype=dtype, source=w.source)


# -- the Hugging Face cache and hub ---------------------------------------------------------


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def from_cache(repo: str, revision: str = "main") -> ModelPreset | None:
    """A preset from the local Hugging Face cache, or None when the model is not cached."""
    root = hub_cache_dir() / f"models--{repo.replace('/', '--')}"
    commit = revision
    ref = root / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    snap = root / "snapshots" / commit
    if not re.fullmatch(r"[0-9a-f]{40}", commit) or not (snap / "config.json").is_file():
        return None
    return from_directory(snap, hf_repo=repo, revision=commit, name=preset_name_for(repo),
                          weights_source="runtime-download")


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _http(url: str, *, range_: tuple[int, int] | None = None) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "kaito"})
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if range_ is not None:
        req.add_header("Range", f"bytes={range_[0]}-{range_[1]}")
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310 - fixed scheme
        return resp.read()


def from_hub(repo: str, revision: str = "main", *, fetch: Callable[..., bytes] | None = None) -> ModelPreset:
    """A preset read from the hub: model info, config.json, safetensors headers (range requests)."""
    get = fetch or _http
    base = _endpoint()
    try:
        info = json.loads(get(f"{base}/api/models/{repo}/revision/{revision}"))
        commit = info.get("sha") or ""
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise HFResolveError(f"{repo}: the hub did not return a commit for revision {revision!r}")
        cfg = json.loads(get(f"{base}/{repo}/resolve/{commit}/config.json"))
        files = [s.get("rfilename", "") for s in info.get("siblings", [])]
        headers = []
        for fname in sorted(f for f in files if f.endswith(".safetensors")):
            url = f"{base}/{repo}/resolve/{commit}/{fname}"
            (n,) = struct.unpack("<Q", get(url, range_=(0, 7))[:8])
            if n > MAX_HEADER_BYTES:
                raise HFResolveError(f"{repo}/{fname}: header length {n} is not plausible")
            headers.append(parse_safetensors_header(get(url, range_=(8, 8 + n - 1)), f"{repo}/{fname}"))
        template = None
        if "tokenizer_config.json" in files:
            tok = json.loads(get(f"{base}/{repo}/resolve/{commit}/tokenizer_config.json"))
            template = tok.get("chat_template") if isinstance(tok.get("chat_template"), str) else None
    except urllib.error.HTTPError as exc:
        hint = (" (gated or private: set HF_TOKEN, and in a Workspace presetOptions.modelAccessSecret)"
                if exc.code in (401, 403) else "")
        raise HFResolveError(f"{repo}: the hub answered {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise HFResolveError(f"{repo}: the hub at {base} is not reachable ({exc}); pre-download the model "
                             "into the Hugging Face cache or name a local directory") from None
    card = info.get("cardData") or {}
    weights = summarize_headers(headers, f"{len(headers)} safetensors header(s) on the hub") if headers else None
    return preset_from_files(cfg, weights, name=preset_name_for(repo), hf_repo=repo, revision=commit,
                             weights_source="runtime-download", alias=repo, chat_template=template,
                             license=str(card.get("license") or "unknown"), gated=bool(info.get("gated")),
                             where=f"{repo}: ")


# -- public entry points --------------------------------------------------------------------


def load(name_or_path: str) -> ModelPreset:
    """The preset for a local model directory or ``org/model`` id; :class:`HFResolveError` if none."""
    text = name_or_path.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return from_directory(path)
    if text.startswith((".", "/", "~")) or path.exists():
        raise HFResolveError(f"{text!r}: not a model directory (expected a folder with config.json)")
    repo, _, revision = text.partition("@")
    if not HF_REPO.fullmatch(repo):
        raise HFResolveError(f"{text!r}: neither a local model directory nor a Hugging Face id 'org/model'")
    cached = from_cache(repo, revision or "main")
    if cached is not None:
        return cached
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise HFResolveError(f"{repo}: not in the Hugging Face cache at {hub_cache_dir()} and HF_HUB_OFFLINE is "
                             "set; download it first or name a local directory")
    return from_hub(repo, revision or "main")


def _intermediate(cfg: dict) -> int | None:
    value = _first(cfg, "intermediate_size", "ffn_hidden_size", "n_inner")
    return int(value) if isinstance(value, int) and value > 0 else None


def try_resolve(name_or_path: str) -> tuple[ModelPreset | None, str]:
    """``(preset, "")`` or ``(None, reason)``: the reason says what was tried and how to fix it."""
    try:
        return load(name_or_path), ""
    except HFResolveError as exc:
        return None, str(exc)
    except (KaitoError, ValueError, OSError) as exc:  # a config that makes an invalid preset
        return None, f"{name_or_path}: {exc}"


def resolve(name_or_path: str) -> ModelPreset | None:
    """The generic preset for a local model directory or an ``org/model`` id, else None.

    Use :func:`try_resolve` to get the reason when it returns None.
    """
    return try_resolve(name_or_path)[0]


def is_candidate(name: str) -> bool:
    """Whether ``name`` is something this resolver handles (a path or an 'org/model' id)."""
    return bool(HF_REPO.fullmatch(name.partition("@")[0])) or name.startswith((".", "/", "~")) or Path(name).is_dir()

