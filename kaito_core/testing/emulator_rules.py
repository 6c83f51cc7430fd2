"""What the API emulator (:mod:`kaito_core.testing.emulator`) checks and transforms, without I/O:
patch formats, label/field selectors, object-metadata validation, immutable fields and the
status-subresource rules of kube-apiserver.

Every rule cites the upstream code it follows (kubernetes/kubernetes, ``pkg/registry/**`` and
``staging/src/k8s.io/apiserver/**``), so a test that passes here fails for the same reason as
against a real cluster.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Mapping


class ApiStatus(Exception):
    """An answer other than 2xx, rendered as a ``v1 Status`` (what clients parse)."""

    def __init__(self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = dict(details or {})

    def body(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiStatus:
    """422 Invalid with ``details.causes`` (apimachinery ``errors.NewInvalid``): causes are
    (reason, field, message), e.g. ("FieldValueInvalid", "spec.replicas", "Invalid value: ...")."""
    qualified = f"{kind}.{group}" if group else kind
    text = ", ".join(f"{field}: {message}" for _, field, message in causes)
    return ApiStatus(422, "Invalid", f'{qualified} "{name}" is invalid: [{text}]',
                     {"name": name, "group": group, "kind": kind,
                      "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes]})


# -- patches ----------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge, ``null`` removes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# Lists that strategic merge patch merges by a key (k8s.io/api struct tags ``patchMergeKey``);
# every other list is replaced, as in a merge patch.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
               "volumeMounts": "mountPath", "ports": "containerPort", "conditions": "type",
               "ownerReferences": "uid", "imagePullSecrets": "name", "tolerations": "key"}


def strategic_merge_patch(target: Any, patch: Any, key: str = "") -> Any:
    """Strategic merge patch for the lists kaito's objects use (``patchMergeKey`` above);
    ``$patch: delete`` and the other directives are not supported (422)."""
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise ApiStatus(422, "Invalid", f"strategic merge patch directives are not supported by the emulator: "
                                            f"{sorted(k for k in patch if k.startswith('$'))}")
        out = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge_patch(out.get(k), v, k)
        return out
    merge_key = _MERGE_KEYS.get(key)
    if isinstance(patch, list) and merge_key and isinstance(target, list) \
            and all(isinstance(i, dict) and merge_key in i for i in patch + target):
        merged = [dict(i) for i in target]
        index = {i[merge_key]: n for n, i in enumerate(merged)}
        for item in patch:
            if item[merge_key] in index:
                merged[index[item[merge_key]]] = strategic_merge_patch(merged[index[item[merge_key]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiStatus(400, "BadRequest", f"JSON patch path {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiStatus(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                            f"JSON patch path {path!r} does not exist")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch. A failed ``test`` answers 422, as apiserver's jsonPatcher does
    (kopf relies on it: its finalizer patches test ``/metadata/resourceVersion``)."""
    if not isinstance(ops, list):
        raise ApiStatus(400, "BadRequest", "a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        parts = _pointer(path)
        if kind == "test":
            if _walk(doc, parts, path) != op.get("value"):
                raise ApiStatus(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                                f"testing value {path} failed")
            continue
        if kind in ("move", "copy"):
            value = copy.deepcopy(_walk(doc, _pointer(op["from"]), op["from"]))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            kind, op = "add", {"value": value}
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise ApiStatus(422, "Invalid", f"JSON patch: cannot {kind} the whole document")
        parent = _walk(doc, parts[:-1], path)
        last = parts[-1]
        if kind == "remove" or kind == "replace":
            _walk(parent, [last], path)  # must exist
        if isinstance(parent, list):
            i = len(parent) if last == "-" else int(last) if last.isdigit() else -1
            if not 0 <= i <= len(parent):
                raise ApiStatus(422, "Invalid", f"JSON patch: index {last!r} out of range at {path!r}")
            if kind == "add":
                parent.insert(i, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                parent.pop(i)
            elif kind == "replace":
                parent[i] = copy.deepcopy(op.get("value"))
        elif isinstance(parent, dict):
            if kind == "remove":
                parent.pop(last)
            elif kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op.get("value"))
        else:
            raise ApiStatus(422, "Invalid", f"JSON patch: {path!r} is not inside an object or list")
        if kind not in ("add", "remove", "replace"):
            raise ApiStatus(400, "BadRequest", f"JSON patch: unknown op {kind!r}")
    return doc


def apply_patch(current: dict[str, Any], content_type: str, body: Any) -> dict[str, Any]:
    ctype = content_type.split(";")[0].strip()
    if ctype == "application/merge-patch+json":
        out = merge_patch(current, body)
    elif ctype == "application/json-patch+json":
        out = json_patch(current, body)
    elif ctype == "application/strategic-merge-patch+json":
        out = strategic_merge_patch(current, body)
    elif ctype == "application/apply-patch+yaml":
        # kaito's operator never uses server-side apply (grep: no apply-patch content type).
        raise ApiStatus(415, "UnsupportedMediaType", "server-side apply is not emulated: kaito's operator "
                                                     "uses merge and JSON patches only")
    else:
        raise ApiStatus(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                     f"accepted media types include: application/json-patch+json, "
                                                     f"application/merge-patch+json, "
                                                     f"application/strategic-merge-patch+json (got {ctype!r})")
    if not isinstance(out, dict):
        raise ApiStatus(422, "Invalid", "the patched object is not a JSON object")
    return out


# -- selectors --------------------------------------------------------------------------------

_REQ = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def parse_label_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """``a=b,c!=d,e in (x,y),!f,g`` -> [(key, op, values)]; 400 on syntax errors."""
    out: list[tuple[str, str, set[str]]] = []
    for req in re.split(r",(?![^()]*\))", text or ""):
        if not req.strip():
            continue
        m = _REQ.match(req)
        if not m:
            raise ApiStatus(400, "BadRequest", f"unable to parse requirement: {req!r}: invalid label selector")
        neg, key, eq, value, setop, values = m.groups()
        if neg:
            out.append((key, "!", set()))
        elif eq:
            out.append((key, "!=" if eq == "!=" else "=", {value or ""}))
        elif setop:
            out.append((key, setop, {v.strip() for v in values.split(",") if v.strip()}))
        else:
            out.append((key, "exists", set()))
    return out


def labels_match(labels: Mapping[str, str] | None, reqs: list[tuple[str, str, set[str]]]) -> bool:
    have = labels or {}
    for key, op, values in reqs:
        present = key in have
        if op == "exists" and not present or op == "!" and present:
            return False
        if op in ("=", "in") and have.get(key) not in values:
            return False
        if op in ("!=", "notin") and present and have[key] in values:
            return False
    return True


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels + matchExpressions); empty/None matches all."""
    selector = selector or {}
    reqs = [(k, "=", {v}) for k, v in (selector.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for e in selector.get("matchExpressions") or []:
        reqs.append((e["key"], ops[e["operator"]], set(e.get("values") or [])))
    return labels_match(labels, reqs)


def parse_field_selector(text: str) -> list[tuple[str, bool, str]]:
    out = []
    for req in (text or "").split(","):
        if not req.strip():
            continue
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", req)
        if not m:
            raise ApiStatus(400, "BadRequest", f"invalid field selector: {req!r}")
        out.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return out


def fields_match(obj: Mapping[str, Any], reqs: list[tuple[str, bool, str]]) -> bool:
    for path, equal, value in reqs:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str(cur if cur is not None else "") == value) != equal:
            return False
    return True


# -- metadata ---------------------------------------------------------------------------------

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def metadata_causes(meta: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """apimachinery ``ValidateObjectMeta``: a DNS-1123 subdomain name and valid label keys and
    values. ``fullmatch``: Go's regexp has no ``$``-before-newline trap."""
    causes = []
    name = meta.get("name") or ""
    if not name:
        causes.append(("FieldValueRequired", "metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        causes.append(("FieldValueInvalid", "metadata.name",
                       f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower case "
                       f"alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"))
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, short = key.rpartition("/")
        if not short or len(short) > 63 or not LABEL_NAME.fullmatch(short) or (
                prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix))):
            causes.append(("FieldValueInvalid", "metadata.labels", f"Invalid value: {key!r}: name part must consist "
                                                                  f"of alphanumeric characters, '-', '_' or '.'"))
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            causes.append(("FieldValueInvalid", "metadata.labels", f"Invalid value: {value!r}: a valid label must "
                                                                  f"be an empty string or consist of alphanumeric "
                                                                  f"characters, '-', '_' or '.' (at most 63)"))
    return causes


def event_causes(obj: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """core/v1 Event (core/validation legacyValidateEvent, no eventTime): it lives in its
    involved object's namespace, or in "" / "default" for a cluster-scoped object."""
    if obj.get("eventTime"):
        return []
    ns = (obj.get("metadata") or {}).get("namespace") or ""
    involved = (obj.get("involvedObject") or {}).get("namespace") or ""
    if ns == involved or (not involved and ns == "default"):
        return []
    return [("FieldValueInvalid", "involvedObject.namespace",
             f"Invalid value: {involved!r}: does not match event.namespace")]


# -- immutable fields (pkg/apis/*/validation ValidateXUpdate) ---------------------------------

# StatefulSet: "updates to statefulset spec for fields other than 'replicas', 'ordinals',
# 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and
# 'minReadySeconds' are forbidden" (apps/validation ValidateStatefulSetUpdate).
_STS_MUTABLE = {"replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy", "minReadySeconds"}
_JOB_IMMUTABLE = ("template", "selector", "completionMode", "podFailurePolicy", "manualSelector")
_POD_MUTABLE_CONTAINER = {"image"}


def immutable_causes(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Causes for changes the API server refuses on update of a built-in kind."""
    o, n = old.get("spec") or {}, new.get("spec") or {}
    out: list[tuple[str, str, str]] = []
    if kind == "Service":
        if o.get("clusterIP") and n.get("clusterIP", o.get("clusterIP")) != o.get("clusterIP"):
            out.append(("FieldValueInvalid", "spec.clusterIP", f"Invalid value: {n.get('clusterIP')!r}: "
                                                               f"field is immutable"))
    elif kind == "StatefulSet":
        def fixed(spec: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in spec.items() if k not in _STS_MUTABLE}
        if fixed(o) != fixed(n):
            out.append(("FieldValueForbidden", "spec", "Forbidden: updates to statefulset spec for fields other "
                                                       "than 'replicas', 'ordinals', 'template', 'updateStrategy', "
                                                       "'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' "
                                                       "and 'minReadySeconds' are forbidden"))
    elif kind == "Job":
        for field in _JOB_IMMUTABLE:
            if o.get(field) != n.get(field):
                out.append(("FieldValueInvalid", f"spec.{field}", "Invalid value: field is immutable"))
    elif kind == "Pod":
        def strip(spec: Mapping[str, Any]) -> dict[str, Any]:
            s = {k: v for k, v in spec.items() if k not in ("activeDeadlineSeconds", "tolerations")}
            for key in ("containers", "initContainers"):
                s[key] = [{k: v for k, v in c.items() if k not in _POD_MUTABLE_CONTAINER} for c in s.get(key) or []]
            return s
        if strip(o) != strip(n):
            out.append(("FieldValueForbidden", "spec", "Forbidden: pod updates may not change fields other than "
                                                       "`spec.containers[*].image`, `spec.initContainers[*].image`, "
                                                       "`spec.activeDeadlineSeconds`, `spec.tolerations`"))
    elif kind in ("ConfigMap", "Secret") and old.get("immutable"):
        for field in ("data", "binaryData", "stringData", "immutable"):
            if old.get(field) != new.get(field):
                out.append(("FieldValueForbidden", field, "Forbidden: field is immutable when `immutable` is set"))
    return out


# -- status subresource (registry strategies' PrepareForCreate / PrepareForUpdate) -------------


def prepare_create(kind: str, obj: dict[str, Any], has_status: bool) -> None:
    """Create cannot set status for kinds with a status subresource (CustomResource strategy:
    "create cannot set status"; Pod starts Pending), except Nodes (the kubelet registers a
    Node with its status: nodeStrategy.PrepareForCreate)."""
    if kind == "Node" or not has_status:
        return
    obj.pop("status", None)
    if kind == "Pod":
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif kind == "Namespace":
        obj["status"] = {"phase": "Active"}


def prepare_update(old: Mapping[str, Any], new: dict[str, Any], *, has_status: bool,
                   subresource: str | None) -> dict[str, Any]:
    """Main resource: status kept from ``old``. ``/status``: everything but status kept from
    ``old`` (customresource statusStrategy.PrepareForUpdate)."""
    if not has_status:
        return new
    if subresource == "status":
        out = {k: copy.deepcopy(v) for k, v in old.items() if k != "status"}
        if "status" in new:
            out["status"] = new["status"]
        out["metadata"] = dict(out["metadata"])
        # the precondition below compares the caller's resourceVersion with the stored one
        out["metadata"]["resourceVersion"] = (new.get("metadata") or {}).get("resourceVersion")
        return out
    out = dict(new)
    if "status" in old:
        out["status"] = old["status"]
    else:
        out.pop("status", None)
    return out


def spec_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """``metadata.generation`` moves when anything but metadata and status changes."""
    keys = (set(old) | set(new)) - {"metadata", "status", "apiVersion", "kind"}
    return any(old.get(k) != new.get(k) for k in keys)
