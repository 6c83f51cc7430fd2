"""Tool calling on the transformers backend, as far as it needs no model-specific parser.

vLLM forces a tool call through structured outputs, and so does this server (the constraint goes
through :mod:`kaito_core.runtime.grammar`):

- ``tool_choice: {"type": "function", "function": {"name": F}}``: the answer is constrained to
  F's ``parameters`` schema and returned as one tool call whose ``arguments`` is the generated
  JSON (what LangChain's ``with_structured_output`` and similar helpers send);
- ``tool_choice: "required"``: the answer is a JSON array of ``{"name", "parameters"}`` objects,
  one schema branch per tool (vLLM's ``_get_json_schema_from_tool``), returned as tool calls;
- ``tool_choice: "none"``: plain text; the tools are still shown to the chat template.

``"auto"`` (OpenAI's default when tools are sent) needs a parser for the model's own tool-call
syntax (vLLM's ``--tool-call-parser``), which this backend does not have: it is refused, as vLLM
refuses it without ``--enable-auto-tool-choice``. Standard library only (runs on the event loop).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from kaito_core.runtime.constraints import Constraint
from kaito_core.runtime.errors import bad_param, missing_param, unsupported_param

MAX_TOOLS = 128
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")   # OpenAI's rule for function names
_NO_PARAMETERS = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tools:
    """The request's tools (as sent; the chat template renders them) and how to answer."""

    tools: list[dict] = field(default_factory=list)
    choice: str = "none"                 # "none" | "named" | "required"
    name: str | None = None              # the forced function (named)


def _function(tool: Any, i: int) -> dict:
    where = f"tools[{i}]"
    if not isinstance(tool, dict):
        raise bad_param(where, tool, "an object {\"type\": \"function\", \"function\": {...}}", code="invalid_type")
    if tool.get("type", "function") != "function":
        raise unsupported_param(f"{where}.type", f"{tool.get('type')!r} tools are not supported; use 'function'")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise missing_param(f"{where}.function", "an object with 'name' (and 'description', 'parameters')")
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad_param(f"{where}.function.name", name, "a name of 1-64 letters, digits, '_' or '-'")
    params = fn.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise bad_param(f"{where}.function.parameters", params, "a JSON Schema object", code="invalid_type")
    desc = fn.get("description")
    if desc is not None and not isinstance(desc, str):
        raise bad_param(f"{where}.function.description", desc, "a string", code="invalid_type")
    return fn


def parse_tools(body: dict) -> tuple[Tools, Constraint | None]:
    """``tools`` and ``tool_choice`` -> what to render and answer, and the constraint that forces
    the call (None for plain text)."""
    raw, choice = body.get("tools"), body.get("tool_choice")
    if raw in (None, []):
        if choice not in (None, "none"):
            raise bad_param("tool_choice", choice, "'none' or nothing when no tools are sent")
        return Tools(), None
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise bad_param("tools", raw, f"a list of at most {MAX_TOOLS} function tools", code="invalid_type")
    functions = [_function(t, i) for i, t in enumerate(raw)]
    names = [f["name"] for f in functions]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise bad_param("tools", dup, "each function name once")
    if choice == "none":
        return Tools(raw, "none"), None
    if choice is None or choice == "auto":
        raise unsupported_param("tool_choice", "'auto' (the default when tools are sent) needs a parser for this "
                                               "model's tool-call syntax, which the transformers backend lacks; "
                                               "send tool_choice 'required' or {\"type\": \"function\", "
                                               "\"function\": {\"name\": ...}}, or use the vllm runtime")
    if choice == "required":
        branches = [{"type": "object", "additionalProperties": False, "required": ["name", "parameters"],
                     "properties": {"name": {"type": "string", "enum": [f["name"]]},
                                    "parameters": f.get("parameters") or _NO_PARAMETERS}} for f in functions]
        schema = {"type": "array", "minItems": 1, "items": {"anyOf": branches}}
        parallel = body.get("parallel_tool_calls")
        if parallel is not None and not isinstance(parallel, bool):
            raise bad_param("parallel_tool_calls", parallel, "true or false", code="invalid_type")
        if parallel is False:  # OpenAI's: at most one call per answer
            schema["maxItems"] = 1
        return Tools(raw, "required"), Constraint("json_schema", schema, "tools")
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise bad_param("tool_choice", choice, "{\"type\": \"function\", \"function\": {\"name\": ...}}")
        if name not in names:
            raise bad_param("tool_choice.function.name", name, f"one of the tools sent: {names}")
        i = names.index(name)
        params = functions[i].get("parameters") or _NO_PARAMETERS
        return Tools(raw, "named", name), Constraint("json_schema", params, f"tools[{i}].function.parameters")
    raise bad_param("tool_choice", choice, "'none', 'required' or {\"type\": \"function\", \"function\": "
                                           "{\"name\": ...}}")


def tool_calls(tools: Tools, text: str, new_id: Any) -> list[dict] | None:
    """The answer's tool calls (OpenAI's shape), or None when it is plain text: no forced call,
    or a ``required`` array cut short by ``max_tokens`` (it is then returned as text)."""
    if tools.choice == "named":
        return [_call(new_id(), tools.name, text)]
    if tools.choice == "required":
        try:
            calls = json.loads(text)
        except ValueError:
            return None
        return [_call(new_id(), c["name"], json.dumps(c["parameters"], ensure_ascii=False)) for c in calls]
    return None


def _call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def template_message(msg: dict, where: str) -> dict:
    """An assistant message's ``tool_calls`` or a tool message's ``tool_call_id`` for the chat
    template; ``arguments`` become objects, as transformers' templates expect (vLLM does the same)."""
    out: dict[str, Any] = {}
    if msg.get("role") == "tool" and msg.get("tool_call_id") is None:   # OpenAI's rule
        raise missing_param(f"{where}.tool_call_id", "the id of the tool call this message answers")
    if msg.get("tool_call_id") is not None:
        if not isinstance(msg["tool_call_id"], str):
            raise bad_param(f"{where}.tool_call_id", msg["tool_call_id"], "a string", code="invalid_type")
        out["tool_call_id"] = msg["tool_call_id"]
    calls = msg.get("tool_calls")
    if calls in (None, []):
        return out
    if not isinstance(calls, list):
        raise bad_param(f"{where}.tool_calls", calls, "a list of tool calls", code="invalid_type")
    out["tool_calls"] = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad_param(f"{where}.tool_calls[{j}]", call, "{\"id\", \"type\": \"function\", \"function\": "
                                                              "{\"name\", \"arguments\"}}", code="invalid_type")
        args = fn.get("arguments", "{}")
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            pass  # not JSON: the template gets the string as sent
        out["tool_calls"].append({"id": call.get("id"), "type": "function",
                                  "function": {"name": fn["name"], "arguments": args}})
    return out
