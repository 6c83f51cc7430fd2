"""JSON bodies and the scalar fields of requests: parsed and checked, or an :class:`APIError`
naming the parameter, the value and what is expected. Standard library only; runs on the event
loop for every request, so every check is cheap.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kaito_core.runtime.errors import APIError, bad_param

MAX_STOP = 16          # vLLM has no limit, OpenAI allows 4; 16 keeps the per-token check cheap
MAX_STOP_LEN = 256     # characters per stop string
MAX_LOGIT_BIAS = 300   # entries (OpenAI's limit)
MAX_TEMPLATE_DEPTH = 64  # nesting of tools/messages a chat template renders (real schemas: < 20)
_NUMBER = (int, float)


def parse_json(raw: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object, refusing invalid UTF-8, NaN/Infinity and non-objects. A UTF-8
    byte-order mark is skipped (RFC 8259 8.1 lets parsers ignore it; FastAPI's json.loads of
    bytes does, so vLLM takes such bodies; some Windows clients send one)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"the request body is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r});"
                            " send JSON encoded as UTF-8", param="body", code="invalid_encoding") from None

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(text, parse_constant=no_constants)
    except RecursionError:
        raise APIError(400, "the request body nests too deeply to be a real request", param="body",
                       code="invalid_json") from None
    except ValueError as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}", param="body", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}", param="body",
                       code="invalid_type")
    check_text(data)
    return data


def check_text(data: Any) -> None:
    """Refuse strings that are not valid Unicode text: JSON's ``"\\ud800"`` escapes decode to a
    lone surrogate, which no tokenizer can encode (it used to end in a 500). Iterative, so a
    deeply nested body costs no recursion."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                where = path or "body"
                raise APIError(400, f"'{where}' is not valid Unicode text: character {exc.start} is a lone "
                                    f"surrogate ({node[exc.start]!a}); send UTF-8 text (pair surrogates in "
                                    "\\u escapes)", param=where, code="invalid_text") from None
        elif isinstance(node, dict):
            for k, v in node.items():
                # the path is echoed in the answer: a key that is itself a lone surrogate is named
                # by its escape (the answer could not be encoded otherwise: a 500 before)
                name = f"{path}.{_printable(k)}".lstrip(".")
                stack.append((k, name))
                stack.append((v, name))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))


def nesting(value: Any, limit: int) -> int:
    """How deeply ``value`` nests (lists and dicts), counting no further than ``limit + 1``.
    Iterative: a chat template recurses through what it renders, and whether a RecursionError
    comes depends on how much stack the thread has already used; a fixed limit answers alike."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _printable(key: str) -> str:
    try:
        key.encode("utf-8")
        return key
    except UnicodeEncodeError:
        return ascii(key)[1:-1]


# -- scalar checks ---------------------------------------------------------------------------


def int_field(body: dict, key: str, *, lo: int | None = None, hi: int | None = None, default: Any = None,
         param: str | None = None, expected: str | None = None) -> Any:
    name = param or key
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise bad_param(name, value, expected or "an integer", code="invalid_type")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = expected or f"an integer in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise bad_param(name, value, rng)
    return value


def num_field(body: dict, key: str, *, lo: float | None = None, hi: float | None = None, default: Any = None,
         lo_open: bool = False, param: str | None = None) -> Any:
    name = param or key
    value = body.get(key, default)
    if value is None:
        return default
    # an int is compared as it is: JSON's 1e400-digit integers overflow float() (a 500 before)
    if isinstance(value, bool) or not isinstance(value, _NUMBER) or (isinstance(value, float)
                                                                      and not math.isfinite(value)):
        raise bad_param(name, value, "a number", code="invalid_type")
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    if bad_lo or (hi is not None and value > hi):
        left = "(" if lo_open else "["
        raise bad_param(name, value, f"a number in {left}{lo}, {hi if hi is not None else 'inf'}]")
    return float(value)


def bool_field(body: dict, key: str, default: bool = False, param: str | None = None) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_param(param or key, value, "true or false", code="invalid_type")
    return value


def stop_field(body: dict, key: str = "stop", param: str | None = None) -> list[str]:
    """``stop`` (or /chat's ``generate_kwargs.stop_strings``: ``param`` names it in errors)."""
    name = param or key
    value = body.get(key)
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list):
        raise bad_param(name, value, "a string or a list of strings", code="invalid_type")
    if len(stops) > MAX_STOP:
        raise bad_param(name, f"{len(stops)} stop sequences", f"at most {MAX_STOP} stop sequences")
    for i, s in enumerate(stops):
        where = f"{name}[{i}]" if isinstance(value, list) else name
        if not isinstance(s, str):
            raise bad_param(where, s, "a string", code="invalid_type")
        if not s:
            raise bad_param(where, s, "a non-empty string")
        if len(s) > MAX_STOP_LEN:
            raise bad_param(where, s, f"a string of at most {MAX_STOP_LEN} characters")
    return list(dict.fromkeys(stops))


def stop_token_ids_field(body: dict) -> list[int]:
    value = body.get("stop_token_ids")
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_STOP:
        raise bad_param("stop_token_ids", value, f"a list of at most {MAX_STOP} token ids", code="invalid_type")
    for i, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise bad_param(f"stop_token_ids[{i}]", t, "a non-negative integer token id", code="invalid_type")
    return value


def logit_bias_field(body: dict) -> dict[int, float]:
    value = body.get("logit_bias")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_param("logit_bias", value, "an object mapping token ids to a bias in [-100, 100]",
                        code="invalid_type")
    if len(value) > MAX_LOGIT_BIAS:
        raise bad_param("logit_bias", f"{len(value)} entries", f"at most {MAX_LOGIT_BIAS} entries")
    out: dict[int, float] = {}
    for k, v in value.items():
        try:
            tid = int(k)
        except (TypeError, ValueError):
            raise bad_param("logit_bias", k, "token ids as keys (strings of integers)", code="invalid_type") from None
        if tid < 0:
            raise bad_param("logit_bias", k, "non-negative token ids")
        if isinstance(v, bool) or not isinstance(v, _NUMBER) or not -100 <= v <= 100:
            raise bad_param(f"logit_bias.{k}", v, "a number in [-100, 100]")
        out[tid] = float(v)
    return out
