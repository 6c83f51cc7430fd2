"""The ConfigMaps a Workspace names (``inference.config``, ``tuning.config``), read from its
namespace for the planner, and what a pass does while one is missing.

Upstream reads them the same way: ``EnsureConfigOrCopyFromDefault`` fails the inference (or
tuning) step when the named ConfigMap is absent, after the nodes were provisioned; the
webhook refuses a Workspace naming a ConfigMap that does not exist yet
("ConfigMap '<name>' specified in 'config' not found in namespace").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from kaito_core.errors import WorkspaceInvalid
from kaito_core.operator.kube import ApiError

CONFIGMAP_MISSING = "ConfigMapNotFound"


def config_names(ws: Any) -> list[tuple[str, str]]:
    """(section, ConfigMap name) for each ConfigMap the Workspace names."""
    out = []
    for section, spec in (("inference", ws.inference), ("tuning", ws.tuning)):
        name = getattr(spec, "config", None) if spec is not None else None
        if name:
            out.append((section, name))
    return out


def read_configmaps(kube: Any, ws: Any) -> tuple[dict[str, Any], list[str]]:
    """(ConfigMaps by name as API models, a problem line for each missing or unreadable one)."""
    from kaito_core.api.parse import parse_configmap

    found: dict[str, Any] = {}
    missing: list[str] = []
    for section, name in config_names(ws):
        try:
            raw = kube.get(api_version="v1", kind="ConfigMap", name=name, namespace=ws.namespace)
        except ApiError as exc:
            missing.append(f"{section}.config: ConfigMap {name!r} cannot be read in namespace "
                           f"{ws.namespace!r} ({exc}); the next pass tries again")
            continue
        if raw is None:
            missing.append(f"{section}.config: ConfigMap {name!r} not found in namespace {ws.namespace!r}; "
                           "create it there (the pods start once it exists)")
            continue
        try:
            found[name] = parse_configmap({"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": name, "namespace": ws.namespace},
                                           "data": dict(raw.get("data") or {})})
        except WorkspaceInvalid as exc:
            missing.append(f"{section}.config: ConfigMap {name!r}: " + "; ".join(str(e) for e in exc.errors))
    return found, missing


def hold_for_configmaps(plan: Any, missing: list[str], now: str,
                        previous: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """``plan`` with its StatefulSet/Job held back (a pod never runs without the user's settings;
    the nodes go ahead, they do not depend on the ConfigMap) and the workload's condition False
    with reason ``ConfigMapNotFound``."""
    workload = [o for o in plan.objects if o["kind"] in ("StatefulSet", "Job")]
    held = replace(plan, objects=[o for o in plan.objects if o not in workload], deferred=plan.deferred + workload)
    out = dict(plan.status)
    kind = "WorkspaceSucceeded" if plan.mode == "tuning" else "InferenceReady"
    message = "; ".join(missing)
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or []}.get(kind) or {}
    since = before.get("lastTransitionTime") if before.get("status") == "False" else None
    conditions = [dict(c) for c in out.get("conditions") or [] if c.get("type") != kind]
    conditions.append({"type": kind, "status": "False", "reason": CONFIGMAP_MISSING, "message": message,
                       "lastTransitionTime": since or now})
    out["conditions"] = conditions
    if out.get("state") in ("Ready", "Running", "Succeeded"):
        out["state"] = "NotReady"
    return held, out
