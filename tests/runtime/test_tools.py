"""Forced tool calls (tool_choice named or "required") through structured outputs, with the real
OpenAI client, as vLLM serves them; tool messages in the history; "auto" refused as vLLM refuses
it without a tool-call parser."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from kaito_core.runtime.protocol import parse_chat

WEATHER = {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
           "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["C", "F"]}}}
TIME = {"type": "object", "additionalProperties": False, "required": ["zone"],
        "properties": {"zone": {"enum": ["UTC", "CET"]}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
MSG = [{"role": "user", "content": "Weather in Paris?"}]
COMPACT = {"structured_outputs": {"disable_any_whitespace": True}}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_a_named_tool_choice_returns_that_call(client, openai_schema):
    raw = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=MSG, tools=TOOLS,
                                                           tool_choice=NAMED, max_tokens=60, temperature=0,
                                                           extra_body=COMPACT)
    openai_schema(json.loads(raw.text), "CreateChatCompletionResponse")
    resp = raw.parse()
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content == ""   # vLLM's shape
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("chatcmpl-tool")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)


def test_required_returns_calls_of_the_tools_sent(client):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, tools=TOOLS, tool_choice="required",
                                          max_tokens=120, temperature=0.8, seed=2, n=2, extra_body=COMPACT)
    for choice in resp.choices:
        assert choice.message.tool_calls, choice
        for call in choice.message.tool_calls:
            schema = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
            jsonschema.validate(json.loads(call.function.arguments), schema)


def test_parallel_tool_calls_false_allows_one_call(client):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, tools=TOOLS, tool_choice="required",
                                          parallel_tool_calls=False, max_tokens=120, temperature=0.8, seed=2, n=3,
                                          extra_body=COMPACT)
    assert [len(c.message.tool_calls) for c in resp.choices] == [1, 1, 1]


@pytest.mark.parametrize("tool_choice", [NAMED, "required"])
def test_streamed_tool_calls_add_up_to_the_whole_answer(client, tool_choice):
    kw = dict(model="tiny-llama", messages=MSG, tools=TOOLS, tool_choice=tool_choice, max_tokens=120,
              temperature=0, extra_body=COMPACT)
    whole = client.chat.completions.create(**kw).choices[0].message.tool_calls
    calls: dict[int, dict] = {}
    finishes = []
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:   # accumulated as the openai client's helpers do
                call = calls.setdefault(d.index, {"name": None, "arguments": "", "id": None})
                call["id"] = call["id"] or d.id
                call["name"] = call["name"] or (d.function.name if d.function else None)
                call["arguments"] += (d.function.arguments or "") if d.function else ""
            if c.finish_reason:
                finishes.append(c.finish_reason)
    assert finishes == ["stop"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == \
        [(w.function.name, json.loads(w.function.arguments)) for w in whole]
    assert all(c["id"] for c in calls.values())


def test_tool_messages_in_the_history_and_tools_in_the_template(client, server, monkeypatch):
    history = MSG + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                              "arguments": "{\"city\": \"Paris\", \"unit\": \"C\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"}]
    resp = client.chat.completions.create(model="tiny-llama", messages=history, tools=TOOLS, tool_choice="none",
                                          max_tokens=3)
    assert resp.choices[0].message.tool_calls is None and resp.choices[0].finish_reason in ("stop", "length")
    # what the template is given: the tools, and each call's arguments as an object
    monkeypatch.setattr(server.service.loaded, "chat_template",
                        "{% for t in tools %}[{{ t.function.name }}]{% endfor %}"
                        "{% for m in messages %}{% for c in m.tool_calls or [] %}"
                        "<{{ c.function.arguments.city }}>{% endfor %}{{ m.content }}{% endfor %}")
    text = server.service.prepare(parse_chat({"messages": history, "tools": TOOLS, "tool_choice": "none"})).prompt_text
    assert text.startswith("[get_weather][get_time]") and "<Paris>" in text and "21 degrees" in text


@pytest.mark.parametrize("extra,param", [
    ({"tools": TOOLS}, "tool_choice"),                                   # OpenAI's default: auto
    ({"tools": TOOLS, "tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),                        # no tools
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}], "tool_choice": "none"},
     "tools[0].function.name"),
    ({"tools": TOOLS + TOOLS[:1], "tool_choice": "none"}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}], "tool_choice": "none"},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "code_interpreter"}], "tool_choice": "none"}, "tools[0].type"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "fish"}}}],
      "tool_choice": "required"}, "tools"),
])
def test_bad_tool_requests_are_400s_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=4, extra_body=extra)
    assert exc.value.body["param"] == param, exc.value.body


def test_a_tool_message_needs_its_text_and_legacy_roles_are_named(client):
    for msg, param in (({"role": "tool", "tool_call_id": "c"}, "messages[0].content"),
                       ({"role": "function", "content": "x"}, "messages[0].role"),
                       ({"role": "tool", "tool_call_id": 5, "content": "x"}, "messages[0].tool_call_id")):
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="tiny-llama", messages=[msg], max_tokens=2)
        assert exc.value.body["param"] == param
