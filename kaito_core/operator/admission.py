"""Admission rules (kopf-free): validation = the API's rules + immutability + the GPU-memory
check against the instance type; defaulting = upstream's defaults made explicit."""

from __future__ import annotations

from typing import Any, Mapping

from kaito_core.api import parse_workspace, validate_workspace
from kaito_core.api.models import ANNOTATION_RUNTIME
from kaito_core.errors import WorkspaceInvalid


class Rejection(Exception):
    def __init__(self, message: str, code: int = 422):
        super().__init__(message)
        self.message, self.code = message, code


def _clean(body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if body is None:
        return None
    raw = {k: v for k, v in dict(body).items() if k != "status"}
    return raw


def review(body: Mapping[str, Any], *, old: Mapping[str, Any] | None, registry: Any) -> list[str]:
    """Warnings for an acceptable Workspace; raises :class:`Rejection` naming every bad field."""
    try:
        ws = parse_workspace(_clean(body))
    except WorkspaceInvalid as exc:
        raise Rejection(_text(ws_name(body), [str(e) for e in exc.errors])) from None
    previous = None
    if old:
        try:
            previous = parse_workspace(_clean(old))
        except WorkspaceInvalid:
            previous = None  # an old object we cannot read must not block fixing it
    result = validate_workspace(ws, registry=registry, old=previous)
    problems = [str(e) for e in result.errors]
    if not problems and ws.preset_name and not ws.bypass_resource_checks \
            and ws.resource is not None and ws.resource.instance_type in registry.instance_types:
        # Sizing's verdict on the named instance type (weights + KV cache + overhead), the
        # same the operator would reach: refuse now rather than report Failed later.
        from kaito_core.reconcile.inputs import resolve

        inputs = resolve(ws, registry)
        if inputs.requirement is not None:
            problems += [f"resource.instanceType: {e}" for e in inputs.requirement.errors]
    if problems:
        raise Rejection(_text(ws.name, problems))
    return [str(w) for w in result.warnings]


def defaults(body: Mapping[str, Any], *, registry: Any, creating: bool) -> dict[str, Any]:
    """A merge-style patch of the defaults to add (empty when nothing to add)."""
    patch: dict[str, Any] = {}
    try:
        ws = parse_workspace(_clean(body))
    except WorkspaceInvalid:
        return patch  # validation will refuse it with the field messages
    if not creating:
        return patch
    if ws.inference is not None and ws.preset_name and ws.runtime_annotation is None:
        try:
            preset = registry.get_preset(ws.preset_name)
        except LookupError:
            preset = None
        if preset is not None:
            patch.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION_RUNTIME] = preset.default_runtime
    if ws.resource is not None and ws.resource.count is None and ws.tuning is None:
        patch["resource"] = {"count": 1}  # upstream's CRD default
    return patch


def ws_name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") if isinstance(body, Mapping) else None
    return (meta or {}).get("name") or "<unnamed>"


def _text(name: str, problems: list[str]) -> str:
    return f"Workspace {name!r} is invalid: " + "; ".join(problems)
