"""Load the base model and tokenizer for the transformers backend (safetensors only by default).

Pickle checkpoints (``.bin``/``.pt``) can run code when loaded, so they are refused unless
``--allow-pickle`` says the weights are trusted. dtype and context come from the preset when
one is named; the chat template from the tokenizer, else the preset, else a plain fallback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito_core.errors import KaitoError
from kaito_core.runtime.options import ServeOptions

log = logging.getLogger("kaito.runtime.loader")

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
DTYPES = ("float32", "bfloat16", "float16", "auto")


class ModelLoadError(KaitoError, RuntimeError):
    """The model or an adapter cannot be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    context_length: int
    eos_ids: frozenset[int]
    chat_template: str
    chat_template_source: str
    device: str
    dtype: str
    vocab_size: int


def check_weights(path: Path, *, allow_pickle: bool, what: str = "model") -> None:
    """Refuse a directory that only holds pickle weights (unless allowed) or no weights at all."""
    files = [p for p in path.rglob("*") if p.is_file()]
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES and "optimizer" not in p.name
               and "training_args" not in p.name]
    if safetensors:
        return
    if pickles and not allow_pickle:
        raise ModelLoadError(
            f"{what} {str(path)!r} has only pickle weights ({', '.join(sorted(p.name for p in pickles)[:3])}); "
            "pickle files can run code when loaded. Convert them to safetensors, or pass --allow-pickle "
            "if you trust them")
    if not pickles:
        raise ModelLoadError(f"{what} {str(path)!r} holds no weights (*.safetensors); is it the right directory?")


def _context_length(config: Any) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _resolve_dtype(opts: ServeOptions, preset: Any, device: str) -> str:
    if opts.dtype:
        dtype = opts.dtype
    elif preset is not None and preset.runtimes.get("transformers", {}).get("dtype"):
        dtype = str(preset.runtimes["transformers"]["dtype"])
    else:
        dtype = "auto"
    if dtype not in DTYPES:
        raise ModelLoadError(f"--dtype {dtype!r}: expected one of {list(DTYPES)}")
    return dtype


def _check_device(torch: Any, device: str) -> str:
    """``--device`` as torch reads it, refused before loading with the fix (torch's own
    errors named neither the flag nor the choices: "Invalid device string", an AssertionError)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"--device {device!r} is not a device torch knows; use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device!r}: torch sees no CUDA GPU here (this torch build: "
                             f"{torch.__version__}); use --device cpu, or leave --device out") from None
    return device


def load_model(opts: ServeOptions, preset: Any = None) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if opts.threads:
        torch.set_num_threads(opts.threads)  # process-wide: the engine thread runs every forward pass
    device = _check_device(torch, opts.device) if opts.device else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _resolve_dtype(opts, preset, device)
    local = Path(opts.model).expanduser()
    is_local = local.exists()
    if not is_local and (opts.model.startswith(("/", "./", "../", "~")) or opts.model.count("/") > 1):
        # Not an 'org/model' id: the user meant a directory that is not there.
        raise ModelLoadError(f"--model {opts.model!r}: no such directory; give a model directory (with "
                             "config.json and *.safetensors) or a Hugging Face id 'org/model'")
    if is_local:
        if not local.is_dir():
            raise ModelLoadError(f"--model {opts.model!r} is a file; give the model directory "
                                 "(with config.json and *.safetensors)")
        if not (local / "config.json").exists():
            raise ModelLoadError(f"--model {opts.model!r} has no config.json; give a transformers model directory")
        check_weights(local, allow_pickle=opts.allow_pickle)
    common: dict[str, Any] = {"trust_remote_code": opts.trust_remote_code, "local_files_only": is_local}
    if opts.revision and not is_local:
        common["revision"] = opts.revision  # the preset's pinned commit (KAITO_MODEL_REVISION in pods)
    try:
        ref = str(local) if is_local else opts.model
        tokenizer = AutoTokenizer.from_pretrained(ref, **common)
        model = AutoModelForCausalLM.from_pretrained(
            ref, dtype=getattr(torch, dtype) if dtype != "auto" else "auto",
            use_safetensors=None if opts.allow_pickle else True, **common)
    except (OSError, ValueError) as exc:
        where = "directory" if is_local else "Hugging Face id (is the hub reachable? set HF_TOKEN for gated models)"
        raise ModelLoadError(f"cannot load --model {opts.model!r} as a {where}: {exc}") from exc
    model.to(device)
    model.eval()

    ctx = _context_length(model.config) or 2048
    if preset is not None:
        ctx = min(ctx, preset.context_length)
    if opts.max_model_len is not None:
        if opts.max_model_len > ctx:
            raise ModelLoadError(f"--max-model-len {opts.max_model_len} is more than the model's context "
                                 f"({ctx} tokens); use at most {ctx}")
        ctx = opts.max_model_len

    eos: set[int] = set()
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, (list, tuple)):
            eos.update(int(v) for v in value)

    if tokenizer.chat_template:
        template, source = tokenizer.chat_template, "tokenizer"
    elif preset is not None and preset.chat_template:
        template, source = preset.chat_template, f"preset {preset.name}"
    else:
        template, source = FALLBACK_TEMPLATE, "fallback"
        log.warning("model %s has no chat template; chat requests use a plain 'role: content' format",
                    opts.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token_id = next(iter(eos), 0)
    vocab = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))
    actual = str(next(model.parameters()).dtype).replace("torch.", "")
    log.info("loaded %s: %s on %s, context %d tokens, chat template from %s", opts.model, actual, device, ctx, source)
    return LoadedModel(model=model, tokenizer=tokenizer, context_length=ctx, eos_ids=frozenset(eos),
                       chat_template=template, chat_template_source=source, device=device, dtype=actual,
                       vocab_size=vocab)
