"""This machine's resources, and whether a model fits on them (local mode's ``ResourceReady``).

A cluster provisions a node with enough GPU memory; local mode has one machine, so it checks
it instead and refuses with the numbers when the model does not fit. On a machine with NVIDIA
GPUs (``nvidia-smi``) the model must fit the GPUs' free memory; otherwise it runs on the CPU and
must fit the RAM that is available now (``MemAvailable``). Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

GIB = 2**30
# Keep this much RAM for the OS, the Python process and the tokenizer when running on the CPU.
CPU_HEADROOM_GIB = 1.0


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory_total_gib: float
    memory_free_gib: float


@dataclass(frozen=True)
class Machine:
    cpus: int
    ram_total_gib: float
    ram_available_gib: float
    disk_free_gib: float
    gpus: tuple[GPU, ...] = field(default_factory=tuple)

    @property
    def device(self) -> str:
        return "gpu" if self.gpus else "cpu"

    def describe(self) -> str:
        text = f"{self.cpus} CPU(s), {self.ram_available_gib:.1f} of {self.ram_total_gib:.1f} GiB RAM available"
        if self.gpus:
            text += ", " + ", ".join(f"GPU{g.index} {g.name} {g.memory_free_gib:.1f}/{g.memory_total_gib:.1f} GiB free"
                                     for g in self.gpus)
        else:
            text += ", no GPU"
        return text


def _meminfo() -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024 / GIB  # kB
    except OSError:
        pass
    return out


def _gpus() -> tuple[GPU, ...]:
    smi = shutil.which("nvidia-smi")
    if not smi or os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return ()
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            try:
                gpus.append(GPU(int(parts[0]), parts[1], float(parts[2]) / 1024, float(parts[3]) / 1024))
            except ValueError:
                continue
    return tuple(gpus)


def probe(path: str | os.PathLike = ".") -> Machine:
    """Measure this machine now (RAM available, GPUs' free memory, free disk under ``path``)."""
    mem = _meminfo()
    try:
        disk = shutil.disk_usage(path).free / GIB
    except OSError:
        disk = 0.0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(cpus=cpus, ram_total_gib=mem.get("MemTotal", 0.0),
                   ram_available_gib=mem.get("MemAvailable", mem.get("MemFree", 0.0)),
                   disk_free_gib=disk, gpus=_gpus())


@dataclass(frozen=True)
class Fit:
    """Whether a memory need fits this machine, with the sentence that says so."""

    ok: bool
    device: str
    required_gib: float
    available_gib: float
    message: str


def check(required_gib: float, machine: Machine, *, weights_gib: float, disk_path: str = ".") -> Fit:
    """Compare the model's memory need with this machine (GPUs when present, else RAM)."""
    if machine.gpus:
        free = sum(g.memory_free_gib for g in machine.gpus)
        ok = required_gib <= free
        where = f"{len(machine.gpus)} GPU(s) with {free:.1f} GiB free"
        msg = (f"needs {required_gib:.2f} GiB of GPU memory; this machine has {where}" + (
            "" if ok else "; free GPU memory (stop other processes) or pick a smaller model"))
        return Fit(ok, "gpu", required_gib, free, msg)
    usable = max(0.0, machine.ram_available_gib - CPU_HEADROOM_GIB)
    ok = required_gib <= usable
    msg = (f"needs {required_gib:.2f} GiB of RAM on the CPU; {machine.ram_available_gib:.1f} GiB is available "
           f"({usable:.1f} GiB usable after {CPU_HEADROOM_GIB:g} GiB headroom)")
    if not ok:
        msg += ("; this model is too large for this machine without a GPU: pick a smaller model, free memory, "
                "or run it on a cluster (`kaito plan` shows the instance types that fit)")
    if ok and weights_gib > machine.disk_free_gib:
        return Fit(False, "cpu", required_gib, usable,
                   f"the weights need {weights_gib:.1f} GiB of disk; {machine.disk_free_gib:.1f} GiB is free under {disk_path}")
    return Fit(ok, "cpu", required_gib, usable, msg)
