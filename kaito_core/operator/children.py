"""Applying one desired child object (ConfigMap, Service, StatefulSet, Job): create, patch what
differs from our last applied version or what was changed by hand, adopt upstream KAITO's
objects for the same Workspace, never touch another owner's. No kopf import.
"""

from __future__ import annotations

from typing import Any, Mapping

from kaito_core.operator.drift import describe, differences
from kaito_core.operator.kube import ApiError, KubeClient
from kaito_core.reconcile import names


def _apiv(obj: Mapping[str, Any]) -> tuple[str, str, str, str | None]:
    meta = obj.get("metadata") or {}
    return obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace")


def object_digest(obj: Mapping[str, Any]) -> str:
    """The ``kaito.sh/object-hash`` of a desired object (before the annotation is added)."""
    return names.stable_hash(dict(obj))


def apply_object(kube: KubeClient, obj: Mapping[str, Any], uid: str, *, drift: str = "revert",
                 notes: list[str] | None = None, digest: str | None = None) -> str:
    """Create ``obj`` if absent, patch it if our last applied version differs or someone changed
    it by hand (``drift="report"``: only note it), recreate a Job whose revision changed (a Job's
    pod template is immutable), adopt what upstream KAITO made for the same Workspace. Never
    touches an object of the same name that another owner made. Returns what happened;
    ``notes`` collects a line per drifted object."""
    # Copies of the levels written here only (the rest is shared with the Plan, never mutated:
    # a deep copy of a StatefulSet took ~10% of a pass).
    desired = dict(obj)
    desired["metadata"] = dict(desired["metadata"])
    desired["metadata"]["annotations"] = {**(desired["metadata"].get("annotations") or {}),
                                          names.ANNOTATION_HASH: digest or object_digest(obj)}
    digest = desired["metadata"]["annotations"][names.ANNOTATION_HASH]
    api_version, kind, name, namespace = _apiv(desired)
    absent = getattr(kube, "probably_absent", None)
    if absent is not None and absent(api_version=api_version, kind=kind, name=name, namespace=namespace):
        current = None  # the watch cache has not seen it: create first (409: read it below)
    else:
        current = kube.get(api_version=api_version, kind=kind, name=name, namespace=namespace)
    if current is None:
        try:
            kube.create(desired)
            return "created"
        except ApiError as exc:
            if exc.status != 409:
                raise
            current = kube.get(api_version=api_version, kind=kind, name=name, namespace=namespace)
            if current is None:
                return "pending"  # being deleted (e.g. a Job being replaced): next pass
    meta = current.get("metadata") or {}
    adopting = False
    if (meta.get("labels") or {}).get(names.LABEL_UID) != uid:
        verdict = adoptable(current, desired, uid)
        if verdict:
            if notes is not None:
                notes.append(f"{kind}/{name}: {verdict}")
            return "conflict"
        adopting = True
    if meta.get("deletionTimestamp"):
        return "pending"
    annotations = meta.get("annotations") or {}
    action = "adopted" if adopting else "updated"
    if annotations.get(names.ANNOTATION_HASH) == digest and not adopting:
        if kind == "Job":
            return "unchanged"  # a Job's template is immutable; an adopted Job keeps upstream's
        paths = differences(desired, current)
        if not paths:
            return "unchanged"
        if notes is not None:
            notes.append(describe(kind, name, paths, current))
        if drift == "report":
            return "drifted"
        action = "reverted"
    elif kind == "Job" and not adopting:
        want = desired["metadata"]["annotations"].get(names.ANNOTATION_REVISION)
        if annotations.get(names.ANNOTATION_REVISION) != want:
            kube.delete(api_version=api_version, kind=kind, name=name, namespace=namespace)
            return "recreating"
        return "unchanged"
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "status")}
    body["metadata"] = {k: desired["metadata"][k] for k in ("labels", "annotations", "ownerReferences")
                        if k in desired["metadata"]}
    if kind == "Job":
        body.pop("spec", None)  # adopting a Job: its pod template is immutable; take ownership only
    kube.patch(api_version=api_version, kind=kind, name=name, namespace=namespace, patch=body)
    return action


def adoptable(current: Mapping[str, Any], desired: Mapping[str, Any], uid: str) -> str:
    """Why ``current`` (same name, without our uid label) may NOT be adopted; "" when it may.

    Upstream KAITO (v0.12) labels its Service/StatefulSet/Job ``kaito.sh/workspace: <name>``,
    owns them by a controller ownerReference to the Workspace (same object, same uid, after a
    migration: the CRD is the same) and selects pods by ``kaito.sh/workspace`` as we do."""
    meta = current.get("metadata") or {}
    want = (desired.get("metadata") or {}).get("labels") or {}
    if (meta.get("labels") or {}).get(names.LABEL_WORKSPACE) != want.get(names.LABEL_WORKSPACE):
        return "exists and is not owned by this Workspace; rename or delete it"
    controllers = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if any(o.get("uid") != uid or o.get("kind") != "Workspace" for o in controllers):
        return "exists and is controlled by another object; delete it to let this Workspace create its own"
    if not controllers and names.LABEL_UID in (meta.get("labels") or {}):
        return "belongs to another Workspace of the same name (a different uid); delete it"
    selector = ((current.get("spec") or {}).get("selector"))
    wanted = ((desired.get("spec") or {}).get("selector"))
    if current.get("kind") == "StatefulSet" and selector != wanted:
        return (f"was made by upstream KAITO with the pod selector {selector!r} (immutable), not {wanted!r}; "
                "delete the StatefulSet (its pods restart) to let kaito create its own")
    return ""
