"""Valid requests mutated field by field (deterministic): every leaf of a request that uses most
of the API gets values of the wrong type, out-of-range numbers, text no tokenizer takes, or is
deleted. Whatever the server makes of it, it never answers 5xx, and every refusal is OpenAI's
error object naming the mutated field (or the object holding it, or the field it conflicts with).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Iterator

import httpx
import pytest

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}, {"role": "user", "content": "and?"}]
TOOLS = [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}]
SAMPLING = {"max_tokens": 3, "temperature": 0.5, "top_p": 0.9, "top_k": 5, "min_p": 0.05, "seed": 1,
            "stop": ["zz"], "presence_penalty": 0.1, "frequency_penalty": 0.1, "repetition_penalty": 1.1,
            "logit_bias": {"5": 1.5}, "n": 1, "min_tokens": 1, "stop_token_ids": [7], "ignore_eos": False,
            "skip_special_tokens": True, "include_stop_str_in_output": False, "user": "u"}
BASES = {
    "chat": ("/v1/chat/completions", {"model": "tiny-llama", "messages": MSGS, **SAMPLING, "logprobs": True,
                                      "top_logprobs": 2, "stream": True,
                                      "stream_options": {"include_usage": True},
                                      "chat_template_kwargs": {"flag": True}, "add_generation_prompt": True}),
    "chat-tools": ("/v1/chat/completions", {"messages": MSGS[:2], "max_tokens": 4, "tools": TOOLS,
                                            "tool_choice": {"type": "function", "function": {"name": "f"}}}),
    "chat-schema": ("/v1/chat/completions", {"messages": MSGS[:2], "max_tokens": 4, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": TOOLS[0]["function"]["parameters"]}}}),
    # the sampling fields are chat's: mutated there, they go through the same parser here
    "completion": ("/v1/completions", {"model": "tiny-llama", "prompt": ["hi", [5, 6, 7]], "max_tokens": 3, "logprobs": 2,
                                       "echo": True, "best_of": 1, "prompt_logprobs": 1, "guided_choice": ["a", "b"]}),
    "kaito-chat": ("/chat", {"prompt": "hi", "return_full_text": False, "generate_kwargs": {
        "max_new_tokens": 3, "min_length": 0, "temperature": 0.7, "top_k": 5, "top_p": 0.9, "do_sample": True,
        "repetition_penalty": 1.1, "seed": 3, "stop_strings": ["zz"]}}),
    "tokenize": ("/tokenize", {"model": "tiny-llama", "messages": MSGS[:2], "add_special_tokens": False,
                               "add_generation_prompt": True}),
}
WRONG = ["x", -1, 1.5, True, None, [1], {"a": "b"}, 2**70, "\ud800"]
DELETE = object()
# a refusal may name another field than the mutated one where two fields constrain each other
RELATED = {"logprobs": {"top_logprobs"}, "top_logprobs": {"logprobs"}, "max_tokens": {"min_tokens"},
           "min_tokens": {"max_tokens"}, "n": {"best_of", "prompt"}, "best_of": {"n"}, "stream": {"stream_options",
           "prompt_logprobs"}, "add_generation_prompt": {"continue_final_message"}, "echo": set(),
           "tool_call_id": {"messages"}, "tool_calls": {"messages"}, "messages": {"prompt"}, "role": {"messages"}, "content": {"messages"}, "name": {"messages"},
           "prompt": {"prompt"}, "tool_choice": set(), "tools": {"tool_choice"},
           "generate_kwargs": {"prompt"}, "min_length": {"generate_kwargs.max_length"}}


def leaves(obj: Any, path: str = "") -> Iterator[str]:
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list) and obj:
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}[{i}]")
    if path:
        yield path


def _steps(path: str) -> list[Any]:
    """``a.b[2].5`` -> ``["a", "b", 2, "5"]`` (an index in brackets, a key after a dot)."""
    return [key if key else int(index) for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)]


def mutated(body: dict, path: str, value: Any) -> dict:
    out = copy.deepcopy(body)
    *parents, last = _steps(path)
    node: Any = out
    for step in parents:
        node = node[step]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


def cases() -> Iterator[Any]:
    for name, (route, body) in BASES.items():
        for path in leaves(body):
            for i, value in enumerate([*WRONG, DELETE]):
                yield pytest.param(route, body, path, value, id=f"{name}:{path}:{i}")


def names(param: str, path: str) -> bool:
    """``param`` is ``path``, an object holding it, a field inside it, or a related field."""
    p, q = _steps(param), _steps(path)
    if p == q[:len(p)] or q == p[:len(q)]:
        return True
    leaf = next((s for s in reversed(q) if isinstance(s, str)), "")
    return any(param == r or param.startswith(r + ".") or param.startswith(r + "[")
               for r in RELATED.get(leaf, set()) | RELATED.get(q[0], set()))


@pytest.fixture(scope="module")
def post(server):
    """POST a body over one keep-alive connection; ``json.dumps`` (ASCII) keeps a lone
    surrogate sendable, as the JSON escape a client would write."""
    with httpx.Client(base_url=server.url, timeout=60, headers={"content-type": "application/json"}) as client:
        yield lambda route, body: client.post(route, content=json.dumps(body).encode())


@pytest.mark.parametrize("route,body", [pytest.param(r, b, id=n) for n, (r, b) in BASES.items()])
def test_the_bases_are_valid(post, route, body):
    r = post(route, body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("route,body,path,value", list(cases()))
def test_a_mutated_request_is_answered_or_refused_naming_the_field(post, openai_schema, route, body, path, value):
    r = post(route, mutated(body, path, value))
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        err = r.json()
        openai_schema(err, "ErrorResponse")
        param = err["error"]["param"]
        assert param and names(param, path), f"mutating {path} to {value!r}: {err['error']}"
        assert err["error"]["message"]
    else:  # a stream that was accepted carries no error event either
        assert 'data: {"error"' not in r.text, r.text[:300]
