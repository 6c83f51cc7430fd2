"""The steps of ``kaito up`` that read and check things: the file, the Workspace, the sizing
table, adapters, ConfigMaps, ports (no process is started here)."""

from __future__ import annotations

import hashlib
import json
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from kaito_core.errors import KaitoError
from kaito_core.local import machine as machine_mod

DEFAULT_PORT = 5000


class UpError(KaitoError):
    """``kaito up`` stopped before starting anything; the message says why and how to fix it."""


class Printer:
    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    def __call__(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @property
    def tty(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())


def free_port(host: str = "127.0.0.1", preferred: int | None = DEFAULT_PORT, span: int = 100) -> int:
    """``preferred`` when it is free, else the next free one, else any port the OS gives."""
    if preferred:
        for port in range(preferred, preferred + span):
            if _port_free(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT from a stopped server counts as free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


BASE: list[Path] = [Path(".")]  # the directory of the YAML file being brought up


def host_path(volume: Any, base: Path | None = None) -> str | None:
    """A volumeSource's hostPath.path; a relative path is relative to the YAML file (local mode only)."""
    if isinstance(volume, dict):
        hp = volume.get("hostPath")
        if isinstance(hp, dict) and hp.get("path"):
            path = Path(str(hp["path"])).expanduser()
            if not path.is_absolute():
                path = (base or BASE[0]) / path
            return str(path)
    return None


def _params(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _gib(x: float) -> str:
    if x < 0.1:
        return f"{x * 1024:.0f} MiB"
    return f"{x:.2f} GiB" if x < 10 else f"{x:.1f} GiB"


def load_workspace(opts: Any) -> tuple[Any, dict, list[str]]:
    """(Workspace, ConfigMaps by name, warnings) from the file; raises UpError on any problem."""
    from kaito_core.api import Workspace, configmaps_by_name, load_documents

    docs = load_documents(opts.file)
    bad = [d for d in docs if d.error is not None]
    if bad:
        raise UpError(str(bad[0].error))
    workspaces = [d.obj for d in docs if isinstance(d.obj, Workspace)]
    if opts.name:
        workspaces = [w for w in workspaces if w.name == opts.name]
    if not workspaces:
        raise UpError(f"{opts.file}: no Workspace{f' named {opts.name!r}' if opts.name else ''} in this file")
    if len(workspaces) > 1:
        raise UpError(f"{opts.file}: {len(workspaces)} Workspaces ({', '.join(w.name for w in workspaces)}); "
                      "pick one with --name NAME")
    return workspaces[0], configmaps_by_name(docs), []


def validate(ws: Any, registry: Any, configmaps: dict, p: Printer) -> None:
    from kaito_core.api import validate_workspace

    result = validate_workspace(ws, registry=registry, configmaps=configmaps)
    # The generic resolver accepts any local model directory or org/model id; validation
    # without it would call such a preset unknown.
    errors = [e for e in result.errors if not (e.path.endswith("preset.name") and _generic_ok(registry, ws))]
    for w in result.warnings:
        p(f"  warning: {w}")
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise UpError(f"Workspace {ws.name!r} is invalid ({len(errors)} problem{'s' if len(errors) != 1 else ''}):\n{lines}")
    if ws.inference is not None and ws.inference.template is not None:
        raise UpError(f"Workspace {ws.name!r}: inference.template (your own pod) cannot run in local mode; "
                      "name a model with inference.preset.name instead")


def _generic_ok(registry: Any, ws: Any) -> bool:
    try:
        registry.get_preset(ws.preset_name or "")
        return True
    except Exception:  # noqa: BLE001
        return False


def resolve_preset(ws: Any, registry: Any) -> Any:
    from kaito_core.plugins import UnknownPreset

    try:
        return registry.get_preset(ws.preset_name)
    except UnknownPreset as exc:
        raise UpError(f"preset {ws.preset_name!r} is not known: {exc.hint}") from None


def sizing_rows(plan: Any, local_preset: Any, machine: Any, method: str | None,
                note: str | None) -> tuple[list[list[str]], Any, list[str]]:
    """Rows of the sizing table (the cluster's Plan, this machine), the local fit, and notes."""
    from kaito_core import sizing

    notes: list[str] = []
    rows: list[list[str]] = []
    if plan.errors:
        rows.append(["cluster", str(plan.instance_type or "-"), "-", "-", "-", "-", "-",
                     "cannot place: " + plan.errors[0][:80]])
    else:
        row = plan.to_dict()
        rows.append(["cluster", str(plan.instance_type), f"{plan.gpus_per_node} GPU", str(plan.node_count),
                     _gib(row["gpuMemoryRequiredGiB"]) + " GPU", _gib(row["gpuMemoryAvailableGiB"]) + " GPU",
                     f"{plan.disk_gib} GiB", "plan"])
    est = sizing.estimate(local_preset, runtime="transformers", method=method, device=machine.device)
    fit = machine_mod.check(est.total_gib, machine, weights_gib=local_preset.weight_gib)
    what = "GPU" if fit.device == "gpu" else "RAM"
    where = (f"{len(machine.gpus)} GPU" if machine.gpus else f"cpu x{machine.cpus}")
    rows.append(["this machine", where, "-", "1", f"{_gib(fit.required_gib)} {what}",
                 f"{_gib(fit.available_gib)} {what}", _gib(local_preset.weight_gib),
                 "fits" if fit.ok else "DOES NOT FIT"])
    if note:
        notes.append(note)
    return rows, fit, notes


def adapters_for(ws: Any, wdir: Path, p: Printer) -> list[tuple[str, str, float]]:
    """(name, local directory, strength) of every adapter; OCI images are pulled now."""
    out = []
    for i, ad in enumerate(ws.inference.adapters or [] if ws.inference else []):
        name = ad.source.name
        strength = float(ad.strength) if ad.strength is not None else 1.0
        if ad.source.image:
            dest = wdir / "adapters" / name
            p(f"  adapter {name}: pulling {ad.source.image}")
            from kaito_core.runtime.oci import OCIError, pull_adapter

            try:
                pull_adapter(ad.source.image, dest)
            except OCIError as exc:
                raise UpError(f"inference.adapters[{i}].source.image {ad.source.image!r}: {exc}") from None
            out.append((name, str(dest), strength))
            continue
        path = host_path(ad.source.volume_source)
        if not path:
            raise UpError(f"inference.adapters[{i}].source: local mode reads adapters from an image or a "
                          "volumeSource.hostPath.path directory")
        folder = Path(path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise UpError(f"inference.adapters[{i}].source.volumeSource.hostPath.path {path!r}: no adapter_config.json "
                          "there; expected a LoRA adapter directory (what a tuning Workspace writes)")
        p(f"  adapter {name}: {folder}")
        out.append((name, str(folder.resolve()), strength))
    return out


def write_configmap_key(configmaps: dict, name: str | None, key: str, dest: Path) -> Path | None:
    if not name:
        return None
    cm = configmaps.get(name)
    if cm is None:
        raise UpError(f"the Workspace names ConfigMap {name!r}, which is not in the file; put the ConfigMap "
                      f"(with data key {key}) in the same YAML file, separated by ---")
    text = (cm.data or {}).get(key)
    if text is None:
        raise UpError(f"ConfigMap {name!r} has no data key {key!r}")
    dest.write_text(text)
    return dest


def spec_hash(ws: Any) -> str:
    blob = json.dumps(ws.spec_dict(), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def examples(endpoint: str, model: str, adapters: list[str]) -> list[str]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 64})
    lines = [
        "Try it:",
        f"  curl -s {endpoint}/v1/chat/completions -H 'Content-Type: application/json' \\",
        f"    -d {shlex.quote(body)}",
        "",
        "  # or with the OpenAI client (pip install openai)",
        "  from openai import OpenAI",
        f"  client = OpenAI(base_url=\"{endpoint}/v1\", api_key=\"unused\")",
        f"  reply = client.chat.completions.create(model=\"{model}\", "
        "messages=[{\"role\": \"user\", \"content\": \"Hello!\"}])",
        "  print(reply.choices[0].message.content)",
    ]
    if adapters:
        lines.append(f"  # adapters are models too: model=\"{adapters[0]}\"" if len(adapters) == 1 else
                     f"  # adapters are models too: model= one of {', '.join(adapters)}")
    return lines


