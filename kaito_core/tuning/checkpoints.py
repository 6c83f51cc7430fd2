"""Is a ``checkpoint-N`` directory whole enough to resume from? (No torch needed.)

A pod killed while transformers' Trainer was writing a checkpoint (SIGKILL after the grace
period, a node lost, a full disk) leaves ``checkpoint-N`` half written: an empty directory, a
truncated ``trainer_state.json``, safetensors or ``optimizer.pt``. ``get_last_checkpoint`` picks
it anyway (it only looks at the directory names), and ``Trainer.train(resume_from_checkpoint=)``
then dies with a JSON, safetensors or zip error on every retry of the Job, so the run never
recovers. The checks here are cheap (headers and zip directories, not whole files): a
checkpoint that fails them is set aside and the newest whole one is used instead.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE = "trainer_state.json"
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin", "pytorch_model.bin")
# torch.save writes zip archives: a file cut short has no central directory at its end.
TORCH_FILES = ("optimizer.pt", "scheduler.pt")


def _safetensors_problem(path: Path) -> str | None:
    """The header says where every tensor ends; a shorter file was cut off while written."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100 * 2**20:
                return f"{path.name} has a damaged header"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        return f"{path.name} is unreadable ({exc})"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2]
    if 8 + n + max(ends, default=0) > size:
        return f"{path.name} is truncated ({size} bytes, its header needs {8 + n + max(ends)})"
    return None


def problem(path: Path, *, need_optimizer: bool = True) -> str | None:
    """Why ``path`` cannot be resumed from, or None when it looks whole."""
    if not path.is_dir():
        return "it is not a directory"
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {STATE}"
    except (OSError, ValueError) as exc:
        return f"its {STATE} is unreadable ({type(exc).__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"its {STATE} has no global_step"
    weights = [path / w for w in WEIGHTS if (path / w).is_file()]
    if not weights:
        return "it has no weights (adapter_model.safetensors)"
    if weights[0].suffix == ".safetensors":
        bad = _safetensors_problem(weights[0])
        if bad:
            return bad
    for name in TORCH_FILES if need_optimizer else ():
        f = path / name
        if not f.is_file():
            return f"it has no {name}"
        if not zipfile.is_zipfile(f):
            return f"{name} is truncated or damaged"
    return None


def newest_whole(ckpt_dir: Path, *, need_optimizer: bool = True) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that looks whole, and the newer ones that do not (with why)."""
    found = []
    for p in ckpt_dir.iterdir() if ckpt_dir.is_dir() else ():
        m = CHECKPOINT.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    broken: list[tuple[Path, str]] = []
    for _, p in sorted(found, reverse=True):
        why = problem(p, need_optimizer=need_optimizer)
        if why is None:
            return p, broken
        broken.append((p, why))
    return None, broken


def write_error(exc: BaseException, ckpt_dir: Path) -> Any:
    """One line for a checkpoint that could not be written (a full disk above all), or None
    when ``exc`` is something else. torch.save reports a full disk as ``RuntimeError: [enforce
    fail at inline_container.cc] unexpected pos``, safetensors as its own error: the traceback
    going through the Trainer's checkpoint save is what identifies them."""
    import os
    import shutil
    import traceback

    from kaito_core.api.training.errors import OutputError
    from kaito_core.tuning.output import NO_SPACE

    saving = any(f.name in ("_save_checkpoint", "_save_optimizer_and_scheduler", "save_model")
                 for f in traceback.extract_tb(exc.__traceback__))
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        why = os.strerror(exc.errno)
    elif saving and (isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError"):
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        return None
    try:
        free = f" ({shutil.disk_usage(ckpt_dir).free / 2**20:.1f} MiB free there now)"
    except OSError:
        free = ""
    return OutputError(f"writing a checkpoint under {ckpt_dir} failed: {why}{free}. Free some space, give a work "
                       "dir with room (--work-dir), or set TrainingArguments.save_strategy: no; a run started "
                       "again resumes from the last whole checkpoint")
