"""Waiting for what ``kaito up`` started: ``/health`` for inference, the job's end for tuning."""

from __future__ import annotations

import time
from typing import Any

from kaito_core.local import status as st
from kaito_core.local.steps import Printer, UpError
from kaito_core.local.workspaces import LocalWorkspace


def wait_inference(lw: LocalWorkspace, p: Printer, timeout_s: float) -> dict[str, Any]:
    """Until InferenceReady is True (returns the status) or the runtime crashed / timed out (UpError)."""
    start = time.monotonic()
    last_print = -10.0
    while True:
        status = lw.status()
        cond = st.condition(status, st.INFERENCE_READY) or {}
        elapsed = time.monotonic() - start
        if cond.get("status") == "True":
            p(f"  ready after {elapsed:.1f}s")
            return status
        if cond.get("reason") in (st.R_CRASHED, st.R_LOAD_FAILED) or status.get("state") == st.STOPPED:
            raise UpError(f"the runtime did not start: {cond.get('message', status.get('state'))}")
        if elapsed > timeout_s:
            raise UpError(f"the runtime is not ready after {timeout_s:.0f}s ({cond.get('message', '')}); it keeps "
                          f"loading in the background: follow it with `kaito ps` and `kaito logs {lw.name}`, "
                          f"or stop it with `kaito down {lw.name}`")
        if elapsed - last_print >= 5.0:
            p(f"  waiting for {lw.launch.endpoint}/health ... {elapsed:.0f}s ({cond.get('message', 'starting')})")
            last_print = elapsed
        time.sleep(0.25)


def wait_tuning(lw: LocalWorkspace, p: Printer, timeout_s: float | None) -> dict[str, Any]:
    """Stream the job's output until it succeeds (returns the status) or fails (UpError)."""
    start = time.monotonic()
    pos = 0
    while True:
        status = lw.status()
        try:
            with open(lw.log_path, "rb") as fh:
                fh.seek(pos)
                chunk = fh.read()
                pos += len(chunk)
            for line in chunk.decode("utf-8", "replace").splitlines():
                if line.strip():
                    p(f"  | {line.rstrip()[:200]}")
        except OSError:
            pass
        if status.get("state") == st.SUCCEEDED:
            return status
        if status.get("state") in (st.FAILED, st.STOPPED):
            cond = st.condition(status, st.WORKSPACE_SUCCEEDED) or st.condition(status, st.JOB_STARTED) or {}
            raise UpError(f"tuning failed: {cond.get('message', status.get('state'))}")
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise UpError(f"tuning has not finished after {timeout_s:.0f}s; it goes on in the background "
                          f"(`kaito ps`, `kaito logs {lw.name}`)")
        time.sleep(0.25)


def log_tail(lw: LocalWorkspace, n: int = 15) -> list[str]:
    try:
        lines = lw.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln[:200] for ln in lines[-n:]]


