"""Start a Workspace's supervisor, find the processes that belong to it, and stop them all.

The supervisor runs in its own session, so its process-group id is its pid and the runtime (and
anything the runtime forks) shares it. A pid read from a file is only trusted after
``/proc/<pid>/cmdline`` shows it is still ours: pids are reused, and ``kaito down`` must never
signal a stranger. Linux only (``/proc``), like the rest of local mode.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kaito_core.local import state

SUPERVISOR_MODULE = "kaito_core.local.supervisor"


def start_supervisor(wdir: Path) -> int:
    """Start the supervisor for ``wdir`` detached from this terminal; return its pid.

    The pid goes to ``supervisor.pid`` before this returns, so a reader never sees a Workspace
    without its supervisor (the supervisor itself only writes ``status.json``).
    """
    log = open(wdir / state.LOG, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen([sys.executable, "-m", SUPERVISOR_MODULE, str(wdir)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                cwd=str(wdir))
    finally:
        log.close()
    (wdir / state.SUPERVISOR_PID).write_text(f"{proc.pid}\n")
    # Until the child has exec'd, /proc/<pid>/cmdline is still ours, and a reader would take the
    # supervisor for a stranger (on a busy machine that window is long enough to be seen).
    deadline = time.monotonic() + 30.0
    while proc.poll() is None and SUPERVISOR_MODULE not in cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    # The Popen object is dropped on purpose: the supervisor outlives `kaito up`. Its exit is
    # reaped by init once we exit; within a long-lived caller (the demo, tests) a finished
    # supervisor may linger as a zombie, which `alive` treats as gone.
    return proc.pid


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process-group id) of ``pid``, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields after the last ')' are fixed.
    fields = raw[raw.rfind(")") + 2:].split()
    return fields[0], int(fields[2])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def alive(pid: int | None) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    if not pid:
        return False
    info = _stat(pid)
    if info is None:
        return False
    if info[0] == "Z":
        _reap(pid)
        return False
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def group_members(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None and info[1] == pgid and info[0] != "Z":
                out.append(int(entry.name))
    return sorted(out)


def supervisor_pid(wdir: Path) -> int | None:
    """The pid of ``wdir``'s supervisor when it is alive and really ours, else None."""
    try:
        pid = int((wdir / state.SUPERVISOR_PID).read_text().strip())
    except (OSError, ValueError):
        return None
    if not alive(pid):
        return None
    line = cmdline(pid)
    return pid if SUPERVISOR_MODULE in line and str(wdir) in line else None


def owned_pids(wdir: Path) -> list[int]:
    """Every live process that belongs to ``wdir``'s Workspace (supervisor, runtime, their children)."""
    pids: set[int] = set()
    sup = supervisor_pid(wdir)
    if sup is not None:
        pids.update(group_members(sup))
        pids.add(sup)
    data = state.read_json(wdir / state.STATUS) or {}
    child = (data.get("local") or {}).get("runtimePid")
    # A runtime whose supervisor vanished (it should have died with it: PDEATHSIG) is still
    # ours if its command line is the one we launched.
    launch = state.read_launch(wdir)
    if isinstance(child, int) and alive(child) and launch is not None and launch.command:
        if cmdline(child) == " ".join(launch.command).strip():
            pids.add(child)
    return sorted(p for p in pids if alive(p))


def stop(wdir: Path, grace_s: float = 15.0) -> list[int]:
    """Stop everything ``wdir``'s Workspace runs; return the pids that were running.

    SIGTERM to the supervisor (it stops the runtime gracefully), then SIGKILL to whatever is
    left of the process group. Raises :class:`RuntimeError` naming any pid that survives.
    """
    pids = owned_pids(wdir)
    if not pids:
        return []
    sup = supervisor_pid(wdir)
    targets = [sup] if sup is not None else pids
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    if sup is not None:
        try:
            os.killpg(sup, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    if left:
        raise RuntimeError(f"could not stop pid(s) {left} of {wdir.name}; stop them by hand (kill -9 {' '.join(map(str, left))})")
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
