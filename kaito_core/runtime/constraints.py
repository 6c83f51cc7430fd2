"""Output constraints in a request: OpenAI's ``response_format`` (JSON mode) and vLLM's extras
``guided_json``/``guided_regex``/``guided_choice``/``guided_grammar`` and ``structured_outputs``,
checked for shape and named field by field. Standard library only, cheap enough for the event
loop; the constraint itself is compiled (and refused when invalid) by
:mod:`kaito_core.runtime.grammar` on a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from kaito_core.runtime.errors import bad_param, missing_param, unsupported_param

MAX_CHOICES = 4096


@dataclass(frozen=True)
class Constraint:
    """What the output must follow; compiled by runtime/grammar.py."""

    kind: str            # "json_object" | "json_schema" | "regex" | "choice" | "grammar"
    spec: Any            # json_schema: the schema (dict); regex/grammar: its text; choice: a tuple of strings
    param: str           # the request field it came from, named in errors
    compact: bool = False  # JSON without whitespace between tokens (disable_any_whitespace)


def response_format(body: dict, forced: Constraint | None = None) -> Constraint | None:
    """The request's output constraint, or None. vLLM allows one kind per request ("You can only
    use one kind of structured outputs constraint"); like vLLM, json_object needs no mention of
    JSON in the prompt (OpenAI requires one), and ``strict`` is accepted and changes nothing:
    the output always follows the schema. ``forced``: a tool call that tool_choice forces
    (:mod:`kaito_core.runtime.tools`), which excludes every other constraint."""
    extra, compact = _structured_outputs(body)
    found = [c for c in (forced, _openai_format(body), *_guided(body), extra) if c is not None]
    if len(found) > 1:
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
                                                   "backend; use json_object or json_schema (or vLLM's "
                                                   "structured_outputs.regex / .grammar)")
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


def _text(value: Any, param: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise bad_param(param, value, f"a non-empty string: {what}", code="invalid_type")
    return value


def _choices(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or len(value) > MAX_CHOICES:
        raise bad_param(param, value, f"a list of 1 to {MAX_CHOICES} strings, the only answers allowed",
                        code="invalid_type")
    for i, c in enumerate(value):
        if not isinstance(c, str) or not c:
            raise bad_param(f"{param}[{i}]", c, "a non-empty string", code="invalid_type")
    return tuple(value)


# (key, kind, parse) for vLLM's constraints, as ``guided_<key>`` (older) and
# ``structured_outputs.<key>`` (newer)
_KINDS = (
    ("json", "json_schema", _schema),
    ("regex", "regex", lambda v, p: _text(v, p, "a regular expression the whole answer must match")),
    ("choice", "choice", _choices),
    ("grammar", "grammar", lambda v, p: _text(v, p, "a Lark or GBNF grammar the answer must follow")),
)


def _guided(body: dict) -> list[Constraint]:
    out = []
    for key, kind, parse in _KINDS:
        value = body.get(f"guided_{key}")
        if value is not None:
            out.append(Constraint(kind, parse(value, f"guided_{key}"), f"guided_{key}"))
    return out


_OPTIONS = ("disable_any_whitespace",)   # options that go with any constraint (vLLM's StructuredOutputsParams)


def _structured_outputs(body: dict) -> tuple[Constraint | None, bool]:
    """vLLM's newer extra parameter: a constraint (``json``, ``json_object``, ``regex``,
    ``choice``, ``grammar``) and/or options (``disable_any_whitespace``), which also apply to a
    ``response_format`` constraint, as vLLM folds ``response_format`` into ``structured_outputs``."""
    value = body.get("structured_outputs")
    if value is None:
        return None, False
    if not isinstance(value, dict):
        raise bad_param("structured_outputs", value, "an object such as {\"json\": {...}}", code="invalid_type")
    known = {"json_object", *(k for k, _, _ in _KINDS), *_OPTIONS}
    other = sorted(k for k, v in value.items() if v not in (None, False) and k not in known)
    if other:
        raise unsupported_param(f"structured_outputs.{other[0]}", f"the transformers backend implements "
                                                                  f"{sorted(known)}")
    compact = value.get("disable_any_whitespace")
    if compact is not None and not isinstance(compact, bool):
        raise bad_param("structured_outputs.disable_any_whitespace", compact, "true or false", code="invalid_type")
    json_object = value.get("json_object")
    if json_object is not None and not isinstance(json_object, bool):
        raise bad_param("structured_outputs.json_object", json_object, "true or false", code="invalid_type")
    found = [Constraint(kind, parse(value[key], f"structured_outputs.{key}"), f"structured_outputs.{key}")
             for key, kind, parse in _KINDS if value.get(key) is not None]
    if json_object:
        found.append(Constraint("json_object", None, "structured_outputs.json_object"))
    if len(found) > 1:
        raise bad_param(found[1].param, "a second output constraint",
                        f"one constraint per request; {found[0].param!r} is already set")
    return (found[0] if found else None), bool(compact)
