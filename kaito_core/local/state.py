"""Where local mode keeps what it runs: one directory per Workspace under the state directory.

``$KAITO_HOME/local`` when ``KAITO_HOME`` is set, else ``~/.kaito/local``. Each Workspace gets
``<state>/<name>/`` holding:

- ``workspace.yaml``: the Workspace as given to ``kaito up`` (after defaults);
- ``launch.json``: what the supervisor runs (command, port, endpoint, paths), written once;
- ``status.json``: the Workspace's ``status`` (the operator's conditions and state) plus local
  facts (pids, restarts), rewritten atomically by the supervisor on every change;
- ``supervisor.pid``: the supervisor's pid, written by ``kaito up`` as it starts it;
- ``workspace.log``: the runtime's or the tuning job's output, with kaito's own event lines.

Standard library only: ``kaito ps`` and ``kaito down`` read these files without importing the
model stack.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOME_ENV = "KAITO_HOME"
LAUNCH = "launch.json"
STATUS = "status.json"
LOG = "workspace.log"
SUPERVISOR_PID = "supervisor.pid"
MANIFEST = "workspace.yaml"


def state_root() -> Path:
    """The local-mode state directory (created on demand by writers, never by readers)."""
    home = os.environ.get(HOME_ENV)
    base = Path(home).expanduser() if home else Path.home() / ".kaito"
    return base / "local"


def workspace_dir(name: str, root: Path | None = None) -> Path:
    return (root or state_root()) / name


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` so a reader sees either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Launch:
    """What ``kaito up`` decided; the supervisor runs it. Written once, read by every command."""

    name: str
    namespace: str
    mode: str  # "inference" | "tuning"
    preset: str
    command: list[str]
    source: str = ""  # the YAML file given to kaito up
    host: str = "127.0.0.1"
    port: int | None = None
    model_name: str | None = None  # the id clients send as "model"
    adapters: list[str] = field(default_factory=list)
    weights: str = ""
    output: str = ""  # tuning: where the adapter goes (a directory or an OCI reference)
    env: dict[str, str] = field(default_factory=dict)
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    spec_hash: str = ""
    created: str = ""

    @property
    def endpoint(self) -> str | None:
        return f"http://{self.host}:{self.port}" if self.port else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Launch":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def read_launch(wdir: Path) -> Launch | None:
    data = read_json(wdir / LAUNCH)
    return Launch.from_dict(data) if data else None


def list_workspaces(root: Path | None = None) -> list[Path]:
    """Directories of the Workspaces local mode knows, sorted by name."""
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and (p / LAUNCH).is_file())
