"""Load the base model (full precision or 4-bit nf4) and wrap it with LoRA adapters.

CPU facts (shared/ENVIRONMENT.md): bitsandbytes 0.50 loads nf4 on CPU with a float32 compute
dtype; a 4-bit model that ran generate()/eval before training in the same process trains with
zero gradients, so a run always loads a fresh instance and checks the gradient norm after
training; and bitsandbytes leaves Falcon's layers (FalconLinear) unquantized, which we count
and report instead of pretending the model is 4-bit.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaito_core.api.training.config import TrainingConfig
from kaito_core.api.training.errors import TuningConfigError, TuningError

log = logging.getLogger("kaito.tuning")

# LoRA targets per architecture when no preset is named (ENVIRONMENT.md, upstream presets).
TARGETS_BY_MODEL_TYPE = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "phi3": ("qkv_proj", "o_proj"),
    "falcon": ("query_key_value",),
}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    tokenizer_changed: list[str] = field(default_factory=list)
    linear_layers: int = 0
    quantized_layers: int = 0
    trainable_params: int = 0
    total_params: int = 0
    target_modules: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def torch_dtype(name: str | None):
    import torch

    if name in (None, "auto"):
        return "auto" if name == "auto" else None
    return getattr(torch, name)


def read_model_type(model_dir: Path) -> str | None:
    import json

    try:
        return json.loads((model_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def is_quantized(cfg: TrainingConfig) -> bool:
    """QLoRA (4-bit) or LoRA over an 8-bit base (QuantizationConfig.load_in_8bit)."""
    return cfg.method == "qlora" or bool(cfg.quantization.get("load_in_8bit"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the Hugging Face hub be reached at all? One TCP connect, instead of letting
    huggingface_hub retry each file for most of a minute before saying it is offline."""
    import os
    import socket
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_error(source: str, exc: Exception, *, offline: bool) -> TuningError:
    """One clear line for a model that cannot be loaded; offline, no traceback and no retries."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not Path(source).exists() and (offline or "offline" in text.lower() or "connect" in text.lower()
                                      or "couldn't" in text.lower() or "cannot find" in text.lower()):
        return TuningError(f"cannot load the base model {source!r}: it is not a local directory and the Hugging Face "
                           "hub cannot be reached (offline). Give --model-dir DIR with the weights, or run where "
                           "the hub is reachable")
    return TuningError(f"cannot load the base model from {source!r}: {text}")


# Formats kaito never loads: skipped when fetching a model from the hub.
HUB_IGNORE = ["*.pth", "*.pt", "original/*", "*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.ot"]


def download_model(repo: str, cfg: TrainingConfig) -> str:
    """Fetch a hub model into the Hugging Face cache, with ``download`` progress log lines
    (files done, ETA); returns the local snapshot directory that the loaders then read."""
    from huggingface_hub import snapshot_download

    from kaito_core.tuning.progress import hub_tqdm_class

    m = cfg.model
    log.info("fetching %s from the Hugging Face hub", repo)
    try:
        return snapshot_download(repo, revision=m.get("revision") or None, cache_dir=m.get("cache_dir") or None,
                                 local_files_only=bool(m.get("local_files_only")), ignore_patterns=HUB_IGNORE,
                                 force_download=bool(m.get("force_download")), tqdm_class=hub_tqdm_class("model", repo))
    except Exception as exc:  # noqa: BLE001 - hub errors (offline, gated, missing) become one clear line
        raise load_error(repo, exc, offline=bool(m.get("local_files_only"))) from None


def load_tokenizer(source: str, cfg: TrainingConfig) -> tuple[Any, list[str]]:
    from transformers import AutoTokenizer

    m = cfg.model
    try:
        tok = AutoTokenizer.from_pretrained(source, local_files_only=bool(m.get("local_files_only", False)),
                                            trust_remote_code=bool(m.get("trust_remote_code")),
                                            revision=m.get("revision") or None)
    except (OSError, ValueError) as exc:
        raise load_error(source, exc, offline=bool(m.get("local_files_only"))) from None
    changed = []
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        changed.append("pad_token set to eos_token")
    return tok, changed


def load_model(source: str, cfg: TrainingConfig) -> LoadedModel:
    """A fresh base model with LoRA layers, ready for training."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    m, q = cfg.model, cfg.quantization
    kwargs: dict[str, Any] = {"local_files_only": bool(m.get("local_files_only", False)),
                              "trust_remote_code": bool(m.get("trust_remote_code")),
                              "device_map": m.get("device_map") or "cpu"}
    if m.get("revision"):
        kwargs["revision"] = m["revision"]
    for key in ("cache_dir", "proxies", "force_download", "output_loading_info"):
        if m.get(key):
            kwargs[key] = m[key]
    dtype = torch_dtype(m.get("torch_dtype"))
    if dtype is not None:
        kwargs["dtype"] = dtype
    quantized = is_quantized(cfg)
    if quantized:
        from transformers import BitsAndBytesConfig

        bnb = {k: v for k, v in q.items() if k != "quant_method" and v is not None}
        if "bnb_4bit_compute_dtype" in bnb:
            bnb["bnb_4bit_compute_dtype"] = torch_dtype(bnb["bnb_4bit_compute_dtype"])
        if "bnb_4bit_quant_storage" in bnb:
            bnb["bnb_4bit_quant_storage"] = torch_dtype(bnb["bnb_4bit_quant_storage"])
        kwargs["quantization_config"] = BitsAndBytesConfig(**bnb)
    try:
        model = None
        if cfg.method == "qlora":
            model = _load_quantized_streaming(source, kwargs)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        if isinstance(model, tuple):  # output_loading_info: (model, info)
            model, info = model
            log.info("loading info: %s", {k: v for k, v in info.items() if v})
    except (OSError, ValueError) as exc:
        raise load_error(source, exc, offline=bool(kwargs["local_files_only"])) from None
    loaded = LoadedModel(model=None, tokenizer=None)
    loaded.linear_layers, loaded.quantized_layers = count_linear(model)
    if quantized:
        from peft import prepare_model_for_kbit_training

        if loaded.quantized_layers == 0:
            loaded.notes.append(
                f"{'QLoRA' if cfg.method == 'qlora' else '8-bit'}: bitsandbytes quantized 0 of "
                f"{loaded.linear_layers} linear layers of "
                f"{type(model).__name__}; they stay in full precision (fp32 on CPU), so this run uses about "
                "as much memory as LoRA (known for Falcon's FalconLinear layers)")
        elif loaded.quantized_layers < loaded.linear_layers:
            log.info("QLoRA: %d of %d linear layers are 4-bit (the rest, e.g. lm_head, stay full precision)",
                     loaded.quantized_layers, loaded.linear_layers)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(cfg.training.get("gradient_checkpointing")))
    lora_args = {k: v for k, v in cfg.lora.items()
                 if k not in ("task_type", "peft_type", "base_model_name_or_path", "inference_mode")}
    lora_args["target_modules"] = check_targets(model, lora_args.get("target_modules"), loaded.notes)
    loaded.target_modules = list(lora_args["target_modules"]) if not isinstance(
        lora_args["target_modules"], str) else [lora_args["target_modules"]]
    # LoRA's A matrices are drawn now, before the Trainer seeds the RNG with
    # TrainingArguments.seed (transformers: "use model_init ... if it has randomly initialized
    # parameters"); seeding here makes the same configuration train the same adapter.
    from transformers import set_seed

    seed = cfg.training.get("seed")
    set_seed(42 if seed is None else int(seed))  # transformers' TrainingArguments.seed default
    try:
        lora = LoraConfig(task_type="CAUSAL_LM", **lora_args)
    except (TypeError, ValueError) as exc:
        raise TuningConfigError("training_config.LoraConfig", [_field("LoraConfig", str(exc))]) from None
    model = _with_lora(model, lora)
    model.config.use_cache = False
    trainable, total = model.get_nb_trainable_parameters()
    loaded.model, loaded.trainable_params, loaded.total_params = model, int(trainable), int(total)
    return loaded


def _with_lora(model: Any, lora: Any) -> Any:
    from peft import get_peft_model

    with warnings.catch_warnings():
        # peft reads the deprecated ``is_gradient_checkpointing`` property to decide whether to
        # prepare checkpointing; it is off here unless TrainingArguments.gradient_checkpointing
        # says so (transformers' default: false; upstream's templates leave it unset), so the
        # FutureWarning it triggers says nothing about this run.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        try:
            return get_peft_model(model, lora)
        except ValueError as exc:  # peft's NoMatchingPeftModuleError (layers_to_transform, a regex, ...)
            raise TuningConfigError("training_config.LoraConfig", [_field("LoraConfig", str(exc))]) from None


class _StateDict(dict):
    """transformers deep-copies from_pretrained's kwargs; lazy safetensors slices cannot be copied."""

    def __deepcopy__(self, memo: dict) -> "_StateDict":
        return self


def _load_quantized_streaming(source: str, kwargs: dict[str, Any]) -> Any:
    """Quantize a local checkpoint tensor by tensor, read with pread instead of mmap.

    transformers maps the safetensors files; every page it reads for quantization stays
    resident while the mapping lives, and the unquantized embeddings and norms keep it alive,
    so a QLoRA load peaked at the full-precision size on CPU. Reading each tensor into its own
    buffer (freed once quantized), with large allocations returned to the system at once,
    keeps the peak near the 4-bit size (measured by bench/tuning_memory.py). Returns None when
    this path does not apply (not a local safetensors directory, remote code); the caller then
    uses the usual loader.
    """
    import glob
    import os

    import transformers
    from safetensors import safe_open
    from transformers import AutoConfig

    files = sorted(glob.glob(os.path.join(source, "*.safetensors")))
    if not files or kwargs.get("trust_remote_code"):
        return None
    config = AutoConfig.from_pretrained(source, local_files_only=True)
    arch = (getattr(config, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        return None
    _return_big_allocations_at_once()
    handles, state = [], _StateDict()
    try:
        for f in files:
            h = safe_open(f, framework="pt", device="cpu", backend="pread")
            handles.append(h)
            for key in h.keys():
                state[key] = h.get_slice(key)
        args = {k: v for k, v in kwargs.items() if k not in ("local_files_only", "revision", "cache_dir")}
        model = cls.from_pretrained(None, config=config, state_dict=state, **args)
    except TypeError:
        return None  # an older safetensors without the pread backend
    finally:
        state.clear()
        for h in handles:
            h.__exit__(None, None, None)
    _trim_heap()
    return model


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _return_big_allocations_at_once() -> None:
    """glibc raises its mmap threshold after big frees, so later big buffers come from the heap
    and stay there; fixing the threshold at 1 MiB hands each freed tensor back to the system."""
    try:
        libc = _libc()
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
            libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    except OSError:
        pass


def _trim_heap() -> None:
    try:
        libc = _libc()
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def _field(section: str, message: str):
    from kaito_core.errors import MISSING, FieldError

    return FieldError(f"training_config.{section}", MISSING, message)


def count_linear(model: Any) -> tuple[int, int]:
    """(linear layers in the decoder, of which 4-bit) - lm_head excluded."""
    import torch

    try:
        from bitsandbytes.nn import Linear4bit, Linear8bitLt
        kbit: tuple = (Linear4bit, Linear8bitLt)
    except Exception:  # noqa: BLE001 - bitsandbytes is only needed for QLoRA / 8-bit
        kbit = ()
    total = quant = 0
    for name, mod in model.named_modules():
        if name.endswith("lm_head"):
            continue
        if isinstance(mod, torch.nn.Linear):
            total += 1
            if kbit and isinstance(mod, kbit):
                quant += 1
    return total, quant


def check_targets(model: Any, targets: Any, notes: list[str]) -> Any:
    """Keep the target modules the model has; refuse a list that matches nothing.

    Upstream's Phi-3 example names q_proj/k_proj/v_proj/o_proj, but Phi-3 fuses q/k/v into
    qkv_proj: peft would train only o_proj without a word. We say which names matched.
    """
    if targets in (None, "all-linear") or isinstance(targets, str):
        return targets or "all-linear"
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    found = [t for t in targets if t in names]
    missing = [t for t in targets if t not in names]
    if not found:
        linear = sorted({n.rsplit(".", 1)[-1] for n, mod in model.named_modules()
                         if type(mod).__name__.endswith("Linear") or type(mod).__name__ == "Linear4bit"} - {"lm_head"})
        raise TuningConfigError("training_config.LoraConfig", [_field(
            "LoraConfig.target_modules", f"none of {list(targets)} is a module of this model; its linear "
                                         f"layers are {linear}")])
    if missing:
        notes.append(f"LoraConfig.target_modules: {missing} are not modules of this model and were skipped; "
                     f"training {found}")
    return found


def recipe_for_model_dir(model_dir: Path):
    """Default LoRA targets for a bare model directory: a registered preset of the same
    architecture first, else the per-architecture table."""
    from kaito_core.types import TuningRecipe

    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    arch = (cfg.get("architectures") or [None])[0]
    try:
        from kaito_core.plugins import get_registry

        for p in get_registry().presets.values():
            if p.architecture == arch and p.tuning is not None:
                return p.tuning
    except Exception:  # noqa: BLE001 - a broken plugin must not stop a run on a bare directory
        pass
    targets = TARGETS_BY_MODEL_TYPE.get(read_model_type(model_dir) or "")
    return TuningRecipe(target_modules=targets) if targets else None
