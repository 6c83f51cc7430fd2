"""The process that keeps one local Workspace running: ``python -m kaito_core.local.supervisor DIR``.

``kaito up`` starts it in a new session (its own process group), so ``kaito down`` can end it
and everything under it at once. It plays the part the kubelet and the operator play in a
cluster:

- inference: starts the runtime, polls ``/health``, and writes ``InferenceReady``. When the
  runtime exits it is restarted with exponential backoff (1 s, 2 s, 4 s ... capped, reset after
  a minute of health), and until then ``InferenceReady`` is False with the exit code and the last
  lines of output. Upstream users asked for exactly this: a crash-looping pod must not look
  ready (kaito-project/kaito#931).
- tuning: runs the job once (upstream's Job has ``restartPolicy: Never``), writes ``JobStarted``
  then ``WorkspaceSucceeded`` True or False, and exits.

The child gets ``PR_SET_PDEATHSIG`` so it dies with the supervisor even on SIGKILL.
Standard library only.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kaito_core.local import state
from kaito_core.local import status as st

HEALTH_INTERVAL_S = 0.5  # how often a starting runtime's /health is asked, and exits are noticed
READY_HEALTH_INTERVAL_S = 5.0  # once ready: a health check every 5 s (like a readiness probe)
HEALTHY_RESET_S = 60.0  # a runtime healthy this long starts the backoff again from the base
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def tail_lines(path: Path, n: int = 3, max_bytes: int = 8192) -> list[str]:
    """The last ``n`` non-empty lines of a log (kaito's own event lines left out)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    # kaito's own event lines and the health checks' access-log lines say nothing about a crash.
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith("[kaito ") and '"GET /health' not in ln]
    return [ln[:300] for ln in lines[-n:]]


def health(url: str, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of the runtime's /health; (0, {}) when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own loopback URL
            return resp.status, _json(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


class Supervisor:
    def __init__(self, wdir: Path):
        self.wdir = wdir
        launch = state.read_launch(wdir)
        if launch is None:
            raise SystemExit(f"{wdir}: no {state.LAUNCH}; start workspaces with `kaito up`")
        self.launch = launch
        self.status: dict[str, Any] = state.read_json(wdir / state.STATUS) or st.new_status(launch.mode, "localhost")
        self.stop = threading.Event()
        self.child: subprocess.Popen | None = None
        self.log_fd = os.open(wdir / state.LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    # -- bookkeeping ---------------------------------------------------------------------

    def event(self, text: str) -> None:
        os.write(self.log_fd, f"[kaito {time.strftime('%H:%M:%S')}] {text}\n".encode())

    def save(self) -> None:
        local = self.status.setdefault("local", {})
        local["supervisorPid"] = os.getpid()
        local["runtimePid"] = self.child.pid if self.child is not None and self.child.poll() is None else None
        state.write_json_atomic(self.wdir / state.STATUS, self.status)

    def set(self, ctype: str, value: bool | None, reason: str, message: str, state_: str | None = None) -> None:
        changed = st.set_condition(self.status, ctype, value, reason, message)
        if ctype == st.INFERENCE_READY:
            # As the reconciler does: an inference Workspace "succeeds" while it serves.
            changed |= st.set_condition(self.status, st.WORKSPACE_SUCCEEDED, value,
                                        st.R_JOB_DONE if value else reason,
                                        "the model is being served" if value else message)
        if state_ is not None and self.status.get("state") != state_:
            self.status["state"] = state_
            changed = True
        if changed:
            self.save()

    def start_child(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(self.launch.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.child = subprocess.Popen(self.launch.command, stdin=subprocess.DEVNULL, stdout=self.log_fd,
                                      stderr=subprocess.STDOUT, env=env, cwd=str(self.wdir),
                                      preexec_fn=_die_with_parent, close_fds=True)
        self.event(f"started pid {self.child.pid}: {' '.join(self.launch.command)}")
        return self.child

    def stop_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        self.event(f"stopping pid {child.pid}")
        child.terminate()
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.stop.set()

    # -- the two modes -------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.status.setdefault("local", {})["restarts"] = 0
        self.save()
        try:
            return self.serve() if self.launch.mode == "inference" else self.tune()
        finally:
            self.stop_child()
            self.save()
            os.close(self.log_fd)

    def serve(self) -> int:
        url = f"{self.launch.endpoint}/health"
        failures = 0
        while not self.stop.is_set():
            child = self.start_child()
            started = time.monotonic()
            self.set(st.INFERENCE_READY, False, st.R_LOADING,
                     f"runtime pid {child.pid} is loading the model", st.PENDING if failures == 0 else st.NOT_READY)
            ready_at: float | None = None
            load_error: str | None = None
            checked = 0.0
            while child.poll() is None and not self.stop.is_set():
                if ready_at is not None and time.monotonic() - checked < READY_HEALTH_INTERVAL_S:
                    self.stop.wait(HEALTH_INTERVAL_S)
                    continue
                checked = time.monotonic()
                code, body = health(url)
                if code == 503 and body.get("status") == "Failed":
                    # The server is up but the model will never load: like a failing liveness
                    # probe, stop it and start again (after the backoff) in case it was transient.
                    load_error = str(body.get("error") or "unknown error")
                    self.event(f"the runtime could not load the model: {load_error}")
                    self.stop_child()
                    break
                if code == 200:
                    if ready_at is None:
                        ready_at = time.monotonic()
                        self.event(f"ready after {ready_at - started:.1f}s: {self.launch.endpoint}")
                    self.set(st.INFERENCE_READY, True, st.R_HEALTHY,
                             f"{url} answers 200 (runtime pid {child.pid})", st.READY)
                elif ready_at is not None:
                    self.set(st.INFERENCE_READY, False, st.R_UNHEALTHY,
                             f"{url} stopped answering 200 (runtime pid {child.pid} is still running)", st.NOT_READY)
                if ready_at is not None and time.monotonic() - ready_at > HEALTHY_RESET_S:
                    failures = 0
                self.stop.wait(HEALTH_INTERVAL_S)
            if self.stop.is_set():
                break
            rc = child.wait()
            failures += 1
            self.status["local"]["restarts"] = self.status["local"].get("restarts", 0) + 1
            restarts = self.status["local"]["restarts"]
            delay = min(self.launch.max_backoff_s, self.launch.backoff_s * 2 ** (failures - 1))
            ran = time.monotonic() - started
            self.status["local"]["lastExit"] = {"code": rc, "afterSeconds": round(ran, 1), "at": st.now_rfc3339()}
            if load_error is not None:
                what, reason = f"could not load the model: {load_error}", st.R_LOAD_FAILED
            else:
                last = " | ".join(tail_lines(self.wdir / state.LOG)) or "no output"
                what, reason = f"{describe_exit(rc)} after {ran:.1f}s (last output: {last})", st.R_CRASHED
            self.event(f"runtime pid {child.pid} {what if load_error else describe_exit(rc)}; "
                       f"restarting in {delay:g}s (restart {restarts})")
            self.set(st.INFERENCE_READY, False, reason,
                     f"the runtime {what}; restart {restarts} in {delay:g}s; see `kaito logs {self.launch.name}`",
                     st.NOT_READY)
            self.stop.wait(delay)
        self.set(st.INFERENCE_READY, False, st.R_STOPPING, "kaito down: the runtime was stopped", st.STOPPED)
        return 0

    def tune(self) -> int:
        child = self.start_child()
        started = time.monotonic()
        self.set(st.JOB_STARTED, True, st.R_JOB_STARTED, f"tuning process pid {child.pid} is running", st.RUNNING)
        self.set(st.WORKSPACE_SUCCEEDED, False, st.R_JOB_RUNNING, "the tuning job has not finished yet")
        while child.poll() is None and not self.stop.is_set():
            self.stop.wait(HEALTH_INTERVAL_S)
        if self.stop.is_set() and child.poll() is None:
            self.stop_child()
            self.set(st.WORKSPACE_SUCCEEDED, False, st.R_STOPPING, "kaito down stopped the tuning job", st.FAILED)
            return 1
        rc = child.wait()
        ran = time.monotonic() - started
        self.status.setdefault("local", {})["lastExit"] = {"code": rc, "afterSeconds": round(ran, 1),
                                                           "at": st.now_rfc3339()}
        if rc == 0:
            self.event(f"tuning finished in {ran:.1f}s; adapter at {self.launch.output}")
            self.set(st.WORKSPACE_SUCCEEDED, True, st.R_JOB_DONE,
                     f"the adapter was written to {self.launch.output} in {ran:.1f}s", st.SUCCEEDED)
            return 0
        last = " | ".join(tail_lines(self.wdir / state.LOG)) or "no output"
        self.event(f"tuning process {describe_exit(rc)} after {ran:.1f}s")
        self.set(st.WORKSPACE_SUCCEEDED, False, st.R_JOB_FAILED,
                 f"the tuning process {describe_exit(rc)} after {ran:.1f}s (last output: {last}); "
                 f"see `kaito logs {self.launch.name}`", st.FAILED)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kaito_core.local.supervisor STATE_DIR", file=sys.stderr)
        return 2
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
