"""The operator's Prometheus metrics (``KAITO_METRICS_PORT``, path ``/metrics``; 0: no server).

prometheus-client (the ``operator`` extra) is imported when :func:`serve` or a recorder first
runs, so ``kaito operator --help`` stays light.

- ``kaito_reconcile_total{trigger}``: passes, by what started them: ``create``, ``update``,
  ``resume`` (operator start), ``event`` (a child, pod, node or node claim changed),
  ``resync`` (the periodic re-check), ``delete``.
- ``kaito_reconcile_errors_total{reason}``: failed passes and failed steps inside a pass:
  ``ApplyFailed`` (the API server refused a child), ``ProvisioningError`` (the provisioner
  raised), ``ReleaseFailed`` (delete), or the exception's class name.
- ``kaito_reconcile_duration_seconds{trigger}``: histogram of one pass (observe, plan, apply).
- ``kaito_workspaces{state}``: Workspaces this operator saw last in each ``status.state``.
- ``kaito_watch_wakeups_total{kind}``: watch events that woke a Workspace's reconcile.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_metrics: dict[str, Any] = {}
_states: dict[str, str] = {}
STATES = ("Pending", "Ready", "NotReady", "Running", "Succeeded", "Failed")


def _m() -> dict[str, Any]:
    with _lock:
        if not _metrics:
            from prometheus_client import Counter, Gauge, Histogram

            _metrics["total"] = Counter("kaito_reconcile", "Workspace reconcile passes, by trigger", ["trigger"])
            _metrics["errors"] = Counter("kaito_reconcile_errors", "Failed reconcile passes or steps, by reason",
                                         ["reason"])
            _metrics["duration"] = Histogram("kaito_reconcile_duration_seconds", "Duration of one reconcile pass",
                                             ["trigger"], buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
            _metrics["workspaces"] = Gauge("kaito_workspaces", "Workspaces by status.state", ["state"])
            _metrics["wakeups"] = Counter("kaito_watch_wakeups", "Watch events that woke a Workspace's reconcile, "
                                          "by kind", ["kind"])
            for state in STATES:
                _metrics["workspaces"].labels(state=state).set(0)
        return _metrics


def serve(port: int, addr: str = "0.0.0.0") -> Any:
    """Start the /metrics HTTP server in a daemon thread (prometheus-client's own server)."""
    from prometheus_client import start_http_server

    _m()
    return start_http_server(port, addr=addr)


def reconciled(trigger: str, seconds: float) -> None:
    m = _m()
    m["total"].labels(trigger=trigger).inc()
    m["duration"].labels(trigger=trigger).observe(seconds)


def error(reason: str) -> None:
    _m()["errors"].labels(reason=reason).inc()


def woke(kind: str) -> None:
    _m()["wakeups"].labels(kind=kind).inc()


def workspace_state(key: str, state: str | None) -> None:
    """Record the Workspace ``key``'s state (None: it is gone) and refresh the gauge."""
    m = _m()
    with _lock:
        if state is None:
            _states.pop(key, None)
        else:
            _states[key] = state
        counts = {s: 0 for s in STATES}
        for s in _states.values():
            counts[s] = counts.get(s, 0) + 1
    for s, n in counts.items():
        m["workspaces"].labels(state=s).set(n)
