"""CRD validation rules (``x-kubernetes-validations``, CEL) as apiextensions-apiserver applies
them: each rule runs with ``self`` bound to the value at its schema node (every item of a list,
every value of a map), transition rules (those naming ``oldSelf``) only on update and only where
the old object had a value; a false rule is a 422 cause with the rule's ``message`` (Karpenter's
"spec is immutable" on NodeClaims is one).

Evaluated with cel-python plus Kubernetes' ``find`` regex extension; a rule that cannot be
compiled or evaluated here (another Kubernetes extension function, a missing field) is skipped,
never reported as a failure. ``messageExpression`` is not evaluated (``message`` is used).
"""

from __future__ import annotations

import re
from typing import Any

_PROGRAMS: dict[str, Any] = {}
_SKIP = object()


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        try:
            import celpy
            from celpy import celtypes
        except ImportError:  # cel-python is a test dependency: without it, no rule is checked
            _PROGRAMS[rule] = _SKIP
            return _SKIP

        def find(text: Any, pattern: Any) -> Any:
            m = re.search(str(pattern), str(text))  # k8s.io/apiserver/pkg/cel/library/regex.go
            return celtypes.StringType(m.group(0) if m else "")

        env = celpy.Environment()
        try:
            _PROGRAMS[rule] = env.program(env.compile(rule), functions={"find": find})
        except Exception:  # noqa: BLE001 - a rule cel-python cannot compile is skipped
            _PROGRAMS[rule] = _SKIP
    return _PROGRAMS[rule]


def _holds(rule: str, value: Any, old: Any) -> bool | None:
    """True/False, or None when the rule could not be evaluated here."""
    prog = _program(rule)
    if prog is _SKIP:
        return None
    import celpy

    binding = {"self": celpy.json_to_cel(value)}
    if old is not None:
        binding["oldSelf"] = celpy.json_to_cel(old)
    try:
        result = prog.evaluate(binding)
    except Exception:  # noqa: BLE001 - CELEvalError and friends: not evaluable here
        return None
    from celpy import celtypes

    return bool(result) if isinstance(result, (bool, celtypes.BoolType)) else None


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def rule_causes(schema: dict[str, Any], value: Any, old: Any, path: str = "") -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        text = rule.get("rule", "")
        transition = "oldSelf" in text
        if transition and old is None:
            continue
        if _holds(text, value, old if transition else None) is False:
            field = path + (rule.get("fieldPath") or "")
            message = rule.get("message") or f"failed rule: {text}"
            reason = rule.get("reason") or "FieldValueInvalid"
            out.append((reason, field, f'Invalid value: "{_kind(value)}": {message}'))
    props = schema.get("properties") or {}
    if isinstance(value, dict):
        olds = old if isinstance(old, dict) else {}
        for key, sub in props.items():
            if key in value:
                out += rule_causes(sub, value[key], olds.get(key), f"{path}.{key}" if path else key)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in [k for k in value if k not in props]:
                out += rule_causes(extra, value[key], olds.get(key), f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            # items of atomic lists have no oldSelf (only list-type=map correlates them)
            out += rule_causes(schema["items"], item, None, f"{path}[{i}]")
    return out
