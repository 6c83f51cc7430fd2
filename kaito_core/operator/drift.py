"""Drift: what a live object no longer has of what the operator applied (issue 16, finding 6).

A controller owns the fields it sets: scaling the StatefulSet to 0, swapping its image,
switching the Service to LoadBalancer or editing the ConfigMap by hand are undone at the next
reconcile (``KAITO_DRIFT=revert``, the default), or only reported in the Workspace's
``ResourceDrifted`` condition when the admin chose ``report``. Fields the API server or other
controllers add (defaults, ``clusterIP``, ``status``, extra labels and annotations) are not
drift: the desired object must be *contained* in the live one. Lists must match item by item
(an added container, env var or port is drift). Jobs are not compared: their pod template is
immutable and a tuning Job is never re-run to undo an edit. No kopf import.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

# Parts of a desired object compared with the live one (metadata is ours only in part: labels
# and annotations are compared key by key, the rest is the server's).
COMPARED = ("spec", "data", "binaryData")
CONDITION = "ResourceDrifted"


def differences(desired: Mapping[str, Any], live: Mapping[str, Any], limit: int = 10) -> list[str]:
    """Paths (``spec.template.spec.containers[0].image``) where ``live`` lacks ``desired``."""
    out: list[str] = []
    for key in COMPARED:
        if key in desired:
            _diff(desired[key], live.get(key), key, out)
    meta, live_meta = desired.get("metadata") or {}, live.get("metadata") or {}
    for key in ("labels", "annotations"):
        _diff(meta.get(key) or {}, live_meta.get(key) or {}, f"metadata.{key}", out)
    return out[:limit]


def _diff(want: Any, have: Any, path: str, out: list[str]) -> None:
    if want == have:
        return  # equal subtrees (most of them): one C-level comparison, no walk
    if have is None and want in (False, 0, "", [], {}):
        return  # Go's omitempty: the server does not return zero values (empty args, port 0, false)
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            out.append(path)
            return
        for k, v in want.items():
            _diff(v, have.get(k), f"{path}.{k}", out)
        return
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            out.append(path)
            return
        for i, (w, h) in enumerate(zip(want, have)):
            _diff(w, h, f"{path}[{i}]", out)
        return
    if want != have and str(want) != str(have) and not same_quantity(want, have):
        out.append(path)


# The API server stores resource quantities in canonical form ("2048Mi" reads back as "2Gi",
# "0.5" as "500m"): compare their values, or every pass would see drift and patch again.
_QUANTITY = re.compile(r"([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?")
_SUFFIX = {"": 1, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def _quantity(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    m = _QUANTITY.fullmatch(str(value))
    if m is None:
        return None
    try:
        number = float(m.group(1))
    except ValueError:
        return None
    suffix = m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * 10 ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def same_quantity(want: Any, have: Any) -> bool:
    a, b = _quantity(want), _quantity(have)
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)


def describe(kind: str, name: str, paths: list[str], live: Mapping[str, Any]) -> str:
    """``StatefulSet/x: spec.replicas is 0; spec.template...image is 'evil:1'`` (values shown)."""
    shown = []
    for p in paths[:5]:
        value = _value_at(live, p)
        shown.append(f"{p} is {value!r}" if value is not _NONE else f"{p} changed")
    more = f" (+{len(paths) - 5} more)" if len(paths) > 5 else ""
    return f"{kind}/{name}: " + "; ".join(shown) + more


_NONE = object()


def _value_at(obj: Any, path: str) -> Any:
    cur = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            idx = int(part[1:-1])
            if not isinstance(cur, list) or idx >= len(cur):
                return _NONE
            cur = cur[idx]
        else:
            if not isinstance(cur, Mapping) or part not in cur:
                return _NONE
            cur = cur[part]
    if isinstance(cur, (dict, list)):
        return _NONE
    return cur


def drift_status(status: Mapping[str, Any], notes: list[str], actions: Mapping[str, str], mode: str,
                 now: str) -> dict[str, Any]:
    """``status`` + ``ResourceDrifted=True`` naming what was changed by hand; a drifted
    StatefulSet or Job is not Ready in this pass whatever its pods say (readiness is judged on
    what runs: a swapped image must not report Ready; after a revert the rollout decides)."""
    out = dict(status)
    verb = "reverted" if mode == "revert" else "left as found (KAITO_DRIFT=report)"
    conditions = [dict(c) for c in out.get("conditions") or [] if c.get("type") != CONDITION]
    conditions.append({"type": CONDITION, "status": "True", "reason": "ManualChange",
                       "message": f"changed by hand, {verb}: " + "; ".join(notes)[:900], "lastTransitionTime": now})
    workload = [k for k, v in actions.items() if v in ("drifted", "reverted") and k.split("/")[0] in ("StatefulSet", "Job")]
    if workload:
        for c in conditions:
            if c.get("type") in ("InferenceReady", "WorkspaceSucceeded") and c.get("status") == "True":
                c.update(status="False", reason="WorkloadDrifted", lastTransitionTime=now,
                         message=f"{', '.join(workload)} was changed by hand; not Ready until it runs what the "
                                 "Workspace asks for")
        if out.get("state") in ("Ready", "Running", "Succeeded"):
            out["state"] = "NotReady"
    out["conditions"] = conditions
    return out
