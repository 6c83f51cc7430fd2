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
from typing import Any

from kaito_core.tuning.errors import OutputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SUMMARY = "kaito-tuning-summary.json"
MARKER = "fine_tuning_completed.txt"
LAST = (ADAPTER_CONFIG, SUMMARY, MARKER)
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_complete(path: str | Path) -> bool:
    p = Path(path)
    return (p / MARKER).is_file() and (p / ADAPTER_CONFIG).is_file() and (p / ADAPTER_WEIGHTS).is_file()


def prepare_destination(dest: Path, *, overwrite: bool) -> None:
    """Refuse to mix a new adapter into an old one unless asked; make sure we can write."""
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"output {dest} exists and is not a directory; choose a directory")
    if dest.is_dir() and any((dest / f).exists() for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, MARKER)):
        if not overwrite:
            raise OutputError(f"output {dest} already holds an adapter; choose an empty directory or pass "
                              "--overwrite to replace it")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=dest, prefix=".kaito-write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputError(f"output {dest} is not writable: {exc.strerror or exc}") from None


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
