"""Admission rules (kopf-free).

CREATE: the API's rules + the admin's policy (:class:`Policy`) + the one planner's verdict
(:func:`kaito_core.reconcile.plan_workspace` with the Workspace's ConfigMaps, as the operator
and ``kaito plan`` run it: sizing, a ConfigMap's TP larger than the node's GPUs, runtime rules
such as adapters on vLLM), so what admission accepts the operator can place.

UPDATE: like upstream's webhook (``workspace_validation.go`` ``validateUpdate``), only the immutable fields and the fields that changed are checked; an
update that leaves ``resource``/``inference``/``tuning`` and kaito's annotations alone (the
operator's own finalizer removal, labels, status, a Workspace being deleted) always passes,
even when the Workspace's preset plugin has gone or sizing no longer fits; a spec change is
refused for the planner problems it brings, not for those the old spec had. Defaulting =
upstream's defaults made explicit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

from kaito_core.api import parse_workspace, validate_workspace
from kaito_core.api.models import ANNOTATION_LOCAL_WEIGHTS, ANNOTATION_RUNTIME
from kaito_core.errors import MISSING, FieldError, WorkspaceInvalid

log = logging.getLogger("kaito.operator.admission")
SPEC_KEYS = ("resource", "inference", "tuning")
ANNOTATION_PROVISIONER = "kaito.sh/provisioner"


class Rejection(Exception):
    def __init__(self, message: str, code: int = 422):
        super().__init__(message)
        self.message, self.code = message, code


@dataclass(frozen=True)
class Policy:
    """What the cluster admin allows Workspace authors (chart values -> ``KAITO_*`` env).

    ``provisioner``: the operator's own provisioner (always allowed); ``allowed_provisioners``:
    the others a ``kaito.sh/provisioner`` annotation may pick. ``host_path``: hostPath volumes
    in adapters/tuning data; ``templates``: ``inference.template`` (a user pod spec);
    ``local_weights``: ``kaito.sh/use-local-weights`` (a hostPath under /opt/kaito/models).
    """

    provisioner: str = ""
    allowed_provisioners: tuple[str, ...] = ()
    host_path: bool = False
    templates: bool = False
    local_weights: bool = False

    @classmethod
    def from_settings(cls, settings: Any, provisioner: str = "") -> "Policy":
        """:param provisioner: the effective default (settings may leave it to the registry)."""
        return cls(provisioner=provisioner or getattr(settings, "provisioner", "") or "",
                   allowed_provisioners=tuple(getattr(settings, "allowed_provisioners", ()) or ()),
                   host_path=bool(getattr(settings, "allow_host_path", False)),
                   templates=bool(getattr(settings, "allow_templates", False)),
                   local_weights=bool(getattr(settings, "allow_local_weights", False)))

    def provisioner_allowed(self, name: str) -> bool:
        return name == self.provisioner or name in self.allowed_provisioners


PERMISSIVE = Policy(host_path=True, templates=True, local_weights=True)


def _clean(body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if body is None:
        return None
    return {k: v for k, v in dict(body).items() if k != "status"}


def _kaito_annotations(body: Mapping[str, Any] | None) -> dict[str, Any]:
    meta = (body or {}).get("metadata") or {}
    return {k: v for k, v in dict(meta.get("annotations") or {}).items() if k.startswith("kaito.sh/")}


def changed_paths(new: Any, old: Any, path: str = "") -> list[str]:
    """Dotted paths (``inference.adapters[1].strength``) where ``new`` differs from ``old``:
    the leaves that differ, or the container when lists change length or a type changes."""
    if isinstance(new, Mapping) and isinstance(old, Mapping):
        out: list[str] = []
        for key in sorted(set(new) | set(old), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in new or key not in old:
                out.append(sub)
            else:
                out += changed_paths(new[key], old[key], sub)
        return out
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        out = []
        for i, (a, b) in enumerate(zip(new, old)):
            out += changed_paths(a, b, f"{path}[{i}]")
        return out
    return [] if new == old else [path or "<root>"]


def _touches(error_path: str, changed: list[str]) -> bool:
    """An error at ``error_path`` concerns a change when one is inside the other."""
    for c in changed:
        if error_path == c or error_path.startswith((c + ".", c + "[")) or c.startswith((error_path + ".",
                                                                                      error_path + "[")):
            return True
    return False


def review(body: Mapping[str, Any], *, old: Mapping[str, Any] | None, registry: Any,
           policy: Policy = PERMISSIVE, kube: Any = None) -> list[str]:
    """Warnings for an acceptable Workspace; raises :class:`Rejection` naming every bad field.
    ``old`` is set on UPDATE (see the module docstring for what an update checks). ``kube``: a
    client to read the Workspace's ConfigMaps with (None: plan without them)."""
    if old is not None:
        return _review_update(body, old, registry, policy, kube)
    try:
        ws = parse_workspace(_clean(body))
    except WorkspaceInvalid as exc:
        raise Rejection(_text(ws_name(body), [str(e) for e in exc.errors])) from None
    configmaps = _configmaps(ws, kube)
    result = validate_workspace(ws, registry=registry, configmaps=configmaps)
    problems = [str(e) for e in [*result.errors, *policy_problems(ws, policy)]]
    if not problems:
        problems = plan_problems(ws, registry, policy, configmaps)
    if problems:
        raise Rejection(_text(ws.name, problems))
    return [str(w) for w in result.warnings]


def _review_update(body: Mapping[str, Any], old: Mapping[str, Any], registry: Any, policy: Policy,
                   kube: Any = None) -> list[str]:
    if ((body.get("metadata") or {}).get("deletionTimestamp")):
        return []  # being deleted: finalizer removal and status must never be blocked
    new_spec = {k: body.get(k) for k in SPEC_KEYS if body.get(k) is not None}
    old_spec = {k: old.get(k) for k in SPEC_KEYS if old.get(k) is not None}
    changed = changed_paths(new_spec, old_spec)
    new_ann, old_ann = _kaito_annotations(body), _kaito_annotations(old)
    changed_ann = sorted(k for k in set(new_ann) | set(old_ann) if new_ann.get(k) != old_ann.get(k))
    if not changed and not changed_ann:
        return []  # metadata, labels, finalizers, status: always allowed
    try:
        ws = parse_workspace(_clean(body))
    except WorkspaceInvalid as exc:
        raise Rejection(_text(ws_name(body), [str(e) for e in exc.errors])) from None
    try:
        previous = parse_workspace(_clean(old))
    except WorkspaceInvalid:
        previous = None  # an old object we cannot read must not block fixing it
    result = validate_workspace(ws, registry=registry, old=previous)
    paths = changed + [f"metadata.annotations[{k}]" for k in changed_ann]
    if ANNOTATION_PROVISIONER in changed_ann:
        # the nodes were made by the provisioner the Workspace had; another one would neither
        # see nor release them
        was = old_ann.get(ANNOTATION_PROVISIONER) or "the operator's default"
        raise Rejection(_text(ws_name(body), [f"metadata.annotations[{ANNOTATION_PROVISIONER}]: is immutable (was "
                                              f"{was!r}); delete and re-create the Workspace to change it"]))
    problems = [str(e) for e in [*result.errors, *policy_problems(ws, policy)]
                if "is immutable" in e.message or "cannot switch" in e.message or _touches(e.path, paths)]
    if not problems and previous is not None:
        # The plan's verdict, but only what this change brings: a problem the old spec had too
        # (a plugin since removed, a ConfigMap edited since) is not held against the update.
        configmaps = _configmaps(ws, kube)
        before = set(plan_problems(previous, registry, policy, configmaps))
        problems = [p for p in plan_problems(ws, registry, policy, configmaps) if p not in before]
    if problems:
        raise Rejection(_text(ws.name, problems))
    return [str(w) for w in result.warnings if _touches(w.path, paths)]


def _configmaps(ws: Any, kube: Any) -> dict[str, Any] | None:
    """The Workspace's ConfigMaps that can be read now (None without a client). A missing one is
    not refused here: validation warns, and the operator reports ``ConfigMapNotFound`` until it
    exists (GitOps tools may apply the Workspace first)."""
    if kube is None:
        return None
    from kaito_core.operator.configmaps import read_configmaps

    try:
        found, _ = read_configmaps(kube, ws)
    except Exception:  # noqa: BLE001 - an unreachable API server must not block admission
        return None
    return found


def _provisioner(ws: Any, registry: Any, policy: Policy) -> Any:
    """The provisioner the operator would plan with (None when it is not installed: the operator
    reports that itself)."""
    name = ws.annotations.get(ANNOTATION_PROVISIONER) or policy.provisioner
    if not name:
        name = "karpenter" if "karpenter" in registry.provisioners else "byo"
    return registry.provisioners.get(name)


def plan_problems(ws: Any, registry: Any, policy: Policy, configmaps: Mapping[str, Any] | None) -> list[str]:
    """What the one planner (:func:`kaito_core.reconcile.plan_workspace`, as ``kaito plan`` and
    the operator run it) refuses, each naming its field: refuse now rather than report Failed
    later. A provisioner's own failure (its settings, its cloud) is the operator's to report,
    not the Workspace author's to fix, and does not refuse."""
    from kaito_core.reconcile import plan_workspace

    prov = _provisioner(ws, registry, policy)
    if prov is None:
        return []
    try:
        p = plan_workspace(ws, registry=registry, provisioner=prov, configmaps=configmaps)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not turn admission into a 500
        log.warning("admission: planning %s/%s failed (%s: %s); the operator will report it",
                    ws.namespace, ws.name, type(exc).__name__, exc)
        return []
    if not p.errors:
        return []
    reasons = {c.get("reason") for c in p.status.get("conditions") or []}
    if "ProvisioningError" in reasons:
        return []
    return [_with_path(ws, e) for e in p.errors]


def _with_path(ws: Any, error: str) -> str:
    """``error`` led by the field it concerns (the planner words ConfigMap problems by key)."""
    if error.startswith(("resource", "inference", "tuning", "metadata", "spec")):
        return error
    if error.startswith("ConfigMap "):
        section = "tuning" if ws.tuning is not None else "inference"
        return f"{section}.config: {error}"
    if "GiB" in error or "instance" in error:
        return f"resource.instanceType: {error}"
    return error


def policy_problems(ws: Any, policy: Policy) -> list[FieldError]:
    """What the admin's :class:`Policy` does not allow, each with the reason and the fix."""
    out = []
    chosen = ws.annotations.get(ANNOTATION_PROVISIONER)
    if chosen is not None and not policy.provisioner_allowed(chosen):
        allowed = sorted({policy.provisioner, *policy.allowed_provisioners} - {""})
        out.append(FieldError(f"metadata.annotations[{ANNOTATION_PROVISIONER}]", chosen,
                              f"is not allowed by the cluster admin (allowed: {', '.join(allowed) or 'the default'})",
                              "remove the annotation, or ask the admin to add it to the chart value "
                              "allowedProvisioners"))
    if not policy.templates and ws.inference is not None and ws.inference.template is not None:
        out.append(FieldError("inference.template", MISSING, "custom pod templates are disabled by the cluster "
                              "admin (they run any pod spec)", "use inference.preset, or ask the admin to set "
                              "the chart value admission.allowTemplates=true"))
    if not policy.host_path:
        for path in host_path_fields(ws):
            out.append(FieldError(path, MISSING, "hostPath volumes are disabled by the cluster admin (they expose "
                                  "the node's files and fail Pod Security 'baseline')", "use a PersistentVolumeClaim, "
                                  "or ask the admin to set the chart value admission.allowHostPath=true"))
    if not policy.local_weights and ws.annotations.get(ANNOTATION_LOCAL_WEIGHTS, "").lower() == "true":
        out.append(FieldError(f"metadata.annotations[{ANNOTATION_LOCAL_WEIGHTS}]", "true",
                              "node-local weights are disabled by the cluster admin (a hostPath mount of "
                              "/opt/kaito/models)", "remove the annotation, or ask the admin to set the chart "
                              "value admission.allowLocalWeights=true"))
    return out


def host_path_fields(ws: Any) -> list[str]:
    """The fields of ``ws`` that mount a hostPath volume."""
    out = []
    for i, ad in enumerate((ws.inference.adapters or []) if ws.inference is not None else []):
        if isinstance(ad.source.volume_source, Mapping) and "hostPath" in ad.source.volume_source:
            out.append(f"inference.adapters[{i}].source.volumeSource.hostPath")
    if ws.tuning is not None:
        for section, spec in (("input", ws.tuning.input), ("output", ws.tuning.output)):
            vs = getattr(spec, "volume_source", None) if spec is not None else None
            if isinstance(vs, Mapping) and "hostPath" in vs:
                out.append(f"tuning.{section}.volumeSource.hostPath")
    template = ws.inference.template if ws.inference is not None else None
    pod_spec = template.get("spec") if isinstance(template, Mapping) else None
    volumes = pod_spec.get("volumes") if isinstance(pod_spec, Mapping) else None
    if isinstance(volumes, list):  # a template of another shape is named by validation
        for j, vol in enumerate(volumes):
            if isinstance(vol, Mapping) and "hostPath" in vol:
                out.append(f"inference.template.spec.volumes[{j}].hostPath")
    return out


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
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return name if isinstance(name, str) and name else "<unnamed>"


def _text(name: str, problems: list[str]) -> str:
    return f"Workspace {name!r} is invalid: " + "; ".join(problems)
