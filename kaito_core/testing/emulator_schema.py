"""Custom resources as apiextensions-apiserver treats them: unknown fields pruned, defaults from
the CRD's structural schema applied, then the object validated against that schema (422 with
one cause per field, as ``kubectl apply`` prints them).

Upstream order (apiextensions-apiserver ``customresource_handler.go``): decode -> prune ->
default -> mutating admission -> prune/default again -> schema validation -> validating
admission. CEL rules (``x-kubernetes-validations``) are not evaluated here.

Server-side field validation (``?fieldValidation=``, GA in Kubernetes 1.27): what the client
sent that pruning drops is answered with a ``Warning: 299 - "unknown field \"spec.x\""``
header by default (``Warn``), refused with 400 under ``Strict``, and passed over under ``Ignore``.
"""

from __future__ import annotations

import copy
from typing import Any

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def prune(obj: Any, schema: dict[str, Any], root: bool = False, dropped: list[str] | None = None,
          path: str = "") -> Any:
    """Drop fields the schema does not declare (structural pruning), unless
    ``x-kubernetes-preserve-unknown-fields`` says keep them; ``dropped`` collects their paths."""
    if isinstance(obj, dict) and schema.get("type", "object") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and extra is None:
            if schema.get("x-kubernetes-preserve-unknown-fields") or not root:
                return obj
            props = {}
        out = {}
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else key
            if props is not None and key in props:
                out[key] = prune(value, props[key], dropped=dropped, path=sub)
            elif isinstance(extra, dict):
                out[key] = prune(value, extra, dropped=dropped, path=sub)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields") or (
                    (root or schema.get("x-kubernetes-embedded-resource")) and key in _ROOT_KEEP):
                out[key] = value
            elif dropped is not None:
                dropped.append(sub)
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"], dropped=dropped, path=f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def field_warnings(schema: "CrdSchema | None", obj: dict[str, Any], mode: str) -> list[str]:
    """Server-side field validation of what a client sent: the warnings to answer with
    (``Warn``), none (``Ignore``), or 400 BadRequest naming every unknown field (``Strict``)."""
    if schema is None or mode == "Ignore":
        return []
    dropped: list[str] = []
    prune(obj, schema.schema, root=True, dropped=dropped)
    found = [f'unknown field "{path}"' for path in dropped]
    if found and mode == "Strict":
        from kaito_core.testing.emulator_rules import ApiStatus

        raise ApiStatus(400, "BadRequest", "strict decoding error: " + ", ".join(found))
    return found


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """``default`` of absent properties, inside objects that exist (structural defaulting)."""
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = apply_defaults(obj[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in [k for k in obj if k not in props]:
                obj[key] = apply_defaults(obj[key], extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(i, schema["items"]) for i in obj]
    return obj


def to_json_schema(schema: Any) -> Any:
    """OpenAPI v3 (structural) -> JSON Schema: ``nullable`` and ``x-kubernetes-int-or-string``
    become JSON Schema types; ``metadata`` is validated by the API server's own rules."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "default"}
    if "properties" in schema:
        out["properties"] = {k: to_json_schema(v) for k, v in schema["properties"].items()}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _field(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object",
               type(None): "null"}


def _cause(err: Any) -> tuple[str, str, str]:
    """jsonschema error -> (reason, field, message) in apimachinery's field.Error wording."""
    field = _field(err.absolute_path)
    value = err.instance
    if err.validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else "?"
        return "FieldValueRequired", f"{field}.{missing}" if field else missing, "Required value"
    if err.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in err.validator_value)
        return "FieldValueNotSupported", field, f'Unsupported value: "{value}": supported values: {allowed}'
    if err.validator == "type":
        got = _JSON_TYPES.get(type(value), type(value).__name__)
        return ("FieldValueTypeInvalid", field,
                f'Invalid value: "{got}": {field} in body must be of type {err.validator_value}: "{got}"')
    return "FieldValueInvalid", field, f"Invalid value: {value!r}: {field} in body {err.message}"


class CrdSchema:
    """One served version's ``openAPIV3Schema``: prune, default, validate."""

    def __init__(self, schema: dict[str, Any] | None):
        self.schema = schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        self._validator: Any = None

    def prepare(self, obj: dict[str, Any]) -> dict[str, Any]:
        return apply_defaults(prune(obj, self.schema, root=True), self.schema)

    def causes(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
        """Schema errors, then the CRD's validation rules (``old``: the stored object on update)."""
        from kaito_core.testing.emulator_cel import rule_causes

        found = self._schema_causes(obj)
        if not found:  # as upstream: rules run on objects that passed the schema
            found = rule_causes({k: v for k, v in self.schema.items() if k != "properties"} | {
                "properties": {k: v for k, v in (self.schema.get("properties") or {}).items() if k != "metadata"}},
                obj, old)
        return found

    def _schema_causes(self, obj: dict[str, Any]) -> list[tuple[str, str, str]]:
        if self._validator is None:
            import jsonschema

            js = to_json_schema(self.schema)
            (js.get("properties") or {}).pop("metadata", None)  # the API server checks metadata itself
            self._validator = jsonschema.Draft4Validator(js)
        errors = sorted(self._validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        return [_cause(e) for e in errors]
