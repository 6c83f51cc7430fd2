"""Output constraints (JSON mode) in a request: OpenAI's ``response_format`` and vLLM's extras
``guided_json`` and ``structured_outputs``, checked for shape and named field by field. Standard
library only, cheap enough for the event loop; the schema itself is compiled (and refused when
invalid) by :mod:`kaito_core.runtime.grammar` on a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from kaito_core.runtime.errors import bad_param, missing_param, unsupported_param


@dataclass(frozen=True)
class Constraint:
    """What the output must follow (JSON mode); compiled by runtime/grammar.py."""

    kind: str                              # "json_object" (any JSON object) | "json_schema"
    schema: dict | None                    # the JSON Schema (json_schema only)
    param: str                             # the request field it came from, named in errors
    compact: bool = False                  # no whitespace between JSON tokens (disable_any_whitespace)


def response_format(body: dict) -> Constraint | None:
    """``response_format`` (OpenAI) and vLLM's extras ``guided_json`` and ``structured_outputs``
    -> the constraint the output must follow, or None. Only the shape is checked here (cheap, on
    the event loop); the schema itself is compiled, and refused if invalid, by runtime/grammar.py
    on a worker thread. Like vLLM, json_object needs no mention of JSON in the prompt (OpenAI
    requires one), and ``strict`` is accepted and changes nothing: the output always follows the
    schema."""
    extra, compact = _structured_outputs(body)
    found = [c for c in (_openai_format(body), _guided_json(body), extra) if c is not None]
    if len(found) > 1:  # vLLM: "You can only use one kind of structured outputs constraint"
        raise bad_param(found[1].param, "a second output constraint",
                        f"one constraint per request; {found[0].param!r} is already set")
    if not found:
        if compact:
            raise bad_param("structured_outputs.disable_any_whitespace", True,
                            "to come with a constraint: response_format json_object/json_schema or "
                            "structured_outputs.json")
        return None
    return dataclasses.replace(found[0], compact=compact)


def _openai_format(body: dict) -> Constraint | None:
    value = body.get("response_format")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_param("response_format", value, "an object such as {\"type\": \"json_object\"}", code="invalid_type")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_object", None, "response_format")
    if kind == "json_schema":
        spec = value.get("json_schema")
        where = "response_format.json_schema"
        if spec is None:
            raise missing_param(where, "an object {\"name\": ..., \"schema\": {...}}")
        if not isinstance(spec, dict):
            raise bad_param(where, spec, "an object {\"name\": ..., \"schema\": {...}}", code="invalid_type")
        name = spec.get("name")
        if name is None:
            raise missing_param(f"{where}.name", "a name for the format (letters, digits, _ and -)")
        if not isinstance(name, str):
            raise bad_param(f"{where}.name", name, "a string", code="invalid_type")
        strict = spec.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise bad_param(f"{where}.strict", strict, "true, false or null", code="invalid_type")
        return Constraint("json_schema", _schema(spec.get("schema"), f"{where}.schema"), f"{where}.schema")
    if kind in ("structural_tag", "grammar", "regex"):
        raise unsupported_param("response_format", f"type {kind!r} is not implemented by the transformers "
                                                   "backend; use json_object or json_schema")
    raise bad_param("response_format.type", kind, "one of 'text', 'json_object', 'json_schema'")


def _schema(value: Any, param: str) -> dict:
    """A JSON Schema: an object, or (vLLM accepts both) a string holding one."""
    if value is None:
        raise missing_param(param, "a JSON Schema object the output must follow")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise bad_param(param, value, f"a JSON Schema object (this string is not JSON: {exc})") from None
    if not isinstance(value, dict):
        raise bad_param(param, value, "a JSON Schema object such as {\"type\": \"object\", \"properties\": {...}}",
                        code="invalid_type")
    return value


def _guided_json(body: dict) -> Constraint | None:
    value = body.get("guided_json")  # vLLM's older extra parameter
    return None if value is None else Constraint("json_schema", _schema(value, "guided_json"), "guided_json")


_OPTIONS = ("disable_any_whitespace",)   # options that go with any constraint (vLLM's StructuredOutputsParams)


def _structured_outputs(body: dict) -> tuple[Constraint | None, bool]:
    """vLLM's newer extra parameter: a constraint (``json``, ``json_object``) and/or options
    (``disable_any_whitespace``), which also apply to a ``response_format`` constraint, as vLLM
    folds ``response_format`` into ``structured_outputs``."""
    value = body.get("structured_outputs")
    if value is None:
        return None, False
    if not isinstance(value, dict):
        raise bad_param("structured_outputs", value, "an object such as {\"json\": {...}}", code="invalid_type")
    other = sorted(k for k, v in value.items()
                   if v not in (None, False) and k not in ("json", "json_object", *_OPTIONS))
    if other:
        raise unsupported_param(f"structured_outputs.{other[0]}", "only 'json', 'json_object' and "
                                "'disable_any_whitespace' are implemented by the transformers backend")
    compact = value.get("disable_any_whitespace")
    if compact is not None and not isinstance(compact, bool):
        raise bad_param("structured_outputs.disable_any_whitespace", compact, "true or false", code="invalid_type")
    json_object = value.get("json_object")
    if json_object is not None and not isinstance(json_object, bool):
        raise bad_param("structured_outputs.json_object", json_object, "true or false", code="invalid_type")
    if value.get("json") is not None:
        if json_object:
            raise bad_param("structured_outputs.json_object", True, "to be left out when 'json' is set")
        schema = _schema(value["json"], "structured_outputs.json")
        return Constraint("json_schema", schema, "structured_outputs.json"), bool(compact)
    if json_object:
        return Constraint("json_object", None, "structured_outputs.json_object"), bool(compact)
    return None, bool(compact)
