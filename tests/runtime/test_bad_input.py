"""Every kind of bad input gets a 4xx with an OpenAI error object naming the parameter:
never a 500, never a dead worker."""

from __future__ import annotations

import httpx
import pytest

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]


def chat(**kw):
    return {"messages": MSG, "max_tokens": 2, **kw}


def comp(**kw):
    return {"prompt": "hi", "max_tokens": 2, **kw}


# (id, route, body (dict -> JSON, bytes -> raw), expected status, expected param)
CASES = [
    ("malformed-json", CHAT, b'{"messages": [', 400, "body"),
    ("invalid-utf8", CHAT, b'{"messages": "\xff\xfe"}', 400, "body"),
    ("json-not-object", CHAT, b'[1, 2, 3]', 400, "body"),
    ("empty-body", CHAT, b"", 400, "body"),
    ("nan-literal", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400, "body"),
    ("deep-nesting", CHAT, b"[" * 20000 + b"]" * 20000, 400, "body"),
    ("missing-messages", CHAT, {"max_tokens": 2}, 400, "messages"),
    ("messages-not-list", CHAT, {"messages": "hello"}, 400, "messages"),
    ("empty-messages", CHAT, {"messages": []}, 400, "messages"),
    ("message-not-object", CHAT, {"messages": ["hi"]}, 400, "messages[0]"),
    ("bad-role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role"),
    ("tool-message-without-call-id", CHAT, {"messages": [{"role": "tool", "content": "x"}]}, 400,
     "messages[0].tool_call_id"),
    ("missing-role", CHAT, {"messages": [{"content": "x"}]}, 400, "messages[0].role"),
    ("missing-content", CHAT, {"messages": [{"role": "user"}]}, 400, "messages[0].content"),
    ("content-wrong-type", CHAT, {"messages": [{"role": "user", "content": 42}]}, 400, "messages[0].content"),
    ("image-content-part", CHAT, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400, "messages[0].content[0].type"),
    ("model-wrong-type", CHAT, chat(model=42), 400, "model"),
    ("unknown-model", CHAT, chat(model="gpt-17"), 404, "model"),
    ("unknown-adapter", COMP, comp(model="no-such-adapter"), 404, "model"),
    ("max-tokens-zero", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    ("max-tokens-negative", COMP, comp(max_tokens=-5), 400, "max_tokens"),
    ("max-tokens-string", CHAT, chat(max_tokens="ten"), 400, "max_tokens"),
    ("max-tokens-fraction", CHAT, chat(max_tokens=1.5), 400, "max_tokens"),
    ("max-tokens-bool", CHAT, chat(max_tokens=True), 400, "max_tokens"),
    ("max-tokens-beyond-context", CHAT, chat(max_tokens=100000), 400, "max_tokens"),
    ("max-completion-tokens-zero", CHAT, chat(max_completion_tokens=0), 400, "max_completion_tokens"),
    ("prompt-longer-than-context", COMP, comp(prompt="hello world " * 600), 400, "prompt"),
    ("messages-longer-than-context", CHAT, {"messages": [{"role": "user", "content": "hello world " * 600}]},
     400, "messages"),
    ("temperature-negative", CHAT, chat(temperature=-0.5), 400, "temperature"),
    ("temperature-too-high", CHAT, chat(temperature=7), 400, "temperature"),
    ("temperature-string", CHAT, chat(temperature="hot"), 400, "temperature"),
    ("top-p-zero", CHAT, chat(top_p=0), 400, "top_p"),
    ("top-p-above-one", COMP, comp(top_p=1.5), 400, "top_p"),
    ("top-k-negative", COMP, comp(top_k=-7), 400, "top_k"),
    ("min-p-out-of-range", COMP, comp(min_p=2), 400, "min_p"),
    ("huge-n", CHAT, chat(n=1000), 400, "n"),
    ("n-zero", CHAT, chat(n=0), 400, "n"),
    ("stop-list-too-long", CHAT, chat(stop=[f"s{i}" for i in range(50)]), 400, "stop"),
    ("stop-wrong-type", CHAT, chat(stop=5), 400, "stop"),
    ("stop-item-wrong-type", CHAT, chat(stop=["ok", 3]), 400, "stop[1]"),
    ("stop-empty-string", COMP, comp(stop=[""]), 400, "stop[0]"),
    ("stop-too-long-string", COMP, comp(stop="x" * 1000), 400, "stop"),
    ("seed-string", CHAT, chat(seed="abc"), 400, "seed"),
    ("seed-too-big", CHAT, chat(seed=2**70), 400, "seed"),
    ("presence-penalty-range", CHAT, chat(presence_penalty=3), 400, "presence_penalty"),
    ("frequency-penalty-range", CHAT, chat(frequency_penalty=-3), 400, "frequency_penalty"),
    ("repetition-penalty-zero", COMP, comp(repetition_penalty=0), 400, "repetition_penalty"),
    ("logit-bias-bad-key", CHAT, chat(logit_bias={"abc": 1}), 400, "logit_bias"),
    ("logit-bias-bad-value", CHAT, chat(logit_bias={"5": 500}), 400, "logit_bias.5"),
    ("stream-not-bool", CHAT, chat(stream="yes"), 400, "stream"),
    ("stream-options-without-stream", CHAT, chat(stream_options={"include_usage": True}), 400, "stream_options"),
    ("include-usage-not-bool", CHAT, chat(stream=True, stream_options={"include_usage": "yes"}), 400,
     "stream_options.include_usage"),
    ("tools-with-auto-choice", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400,
     "tool_choice"),
    ("top-logprobs-without-logprobs", CHAT, chat(top_logprobs=3), 400, "top_logprobs"),
    ("top-logprobs-too-many", CHAT, chat(logprobs=True, top_logprobs=50), 400, "top_logprobs"),
    ("completion-logprobs-too-many", COMP, comp(logprobs=99), 400, "logprobs"),
    ("regex-format-refused", CHAT, chat(response_format={"type": "regex"}), 400, "response_format"),
    ("json-schema-without-schema", CHAT, chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}),
     400, "response_format.json_schema.schema"),
    ("json-schema-not-a-schema", COMP, comp(response_format={"type": "json_schema",
                                                            "json_schema": {"name": "x", "schema": {"type": "fish"}}}),
     400, "response_format.json_schema.schema"),
    ("guided-json-not-json", COMP, comp(guided_json="{not json"), 400, "guided_json"),
    ("response-format-wrong-type", CHAT, chat(response_format="json"), 400, "response_format"),
    ("tool-choice-auto", CHAT, chat(tool_choice="auto"), 400, "tool_choice"),
    ("best-of-above-n", COMP, comp(best_of=3), 400, "best_of"),
    ("surrogate-in-chat", CHAT, b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}', 400,
     "messages[0].content"),
    ("surrogate-in-prompt", COMP, b'{"prompt": "\\udfff", "max_tokens": 2}', 400, "prompt"),
    ("surrogate-in-stop", COMP, b'{"prompt": "x", "stop": ["\\ud83d"]}', 400, "stop[0]"),
    ("surrogate-in-kaito-chat", "/chat", b'{"prompt": "hi \\ud800"}', 400, "prompt"),
    ("user-wrong-type", CHAT, chat(user=5), 400, "user"),
    ("min-tokens-above-max", COMP, comp(min_tokens=10, max_tokens=2), 400, "min_tokens"),
    ("missing-prompt", COMP, {"max_tokens": 2}, 400, "prompt"),
    ("prompt-wrong-type", COMP, comp(prompt={"text": "x"}), 400, "prompt"),
    ("prompt-batch-bad-member", COMP, comp(prompt=["a", [1, "b"], "c"]), 400, "prompt[1]"),
    ("prompt-batch-too-big", COMP, comp(prompt=["a"] * 20, n=16), 400, "prompt"),
    ("prompt-empty", COMP, comp(prompt=""), 400, "prompt"),
    ("prompt-token-out-of-vocab", COMP, comp(prompt=[1, 2, 99999999]), 400, "prompt"),
    ("prompt-negative-token", COMP, comp(prompt=[1, -2]), 400, "prompt"),
    ("suffix-unsupported", COMP, comp(suffix="end"), 400, "suffix"),
    ("echo-not-bool", COMP, comp(echo="yes"), 400, "echo"),
    ("kaito-chat-nothing", "/chat", {"generate_kwargs": {}}, 400, "prompt"),
    ("kaito-chat-prompt-and-messages", "/chat", {"prompt": "x", "messages": MSG}, 400, "messages"),
    ("kaito-chat-generate-kwargs-type", "/chat", {"prompt": "x", "generate_kwargs": [1]}, 400, "generate_kwargs"),
    ("kaito-chat-max-length-type", "/chat", {"prompt": "x", "generate_kwargs": {"max_length": "long"}}, 400,
     "generate_kwargs.max_length"),
    ("kaito-chat-max-length-below-prompt", "/chat", {"prompt": "hello world " * 5,
                                                     "generate_kwargs": {"max_length": 2}}, 400,
     "generate_kwargs.max_length"),
    ("kaito-chat-beams", "/chat", {"prompt": "x", "generate_kwargs": {"num_beams": 4}}, 400,
     "generate_kwargs.num_beams"),
    ("kaito-chat-bad-message", "/chat", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
]


@pytest.mark.parametrize("route,body,status,param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_naming_the_param(server, openai_schema, route, body, status, param):
    if isinstance(body, bytes):
        r = httpx.post(server.url + route, content=body, headers={"content-type": "application/json"}, timeout=30)
    else:
        r = httpx.post(server.url + route, json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()
    openai_schema(err, "ErrorResponse")
    assert err["error"]["param"] == param, err
    assert err["error"]["message"]


def test_at_least_thirty_kinds():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


def test_oversized_body_is_413(server, openai_schema):
    big = {"messages": [{"role": "user", "content": "x" * (80 * 1024)}]}
    r = httpx.post(server.url + CHAT, json=big)
    assert r.status_code == 413
    openai_schema(r.json(), "ErrorResponse")
    assert r.json()["error"]["param"] == "body"

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(100):
            yield b"x" * 1024

    r = httpx.post(server.url + COMP, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method_are_openai_errors(server, openai_schema):
    r = httpx.get(server.url + "/v1/nothing-here")
    assert r.status_code == 404
    openai_schema(r.json(), "ErrorResponse")
    r = httpx.get(server.url + CHAT)
    assert r.status_code == 405
    openai_schema(r.json(), "ErrorResponse")


def test_server_still_serves_after_bad_input(server):
    for body in (b"{", b"\xff", b"[]"):
        httpx.post(server.url + CHAT, content=body)
    r = httpx.post(server.url + CHAT, json=chat())
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["role"] == "assistant"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'code="500"' not in metrics
