"""Hostile requests found by auditing the running server, each pinned: the answer is a 4xx in
OpenAI's error shape naming the field at fault (never a 500), heavy ones stay off the event loop
and out of the batch, and the server's HTTP semantics hold (405 with Allow, OPTIONS, HEAD,
JSON-only bodies). Streams under attack: tests/runtime/test_hostile_streams.py."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]
REGEX_BOMB = "a{1000000}"  # compiles, then llguidance's lexer gives up at the first token


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def refused(exc: openai.APIStatusError, status: int, param: str) -> str:
    assert exc.status_code == status, exc
    assert exc.body["param"] == param, exc.body
    return exc.body["message"]


# -- through the real OpenAI client ----------------------------------------------------------


def test_an_integer_beyond_float_range_is_a_400_not_a_500(client):
    # JSON has no size limit on integers; float(10**400) raises OverflowError
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=2, temperature=10**400)
    assert "expected a number in [0.0, 2.0]" in refused(err.value, 400, "temperature")
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny-llama", prompt="x", max_tokens=2, top_p=-(10**400))
    refused(err.value, 400, "top_p")


def test_logit_bias_outside_the_vocabulary_is_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=2, logit_bias={"99999999": 5})
    message = refused(err.value, 400, "logit_bias")
    assert "99999999" in message and "vocabulary size (512)" in message
    ok = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=2, logit_bias={"511": 5})
    assert ok.choices[0].message.role == "assistant"


def test_max_completion_tokens_beyond_the_context_names_that_field(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_completion_tokens=100000)
    assert "lower max_completion_tokens" in refused(err.value, 400, "max_completion_tokens")


def _failed_generations(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith('kaito_finished_requests_total{reason="error"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_regex_the_grammar_engine_gives_up_on_is_refused_before_the_batch(client, server):
    """llguidance builds its lexer in the first mask computations: for ``a{1000000}`` 0.4-1.4 s
    on the engine thread (every stream of the batch stalled), then a failure. The compiling
    worker now rehearses the first steps, so the request is a 400 that never reaches the engine."""
    before = _failed_generations(server.url)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model="tiny-llama", prompt="aaa", max_tokens=4, stream=stream,
                                      extra_body={"guided_regex": REGEX_BOMB})
        message = refused(err.value, 400, "guided_regex")
        assert "is not a regular expression this server can follow" in message
        assert "too many expressions" in message and "<state>" not in message
    assert _failed_generations(server.url) == before


def test_a_regex_that_breaks_later_fails_its_request_alone_as_a_400(client):
    late = "b[a-z]" + REGEX_BOMB  # past the rehearsed steps: fails (fast) in the engine
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny-llama", prompt="aaa", max_tokens=8, extra_body={"guided_regex": late})
    assert "could not be followed" in refused(err.value, 400, "guided_regex")
    stream = client.completions.create(model="tiny-llama", prompt="aaa", max_tokens=8, stream=True,
                                       extra_body={"guided_regex": late})
    with pytest.raises(openai.APIError) as err:  # the 200 is sent: the error arrives as an event
        list(stream)
    assert "guided_regex" in str(err.value)


def test_guided_choice_takes_its_4096_choices(client):
    choices = [f"option-{i}" for i in range(4096)]
    out = client.completions.create(model="tiny-llama", prompt="pick", max_tokens=40, temperature=0,
                                    extra_body={"guided_choice": choices})
    assert out.choices[0].text in choices


def test_a_message_name_must_be_a_string(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny-llama", max_tokens=2,
                                       messages=[{"role": "user", "content": "x", "name": {"a": 1}}])
    refused(err.value, 400, "messages[0].name")


def test_compiled_grammars_kept_are_bounded_by_their_schemas_size(server, monkeypatch):
    """A compiled grammar's tables grow with its schema: the cache holds at most
    MAX_CACHED_SPEC_BYTES of schema text, however many distinct big schemas arrive."""
    from kaito_core.runtime import grammar
    from kaito_core.runtime.constraints import Constraint
    from kaito_core.runtime.grammar import Grammars

    service = server.service
    grammars = Grammars(service.loaded.tokenizer, service.loaded.vocab_size, service.loaded.eos_ids)
    monkeypatch.setattr(grammar, "MAX_CACHED_SPEC_BYTES", 30_000)
    schemas = [{"enum": [f"v{k}-{i}" for i in range(1000)]} for k in range(6)]  # ~10 KB each
    for schema in schemas:
        grammars.compile(Constraint("json_schema", schema, "guided_json"))
    assert 1 <= len(grammars._cache) <= 3
    assert grammars._cached_bytes == sum(len(k) for k in grammars._cache) <= 30_000
    last = Constraint("json_schema", schemas[-1], "guided_json")
    assert grammars.compile(last) is grammars.compile(last)  # the newest stays cached


# -- raw HTTP: what the client cannot send ---------------------------------------------------


def test_a_lone_surrogate_in_a_key_is_named_by_its_escape(server, openai_schema):
    r = httpx.post(server.url + CHAT, content=b'{"messages": [{"role": "user", "content": "x"}], "\\ud800": 1}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()
    openai_schema(err, "ErrorResponse")
    assert err["error"]["param"] == "\\ud800" and "lone surrogate" in err["error"]["message"]
    r = httpx.post(server.url + COMP, content=b'{"prompt": "x", "a\\udc00": {"b": "\\ud800"}}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] in ("a\\udc00", "a\\udc00.b"), r.text


def test_a_tool_schema_too_deep_for_the_template_names_tools(server):
    schema = '{"type": "array", "items": ' * 600 + "{}" + "}" * 600
    body = ('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "tools": [{"type": "function", '
            '"function": {"name": "f", "parameters": ' + schema + '}}], "tool_choice": "none"}')
    r = httpx.post(server.url + CHAT, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools", r.text
    assert "nests too deeply" in r.json()["error"]["message"]


@pytest.mark.parametrize("depth,status", [(60, 200), (70, 400)])
def test_the_template_depth_limit_is_fixed_not_the_stack_left(server, depth, status):
    """Whether rendering hits a RecursionError depends on the stack the worker thread has used;
    the limit is a fixed nesting depth, so the same request gets the same answer every time."""
    schema = '{"type": "array", "items": ' * (depth - 4) + "{}" + "}" * (depth - 4)
    body = ('{"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "tools": [{"type": "function", '
            '"function": {"name": "f", "parameters": ' + schema + '}}], "tool_choice": "none"}')
    r = httpx.post(server.url + CHAT, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["param"] == "tools" and "more than 64 levels" in r.json()["error"]["message"]


def test_nesting_counts_lists_and_objects():
    from kaito_core.runtime.fields import nesting

    assert nesting([], 10) == 1 and nesting({"a": [{"b": 1}]}, 10) == 3 and nesting("text", 10) == 0
    deep: list = []
    for _ in range(10_000):  # far past the interpreter's recursion limit
        deep = [deep]
    assert nesting(deep, 64) == 65  # stops counting past the limit


@pytest.mark.parametrize("content_type,status", [
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
    ("application/json; charset=utf-8", 200), ("application/vnd.kaito+json", 200), (None, 200)])
def test_bodies_are_json_only(server, openai_schema, content_type, status):
    headers = {} if content_type is None else {"content-type": content_type}
    r = httpx.post(server.url + COMP, content=json.dumps({"prompt": "hi", "max_tokens": 2}), headers=headers)
    assert r.status_code == status, r.text
    if status == 415:
        openai_schema(r.json(), "ErrorResponse")
        err = r.json()["error"]
        assert err["param"] == "content-type" and content_type.split(";")[0] in err["message"]
        assert "Content-Type: application/json" in err["message"]


def test_a_compressed_body_is_refused_naming_the_encoding(server, openai_schema):
    import gzip

    body = gzip.compress(json.dumps({"prompt": "hi", "max_tokens": 2}).encode())
    r = httpx.post(server.url + COMP, content=body, headers={"content-type": "application/json",
                                                             "content-encoding": "gzip"})
    assert r.status_code == 415 and r.json()["error"]["param"] == "content-encoding", r.text
    openai_schema(r.json(), "ErrorResponse")
    assert "'gzip'" in r.json()["error"]["message"]


def test_large_bodies_are_parsed_off_the_event_loop(server, monkeypatch):
    """200,000 content parts took 0.4 s of checks on the event loop (every stream stalled);
    a body over OFFLOAD_BYTES is parsed and checked on a worker thread instead."""
    import threading

    from kaito_core.runtime import http

    seen: list[int] = []
    real = http.parse_json

    def spy(raw: bytes):
        seen.append(threading.get_ident())
        return real(raw)

    monkeypatch.setattr(http, "parse_json", spy)
    monkeypatch.setattr(http, "OFFLOAD_BYTES", 4096)  # the session's server takes 64 KiB at most
    parts = [{"type": "text", "text": "ab"}] * 500    # about 14 KB
    for content in ("hi", parts):
        r = httpx.post(server.url + CHAT, json={"messages": [{"role": "user", "content": content}], "max_tokens": 2})
        assert r.status_code in (200, 400), r.text
    assert seen[0] == server.thread.ident  # small: on the loop's thread, no hand-off
    assert seen[1] != server.thread.ident


def test_answers_with_logprobs_are_encoded_off_the_loop_choice_by_choice(server, client, monkeypatch):
    """A 16 MB answer (n=16, top 20, a scored prompt) was built and encoded on the event loop in
    one json.dumps call: every stream stalled 0.65 s. It is built on a worker thread and encoded
    one choice per call; the bytes are those one call would give."""
    import threading

    from kaito_core.runtime import routes_openai

    hostile = {"id": "x", "choices": [{"text": routes_openai._SLOT}, {"text": "é\u0000"}],
               "prompt_logprobs": [{routes_openai._SLOT: -1.5}], "usage": {"total_tokens": 3}}
    assert routes_openai._encode(dict(hostile)) == json.dumps(hostile, ensure_ascii=False,
                                                              separators=(",", ":")).encode()
    threads: list[int] = []
    real = routes_openai._encode
    monkeypatch.setattr(routes_openai, "_encode", lambda a: threads.append(threading.get_ident()) or real(a))
    plain = client.completions.create(model="tiny-llama", prompt="hi", max_tokens=3, n=2, temperature=0)
    scored = client.completions.create(model="tiny-llama", prompt="hi there", max_tokens=3, n=2, logprobs=5,
                                       echo=True, extra_body={"prompt_logprobs": 5})
    assert len(plain.choices) == len(scored.choices) == 2 and scored.choices[1].logprobs.top_logprobs
    assert threads[0] == server.thread.ident and threads[1] != server.thread.ident


def test_a_utf8_byte_order_mark_is_skipped_and_utf16_named(server):
    body = json.dumps({"prompt": "hi", "max_tokens": 2})
    r = httpx.post(server.url + COMP, content=b"\xef\xbb\xbf" + body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1, r.text
    r = httpx.post(server.url + COMP, content=body.encode("utf-16"), headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid UTF-8" in r.json()["error"]["message"], r.text


def test_kaito_chat_names_its_own_generate_kwargs(server):
    r = httpx.post(server.url + "/chat", json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 10**6}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "generate_kwargs.max_new_tokens", r.text
    assert r.json()["detail"] == r.json()["error"]["message"]
    r = httpx.post(server.url + "/chat", json={"prompt": "x", "generate_kwargs": {"stop_strings": [1]}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "generate_kwargs.stop_strings[0]", r.text
    r = httpx.post(server.url + "/chat", json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 3,
                                                                                  "stop_strings": ["zzz"]}})
    assert r.status_code == 200 and isinstance(r.json()["Result"], str), r.text


@pytest.mark.parametrize("strength", [10**400, "0.5", True])
def test_admin_strength_must_be_a_number(keyed_server, adapters, strength):
    r = httpx.post(keyed_server.url + "/v1/load_lora_adapter", headers={"authorization": "Bearer s3cret"},
                   json={"lora_name": "big", "lora_path": str(adapters["sql"]), "strength": strength})
    assert r.status_code == 400 and r.json()["error"]["param"] == "strength", r.text


def test_vllm_admin_routes_name_the_fields_the_client_sent(keyed_server, tmp_path):
    key = {"authorization": "Bearer s3cret"}
    r = httpx.post(keyed_server.url + "/v1/load_lora_adapter", headers=key,
                   json={"lora_name": "tiny-llama", "lora_path": str(tmp_path)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_name", r.text
    assert r.json()["error"]["message"].startswith("'lora_name' is 'tiny-llama'")
    r = httpx.post(keyed_server.url + "/v1/load_lora_adapter", headers=key,
                   json={"lora_name": "empty", "lora_path": str(tmp_path)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "lora_path", r.text
    r = httpx.post(keyed_server.url + "/admin/adapters", headers=key, json={"name": "empty", "source": str(tmp_path)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "source", r.text


# -- HTTP semantics ---------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,allow", [
    ("GET", CHAT, "OPTIONS, POST"), ("DELETE", "/health", "GET, HEAD, OPTIONS"),
    ("PUT", "/admin/adapters", "GET, OPTIONS, POST"), ("POST", "/v1/models", "GET, HEAD, OPTIONS")])
def test_405_says_what_is_allowed(server, openai_schema, method, path, allow):
    r = httpx.request(method, server.url + path)
    assert r.status_code == 405 and r.headers["allow"] == allow, (r.headers, r.text)
    openai_schema(r.json(), "ErrorResponse")
    assert f"{method} is not allowed" in r.json()["error"]["message"]
    options = httpx.options(server.url + path)
    assert options.status_code == 204 and options.headers["allow"] == allow and not options.content
    assert "access-control-allow-origin" not in options.headers


def test_head_answers_like_get_without_a_body(server):
    for path in ("/health", "/healthz", "/v1/models", "/v1/models/tiny-llama", "/metrics", "/"):
        get, head = httpx.get(server.url + path), httpx.head(server.url + path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    assert httpx.head(server.url + "/no/such/path").status_code == 404
