"""The Workspaces local mode runs, as ``kaito ps``, ``kaito logs`` and ``kaito down`` see them.

The status on disk is what the supervisor last wrote; when the supervisor is gone (killed,
machine rebooted) and the Workspace had not finished, the status read here says so instead of
repeating a stale ``Ready``.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kaito_core.errors import KaitoError
from kaito_core.local import processes, state
from kaito_core.local import status as st

TERMINAL = (st.SUCCEEDED, st.FAILED, st.STOPPED)


class NotRunning(KaitoError, LookupError):
    """No local Workspace by that name."""


@dataclass
class LocalWorkspace:
    wdir: Path
    launch: state.Launch

    @property
    def name(self) -> str:
        return self.launch.name

    @property
    def log_path(self) -> Path:
        return self.wdir / state.LOG

    def raw_status(self) -> dict[str, Any]:
        return state.read_json(self.wdir / state.STATUS) or {}

    def status(self) -> dict[str, Any]:
        """The Workspace status, corrected when the supervisor died without saying so."""
        data = copy.deepcopy(self.raw_status())
        if data.get("state") in TERMINAL or processes.supervisor_pid(self.wdir) is not None:
            return data
        msg = "the local supervisor process is gone (killed or the machine restarted); run `kaito up` again"
        ctype = st.JOB_STARTED if self.launch.mode == "tuning" else st.INFERENCE_READY
        st.set_condition(data, ctype, False, st.R_SUPERVISOR_GONE, msg)
        st.set_condition(data, st.WORKSPACE_SUCCEEDED, False, st.R_SUPERVISOR_GONE, msg)
        data["state"] = st.STOPPED
        return data

    def pids(self) -> list[int]:
        return processes.owned_pids(self.wdir)

    def age(self) -> str:
        try:
            created = datetime.strptime(self.launch.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return "?"
        secs = int(time.time() - created.timestamp())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if secs >= size:
                return f"{secs // size}{unit}"
        return f"{max(secs, 0)}s"

    def to_dict(self) -> dict[str, Any]:
        """A Workspace object like ``kubectl get workspace -o json`` shows, plus ``local``."""
        manifest: dict[str, Any] = {}
        try:
            import yaml

            manifest = yaml.safe_load((self.wdir / state.MANIFEST).read_text()) or {}
        except (OSError, ImportError, ValueError):
            pass
        manifest["status"] = self.status()
        manifest.setdefault("status", {}).setdefault("local", {}).update(
            endpoint=self.launch.endpoint, model=self.launch.model_name, mode=self.launch.mode,
            weights=self.launch.weights, output=self.launch.output or None, log=str(self.log_path),
            source=self.launch.source)
        return manifest


def get(name: str, root: Path | None = None) -> LocalWorkspace:
    wdir = state.workspace_dir(name, root)
    launch = state.read_launch(wdir)
    if launch is None:
        known = [p.name for p in state.list_workspaces(root)]
        hint = f"running here: {', '.join(known)}" if known else "none is running here (see `kaito ps`)"
        raise NotRunning(f"no local Workspace named {name!r}; {hint}")
    return LocalWorkspace(wdir, launch)


def all_workspaces(root: Path | None = None) -> list[LocalWorkspace]:
    out = []
    for wdir in state.list_workspaces(root):
        launch = state.read_launch(wdir)
        if launch is not None:
            out.append(LocalWorkspace(wdir, launch))
    return out


def down(ws: LocalWorkspace) -> list[int]:
    """Stop every process of ``ws`` and remove its state; return the pids that were stopped.

    The state goes only once every pid is gone (``processes.stop`` raises otherwise), so a
    Workspace that could not be stopped stays visible to ``kaito ps``.
    """
    pids = processes.stop(ws.wdir)
    shutil.rmtree(ws.wdir, ignore_errors=True)
    return pids
