"""One row's messages: OpenAI-style ``[{"role", "content"}, ...]`` as a list, JSON text, or the
Python literal pandas writes to CSV; content as a string or text content parts; tool calls and
tool results kept for the chat template."""

from __future__ import annotations

import json
from typing import Any

ROLES = ("system", "user", "assistant", "tool", "developer")


class Malformed(Exception):
    """A row that cannot be used; the message says why (before the first ':' is the category)."""


def unicode_text(text: str, what: str) -> str:
    """JSON's \\ud800-style escapes can give unpaired surrogates, which no tokenizer encodes
    (tokenizers raises a TypeError about its input type)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Malformed(f"bad {what}: an unpaired UTF-16 surrogate ({text[exc.start]!r} at character "
                        f"{exc.start}) is not text; fix the escape in the file") from None
    return text


def _content(value: Any) -> str:
    if isinstance(value, str):
        return unicode_text(value, "content")
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for p in value:
            if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
                parts.append(p["text"])
            else:
                raise Malformed("bad content: only text content parts can be trained on")
        return unicode_text("".join(parts), "content")
    raise Malformed(f"bad content: expected a string, got {type(value).__name__}")


def _parse_messages_text(value: str) -> Any:
    """A messages cell as text: JSON, or the Python literal pandas' ``to_csv`` writes for a list
    column (``[{'role': 'user', ...}]``); read with ``ast.literal_eval`` (literals only, no code)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    if value.lstrip().startswith("[") and len(value) < 1 << 24:
        import ast

        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    raise Malformed("bad messages: a string that is not JSON; expected a list of {role, content} objects")


def to_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = _parse_messages_text(value)
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    if not isinstance(value, list) or not value:
        raise Malformed("bad messages: expected a non-empty list of {role, content} objects, got "
                        f"{type(value).__name__ if value is not None else 'null'}")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m:
            raise Malformed(f"bad messages: message {k} is not a {{role, content}} object")
        role = m.get("role")
        if role not in ROLES:
            raise Malformed(f"bad messages: message {k} has role {role!r}; expected one of {list(ROLES)}")
        content = m.get("content")
        if content is None:
            content = ""
        msg: dict[str, Any] = {"role": role, "content": _content(content)}
        # OpenAI tool use: the calls an assistant turn makes and the id/name a tool result
        # answers go to the chat template too (upstream hands the whole message list to
        # apply_chat_template); dropping them would teach an empty answer instead of the call.
        calls = m.get("tool_calls")
        if calls:
            if role != "assistant" or not isinstance(calls, list):
                raise Malformed(f"bad messages: message {k} has tool_calls; only an assistant message can, "
                                "as a list of {type, function: {name, arguments}} objects")
            msg["tool_calls"] = calls
        for key in ("tool_call_id", "name"):
            if isinstance(m.get(key), str) and m[key]:
                msg[key] = m[key]
        out.append(msg)
    if not any(m["role"] == "assistant" and (m["content"].strip() or m.get("tool_calls")) for m in out):
        raise Malformed("no assistant message: nothing to learn from (add an assistant turn)")
    return out
