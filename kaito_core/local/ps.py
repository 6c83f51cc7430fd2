"""What ``kaito ps`` shows: the Workspaces running here, with upstream's printer columns."""

from __future__ import annotations

from typing import Any, Sequence

from kaito_core.local import status as st
from kaito_core.local.workspaces import all_workspaces

HEADERS = ["NAME", "MODE", "PRESET", "ENDPOINT/OUTPUT", "RESOURCEREADY", "INFERENCEREADY", "JOBSTARTED",
           "WORKSPACESUCCEEDED", "STATE", "RESTARTS", "AGE"]


def table_lines(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns, two spaces apart (what ``kubectl get`` prints)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]


def ps_lines(wide: bool = False) -> list[str]:
    found = all_workspaces()
    if not found:
        return ["no Workspaces are running here; start one with `kaito up FILE`"]
    rows = []
    for w in found:
        s = w.status()
        rows.append([w.name, w.launch.mode, w.launch.preset, w.launch.endpoint or w.launch.output or "-",
                     st.condition_status(s, st.RESOURCE_READY), st.condition_status(s, st.INFERENCE_READY),
                     st.condition_status(s, st.JOB_STARTED), st.condition_status(s, st.WORKSPACE_SUCCEEDED),
                     s.get("state", ""), (s.get("local") or {}).get("restarts", 0), w.age()])
    # The columns of `kubectl get workspace` (upstream's printer columns), plus where to reach it.
    lines = table_lines(HEADERS, rows)
    for w in found:
        s = w.status()
        for cond in s.get("conditions") or []:
            if wide or (cond.get("status") != "True" and cond.get("reason") not in (st.R_JOB_RUNNING,)):
                if not wide and cond.get("type") == st.WORKSPACE_SUCCEEDED and w.launch.mode == "inference":
                    continue  # mirrors InferenceReady
                lines.append(f"{w.name}: {cond.get('type')}={cond.get('status')} {cond.get('reason')}: "
                             f"{cond.get('message')}")
    return lines
