"""Write the adapter so that a reader never sees a half-written one as complete.

Files are written into a staging directory beside the destination (same filesystem), then
renamed into place one by one with ``os.replace``: the weights first, ``adapter_config.json``
after them (a directory without it is not an adapter to peft or to our runtime), the JSON
summary, and last the completion marker ``fine_tuning_completed.txt`` (upstream's name). The
destination itself may be a mounted volume, which cannot be replaced by a rename, hence the
file-by-file order instead of one directory rename.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from kaito_core.api.training.errors import OutputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SUMMARY = "kaito-tuning-summary.json"
MARKER = "fine_tuning_completed.txt"
LAST = (ADAPTER_CONFIG, SUMMARY, MARKER)
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# What an adapter run may have written into the output directory (peft's files, a changed
# tokenizer, ours). When a new adapter replaces an old one, those of them the new one does not
# write go: an old tokenizer or chat template left beside new weights would be served with them.
# Anything else there (a user's notes, the Job's .kaito-work) stays.
ADAPTER_FILES = frozenset({
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, "adapter_model.bin", "README.md", SUMMARY, MARKER,
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "generation_config.json"})


def is_complete(path: str | Path) -> bool:
    p = Path(path)
    return (p / MARKER).is_file() and (p / ADAPTER_CONFIG).is_file() and (p / ADAPTER_WEIGHTS).is_file()


def prepare_destination(dest: Path, *, overwrite: bool, workspace: str | None = None) -> None:
    """Refuse to mix a new adapter into an old one unless asked; make sure we can write.

    An adapter written by the same Workspace (``KAITO_WORKSPACE``, recorded in its summary) may
    be replaced by a re-run of that Workspace; another Workspace's adapter only with
    ``--overwrite``, so two Workspaces sharing an output path do not silently replace each other.
    """
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"output {dest} exists and is not a directory; choose a directory")
    if dest.is_dir() and any((dest / f).exists() for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, MARKER)):
        owner = _summary_field(dest, "workspace")
        same = bool(workspace) and owner == workspace
        if not overwrite and not same:
            whose = f" written by Workspace {owner!r}" if owner else ""
            raise OutputError(f"output {dest} already holds an adapter{whose}; choose another output directory, "
                              "or pass --overwrite to replace it")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=dest, prefix=".kaito-write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputError(f"output {dest} is not writable: {exc.strerror or exc}") from None


def prepare_work_dir(work: Path, named_by: str) -> None:
    """Create the work dir (checkpoints, downloads) and make sure it takes files."""
    try:
        work.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=work, prefix=".kaito-write-test-").close()
    except OSError as exc:
        why = "it is not a directory" if work.exists() and not work.is_dir() else exc.strerror or exc
        raise OutputError(f"work dir {work} ({named_by}) cannot be used: {why}; give a writable directory") from None


def lock_work_dir(work: Path) -> Any:
    """Hold ``<work>/.kaito-lock`` for the run: two runs sharing a work dir would write each
    other's checkpoints (and one resume the other's). Returns the open lock file (close it to
    release; the process ending releases it too), or None where the filesystem has no locks."""
    import fcntl

    try:
        f = open(work / ".kaito-lock", "a+")
    except OSError:
        return None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another run"
        f.close()
        raise OutputError(f"work dir {work} is in use by {holder}; wait for it to finish, or give this run "
                          "its own --work-dir") from None
    except OSError:  # no locks here (some network filesystems)
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    f.flush()
    return f


def _summary_field(dest: Path, key: str) -> Any:
    try:
        return json.loads((dest / SUMMARY).read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def check_free_space(dest: Path, need_bytes: int) -> None:
    free = shutil.disk_usage(dest).free
    if free < need_bytes:
        raise OutputError(f"output {dest}: {free / 2**20:.1f} MiB free, the adapter needs about "
                          f"{need_bytes / 2**20:.1f} MiB; free some space or choose another output")


def new_staging(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".kaito-staging-", dir=parent))


def explain_write_error(exc: OSError, where: Path, need_bytes: int | None = None) -> OutputError:
    if exc.errno in NO_SPACE:
        need = f" (the adapter needs about {need_bytes / 2**20:.1f} MiB)" if need_bytes else ""
        return OutputError(f"writing the adapter under {where} failed: {os.strerror(exc.errno)}{need}. "
                           "Nothing was published; free some space or choose another output")
    return OutputError(f"writing the adapter under {where} failed: {exc}. Nothing was published")


def write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def publish(staging: Path, dest: Path) -> list[str]:
    """Move staged files into ``dest`` in the safe order; return the file names."""
    old_marker = dest / MARKER
    if old_marker.exists():
        old_marker.unlink()  # an overwritten adapter is not complete until the new marker lands
    (dest / ADAPTER_CONFIG).unlink(missing_ok=True)
    names = sorted(p.name for p in staging.iterdir())
    for stale in sorted(ADAPTER_FILES - set(names)):
        if (dest / stale).is_file() and not (dest / stale).is_symlink():
            (dest / stale).unlink()
    for name in names:
        # Readable by whoever serves the adapter (safetensors writes its file 0600, as mkstemp
        # does); the image layer carries 0644 too.
        if (staging / name).is_file():
            os.chmod(staging / name, 0o644)
    order = [n for n in names if n not in LAST] + [n for n in LAST if n in names]
    for name in order:
        src, dst = staging / name, dest / name
        if dst.is_dir() and not src.is_dir():
            shutil.rmtree(dst)
        os.replace(src, dst)
    try:
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    shutil.rmtree(staging, ignore_errors=True)
    return order


def save_adapter(loaded, staging: Path, source, preset, tok, tok_changed, summary, need) -> None:
    """Write the adapter, its config (base model = the preset's id), tokenizer if changed, summary, marker."""
    try:
        # "auto" would ask the hub whether the vocabulary changed; we know whether it did.
        loaded.model.save_pretrained(str(staging), safe_serialization=True,
                                     save_embedding_layers=bool(tok_changed))
        (staging / "README.md").unlink(missing_ok=True)  # peft's empty model card
        cfg_path = staging / ADAPTER_CONFIG
        adapter_cfg = json.loads(cfg_path.read_text())
        adapter_cfg["base_model_name_or_path"] = summary["base_model"]
        if preset is not None:
            adapter_cfg["revision"] = preset.revision
        write_json(cfg_path, adapter_cfg)
        if tok_changed:
            tok.save_pretrained(str(staging))
        write_json(staging / SUMMARY, summary)
        (staging / MARKER).write_text(
            f"Fine-Tuning completed at {summary['finished_at']}\n", encoding="utf-8")
        fsync_tree(staging)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise explain_write_error(exc, staging.parent, need) from None
    missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (staging / f).is_file()]
    if missing:
        raise OutputError(f"peft did not write {missing}; nothing was published")


def write_shard(work: Path, rank: int, rows: list[int]) -> None:
    """Which training rows this data-parallel rank was given (for checking the shards)."""
    try:
        (work / f"kaito-rank{rank}-rows.json").write_text(json.dumps(rows))
    except OSError:
        pass


def annotations(summary: Mapping[str, Any]) -> dict[str, str]:
    from kaito_core.tuning.oci import ANNOTATION_PREFIX

    ann = {
        "org.opencontainers.image.created": summary["finished_at"],
        "org.opencontainers.image.description": f"LoRA adapter ({summary['method']}) for {summary['base_model']}",
        f"{ANNOTATION_PREFIX}.adapter.base-model": str(summary["base_model"]),
        f"{ANNOTATION_PREFIX}.tuning.method": summary["method"],
        f"{ANNOTATION_PREFIX}.tuning.steps": str(summary["steps"]),
        f"{ANNOTATION_PREFIX}.tuning.final-loss": f"{summary['final_loss']:.6g}",
    }
    if summary.get("preset"):
        ann[f"{ANNOTATION_PREFIX}.adapter.preset"] = summary["preset"]
    return ann


def build_summary(run, preset, cfg, source, loaded, history, dsum, tok_changed) -> dict[str, Any]:
    """The run summary (kaito-tuning-summary.json, --json, result.summary)."""
    import time
    from datetime import datetime, timezone

    from importlib.metadata import PackageNotFoundError, version

    try:
        kv = version("kaito-core")
    except PackageNotFoundError:
        kv = "unknown"
    duration = time.monotonic() - run.t0
    base = run.req.base_model or base_model_id(preset, source)
    if Path(base).is_absolute():
        run.notes.append(f"the adapter records its base model as the path {base} (no preset, and the weights "
                         "do not name their Hugging Face id); a server elsewhere cannot find it: pass "
                         "--base-model ORG/MODEL (or --preset) to record the id")
    return {
        "status": "succeeded",
        "workspace": os.environ.get("KAITO_WORKSPACE") or None,
        "method": cfg.method,
        "preset": preset.name if preset else None,
        "base_model": base,
        "model_source": source,
        "steps": history.steps,
        "max_steps": history.max_steps,
        "first_loss": history.losses[0],
        "final_loss": history.losses[-1],
        "eval_loss": history.eval_loss,
        "grad_norm_max": max(history.grad_norms) if history.grad_norms else None,
        "tokens_seen": history.tokens_seen,
        "tokens_per_s": round(history.tokens_this_run / history.train_seconds, 2) if history.train_seconds else None,
        "train_seconds": round(history.train_seconds, 3),
        "duration_s": round(duration, 3),
        "trainable_params": loaded.trainable_params,
        "total_params": loaded.total_params,
        "linear_layers": loaded.linear_layers,
        "quantized_linear_layers": loaded.quantized_layers,
        "quantization": ("4bit-" + str(cfg.quantization.get("bnb_4bit_quant_type", "nf4"))
                         if cfg.method == "qlora" else "8bit" if cfg.quantization.get("load_in_8bit") else None),
        "packing": run.packing,
        "resumed_from": run.resumed_from,
        "target_modules": loaded.target_modules,
        "tokenizer_changed": tok_changed,
        "data": dsum.to_dict(),
        "notes": list(run.notes),
        "output": {"dir": run.req.output and str(Path(run.req.output).resolve()),
                   "image": run.req.output_image, "digest": None},
        "started_at": run.started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kaito_version": kv,
        "config": cfg.to_dict(),
    }


def base_model_id(preset, source: str) -> str:
    """The base model an adapter records (unless ``--base-model`` names it): the preset's Hugging
    Face id, else the id the weights were saved from (config.json ``_name_or_path``), else what
    was loaded."""
    if preset is not None:
        return preset.hf_repo
    try:
        name = json.loads((Path(source) / "config.json").read_text()).get("_name_or_path") or ""
    except (OSError, ValueError):
        name = ""
    if name.count("/") == 1 and not Path(name).is_absolute() and not name.startswith("."):
        return name
    return str(source)
