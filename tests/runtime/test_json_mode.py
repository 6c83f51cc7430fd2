"""JSON mode (``response_format`` json_object / json_schema, vLLM's ``guided_json`` and
``structured_outputs``) through llguidance, with the real OpenAI client against a real server
on the tiny random Llama (its tokenizer is a real fast byte-level BPE, which llguidance reads).

A random model never wants to write JSON, so these tests show the mask alone makes it: the
schemas are bounded (maxLength, enum, integer ranges) so every output ends within max_tokens,
and ``disable_any_whitespace`` keeps a random model from filling max_tokens with whitespace
(which the default, flexible whitespace allows, as in vLLM).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import re
import sys

import httpx
import jsonschema
import openai
import pytest
import torch

MSG = [{"role": "user", "content": "Describe a pet as JSON."}]
PET = {"type": "object", "additionalProperties": False, "required": ["name", "age", "kind"],
       "properties": {"name": {"type": "string", "maxLength": 8},
                      "age": {"type": "integer", "minimum": 0, "maximum": 120},
                      "kind": {"enum": ["cat", "dog"]}}}
COMPACT = {"structured_outputs": {"disable_any_whitespace": True}}


def pet_format(schema: dict = PET) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_json_object_output_parses_as_a_json_object(client, server):
    # a nudge towards closing the object (the grammar decides when '}' is allowed at all)
    close = server.service.loaded.tokenizer.convert_tokens_to_ids("}")
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=64, temperature=0,
                                          response_format={"type": "json_object"}, logit_bias={str(close): 5},
                                          extra_body=COMPACT)
    choice = resp.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(json.loads(choice.message.content), dict)
    # the same request without JSON mode is no JSON at all: the mask made the difference
    free = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=64, temperature=0,
                                          logit_bias={str(close): 5})
    with pytest.raises(ValueError):
        json.loads(free.choices[0].message.content)


def test_json_schema_output_validates(client):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=100, temperature=0,
                                          response_format=pet_format(), extra_body=COMPACT)
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), PET)
    assert resp.usage.completion_tokens < 100


def test_json_schema_on_completions_and_guided_json(client):
    for extra in ({"response_format": pet_format(), **COMPACT},
                  {"guided_json": PET, **COMPACT},
                  {"structured_outputs": {"json": json.dumps(PET), "disable_any_whitespace": True}}):
        resp = client.completions.create(model="tiny-llama", prompt="A pet:", max_tokens=100, temperature=0,
                                         extra_body=extra)
        assert resp.choices[0].finish_reason == "stop", extra
        jsonschema.validate(json.loads(resp.choices[0].text), PET)


def test_streamed_json_schema_output_validates(client):
    stream = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=100, temperature=0.8,
                                            seed=7, stream=True, response_format=pet_format(), extra_body=COMPACT)
    parts, finishes = [], []
    for chunk in stream:
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            if c.finish_reason:
                finishes.append(c.finish_reason)
    assert finishes == ["stop"]
    assert len([p for p in parts if p]) > 3  # it really streamed, token by token
    jsonschema.validate(json.loads("".join(parts)), PET)


def test_n2_with_a_schema_gives_two_valid_choices(client):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=100, temperature=1.0,
                                          seed=3, n=2, response_format=pet_format(), extra_body=COMPACT)
    assert [c.index for c in resp.choices] == [0, 1]
    docs = [json.loads(c.message.content) for c in resp.choices]
    for doc in docs:
        jsonschema.validate(doc, PET)
    assert docs[0] != docs[1]  # two matchers, two seeds: not one choice copied


@pytest.mark.parametrize("extra,param,words", [
    ({"response_format": pet_format({"type": "fish"})}, "response_format.json_schema.schema", "fish"),
    ({"response_format": pet_format({"$ref": "#/$defs/missing"})}, "response_format.json_schema.schema",
     "missing"),
    ({"guided_json": {"type": "object", "properties": {"a": {"type": 5}}}}, "guided_json", "JSON Schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", "required"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": PET}}},
     "response_format.json_schema.name", "required"),
    ({"response_format": {"type": "json_object"}, "guided_json": PET}, "guided_json", "one constraint"),
    ({"structured_outputs": {"structural_tag": "{}"}}, "structured_outputs.structural_tag", "not supported"),
    ({"structured_outputs": {"disable_any_whitespace": True}}, "structured_outputs.disable_any_whitespace",
     "constraint"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "json_schema"),
])
def test_a_bad_schema_is_a_400_naming_the_field(client, extra, param, words):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=4, extra_body=extra)
    err = exc.value.body
    assert err["param"] == param, err
    assert words in err["message"] and param in err["message"], err


def test_a_refused_schema_is_cached_and_still_names_its_field(server):
    bad = {"type": "fish"}
    grammars = server.service.grammars
    for field, extra in (("response_format.json_schema.schema", {"response_format": pet_format(bad)}),
                         ("guided_json", {"guided_json": bad})):
        r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, **extra}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert sum(1 for v in grammars._cache.values() if isinstance(v, str)) >= 1


def _chat(url: str, prompt: str, stream: bool, **extra) -> str:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 24, "temperature": 0,
            "ignore_eos": True, "stream": stream, **extra}
    if not stream:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]
    parts = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                data = json.loads(line[6:])
                assert "error" not in data, data
                parts += [c["delta"].get("content") or "" for c in data["choices"]]
    return "".join(parts)


def test_constrained_requests_leave_their_neighbours_byte_identical(tiny_models, make_server):
    srv = make_server(model=str(tiny_models["llama"]), max_batch=16)
    prompts = [f"Tell me about item {i}" for i in range(6)]
    solo = [_chat(srv.url, p, i % 2 == 0) for i, p in enumerate(prompts)]
    constrained = {"response_format": pet_format(), **COMPACT, "ignore_eos": False, "max_tokens": 100}
    with cf.ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(_chat, srv.url, p, i % 2 == 0) for i, p in enumerate(prompts)]
        json_rows = [pool.submit(_chat, srv.url, f"pet {i}", i == 0, **constrained) for i in range(3)]
        together = [f.result() for f in futures]
        docs = [json.loads(f.result()) for f in json_rows]
    assert together == solo
    for doc in docs:
        jsonschema.validate(doc, PET)
    assert srv.service.engine.max_batch_seen >= 4  # they really shared the batch


def test_without_llguidance_json_mode_is_a_400_saying_what_to_install(tiny_models, make_server, monkeypatch):
    srv = make_server(model=str(tiny_models["llama"]))
    monkeypatch.setitem(sys.modules, "llguidance", None)  # `import llguidance` raises ImportError
    r = httpx.post(srv.url + "/v1/chat/completions", timeout=30,
                   json={"messages": MSG, "max_tokens": 4, "response_format": {"type": "json_object"}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "response_format" and "kaito-core[runtime]" in err["message"], err
    # everything else still works
    ok = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MSG, "max_tokens": 4}, timeout=30)
    assert ok.status_code == 200


# -- the pieces, without HTTP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def grammars(server):
    return server.service.grammars


def _tokens(server, text: str) -> list[int]:
    return server.service.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_whitespace_is_flexible_by_default_and_compact_on_request(server, grammars):
    from kaito_core.runtime.constraints import Constraint

    spaced = _tokens(server, '{ "age": 3 }')
    flexible = grammars.rows(Constraint("json_object", None, "response_format"), 1)[0].matcher
    compact = grammars.rows(Constraint("json_object", None, "response_format", compact=True), 1)[0].matcher
    assert flexible.validate_tokens(spaced) == len(spaced)
    assert compact.validate_tokens(spaced) < len(spaced)


def test_compiled_grammars_are_cached_and_each_choice_has_its_own_state(server, grammars):
    from kaito_core.runtime.constraints import Constraint

    c = Constraint("json_schema", PET, "guided_json", compact=True)
    assert grammars.compile(c) is grammars.compile(Constraint("json_schema", dict(reversed(PET.items())), "x",
                                                              compact=True))
    assert grammars.compile(c) is not grammars.compile(Constraint("json_schema", PET, "guided_json"))
    a, b = grammars.rows(c, 2)
    assert a.advance(_tokens(server, "{")[0]) is None
    assert not b.matcher.validate_tokens(_tokens(server, '"name"'))  # b has not seen '{'


def _sequence(server, grammar=None):
    from kaito_core.runtime.protocol import SamplingParams
    from kaito_core.runtime.sequence import Sequence
    from kaito_core.runtime.textstream import Detokenizer

    outs: list = []
    seq = Sequence(prompt_ids=[1, 2, 3], params=SamplingParams(temperature=0.0), max_new_tokens=50,
                   eos_ids=server.service.loaded.eos_ids, detok=Detokenizer(server.service.loaded.tokenizer),
                   sink=outs.append, grammar=grammar)
    return seq, outs


def test_a_broken_matcher_fails_its_row_alone_and_masks_only_constrained_rows(server, grammars):
    from kaito_core.runtime.constraints import Constraint
    from kaito_core.runtime.engine import Engine

    c = Constraint("json_schema", PET, "guided_json", compact=True)
    good, broken = grammars.rows(c, 2)
    assert not broken.matcher.consume_token(_tokens(server, "x")[0])  # 'x' cannot start an object
    engine = Engine(server.service.loaded.model)
    rows = [_sequence(server)[0], _sequence(server, good)[0], _sequence(server, broken)[0]]
    vocab = server.service.loaded.vocab_size
    logits = torch.randn(3, vocab)
    logits[1, _tokens(server, "x")[0]] = 1e4   # the model 'wants' x; the grammar says '{' first
    engine._after_step(rows, logits.clone())
    assert rows[0].output_ids == [int(logits[0].argmax())]          # unconstrained: untouched
    assert server.service.loaded.tokenizer.decode(rows[1].output_ids) == "{"
    assert rows[2].finish_reason == "error" and rows[2].output_ids == []
    assert rows[0].finish_reason is None and rows[1].finish_reason is None
    assert "grammar failed" in engine._pending[-1][1].error


def test_a_complete_grammar_finishes_with_stop(server, grammars):
    from kaito_core.runtime.constraints import Constraint
    from kaito_core.runtime.engine import Engine

    row = grammars.rows(Constraint("json_schema", {"enum": ["cat"]}, "guided_json"), 1)[0]
    engine = Engine(server.service.loaded.model)
    seq, outs = _sequence(server, row)
    for _ in range(10):
        if seq.finish_reason:
            break
        engine._after_step([seq], torch.zeros(1, server.service.loaded.vocab_size))
        engine._flush()
    assert seq.finish_reason == "stop"
    assert "".join(o.text for o in outs) == '"cat"'


def test_json_mode_on_the_dynamic_cache_engine_and_phi3(tiny_models, make_server):
    """Engine (DynamicCache) prefills and decodes through the same _after_step; Phi-3's tiny
    model has its own tokenizer instance for llguidance to read."""
    for arch, kv_cache in (("llama", "dynamic"), ("phi3", "auto")):
        srv = make_server(model=str(tiny_models[arch]), kv_cache=kv_cache, max_batch=4)
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        resp = client.chat.completions.create(model=srv.service.model_id, messages=MSG, max_tokens=100, n=2,
                                              temperature=0.9, seed=5, response_format=pet_format(),
                                              extra_body=COMPACT)
        for c in resp.choices:
            assert c.finish_reason == "stop", (arch, c)
            jsonschema.validate(json.loads(c.message.content), PET)
        srv.stop()


def test_json_mode_under_the_static_decode_step(tiny_models, make_server, monkeypatch):
    """The static (CUDA-graph) decode step samples on the device only when no row needs the host:
    a constrained row sends the whole step through Engine._after_step, where its mask applies."""
    monkeypatch.setenv("KAITO_CUDA_GRAPHS", "on")   # on CPU: the same static step, run eagerly
    srv = make_server(model=str(tiny_models["llama"]), max_batch=4)
    assert getattr(srv.service.engine, "graphs", None) is not None
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    resp = client.chat.completions.create(model=srv.service.model_id, messages=MSG, max_tokens=100, temperature=0,
                                          response_format=pet_format(), extra_body=COMPACT)
    assert resp.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(resp.choices[0].message.content), PET)


def test_hostile_schemas_are_400s_naming_the_field(grammars):
    from kaito_core.runtime.constraints import Constraint
    from kaito_core.runtime.errors import APIError

    deep: dict = {"type": "integer"}
    for _ in range(2000):  # past the interpreter's recursion limit
        deep = {"type": "object", "properties": {"a": deep}}
    for schema, words in ((deep, "nests too deeply"),
                          ({"type": "integer", "minimum": -10**30}, "not a JSON Schema this server can follow")):
        with pytest.raises(APIError) as exc:
            grammars.compile(Constraint("json_schema", schema, "guided_json"))
        assert exc.value.status == 400 and exc.value.param == "guided_json" and words in exc.value.message


# -- vLLM's other constraints: regex, choice, grammar ----------------------------------------


@pytest.mark.parametrize("extra,check", [
    ({"guided_choice": ["yes", "no", "maybe so"]}, lambda t: t in ("yes", "no", "maybe so")),
    ({"structured_outputs": {"choice": ["cat", "dog"]}}, lambda t: t in ("cat", "dog")),
    ({"guided_regex": r"[0-9]{3}-[a-z]{2}"}, lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2}", t)),
    ({"structured_outputs": {"grammar": 'start: "ab" ("c" | "d") NUM\nNUM: /[0-9]{2}/'}},
     lambda t: re.fullmatch(r"ab[cd][0-9]{2}", t)),
    ({"guided_grammar": 'root ::= "red" | "green" | "blue"'}, lambda t: t in ("red", "green", "blue")),  # GBNF
])
def test_vllm_regex_choice_and_grammar_constraints(client, extra, check):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=20, temperature=0.7, seed=1,
                                          extra_body=extra)
    choice = resp.choices[0]
    assert choice.finish_reason == "stop" and check(choice.message.content), (extra, choice.message.content)


@pytest.mark.parametrize("extra,param", [
    ({"guided_regex": "a(b"}, "guided_regex"),
    ({"structured_outputs": {"grammar": "start: undefined_rule"}}, "structured_outputs.grammar"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_choice": ["a", 5]}, "guided_choice[1]"),
    ({"guided_regex": "a+", "guided_choice": ["a"]}, "guided_choice"),
    ({"structured_outputs": {"regex": "a+", "json_object": True}}, "structured_outputs.json_object"),
])
def test_bad_vllm_constraints_are_400s_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=4, extra_body=extra)
    assert exc.value.body["param"] == param, exc.value.body


def test_unconstrained_batches_never_touch_the_grammar_code(server, monkeypatch):
    from kaito_core.runtime import grammar

    def boom(*_a, **_k):
        raise AssertionError("constrain() ran for a batch without constraints")

    monkeypatch.setattr(grammar, "constrain", boom)
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 4, "ignore_eos": True},
                   timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    bad = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 4, "guided_choice": ["a"]},
                     timeout=30)
    assert bad.status_code == 500  # and a constrained one does go through it


def _whitespace_outside_strings(text: str) -> bool:
    in_string = escaped = False
    for ch in text:
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in " \t\r\n":
            return True
    return False


def test_whitespace_scanner():
    assert _whitespace_outside_strings('{"a": 1}') and not _whitespace_outside_strings('{"a b":"c\\" d"}')


def test_disable_any_whitespace_server_wide(tiny_models, make_server, tmp_path):
    from kaito_core.runtime.options import OptionsError, build_parser, options_from_args

    srv = make_server(model=str(tiny_models["llama"]), disable_any_whitespace=True)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    resp = client.chat.completions.create(model=srv.service.model_id, messages=MSG, max_tokens=100, temperature=0,
                                          response_format=pet_format())   # no per-request option
    assert resp.choices[0].finish_reason == "stop"
    text = resp.choices[0].message.content
    jsonschema.validate(json.loads(text), PET)
    assert not _whitespace_outside_strings(text), text
    # the flag and inference_config.yaml's transformers: section
    assert options_from_args(build_parser().parse_args(["--model", "m", "--disable-any-whitespace"])) \
        .disable_any_whitespace is True
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text("transformers:\n  disable_any_whitespace: true\n")
    assert options_from_args(build_parser().parse_args(["--model", "m", "--config", str(cfg)])).disable_any_whitespace
    cfg.write_text("transformers:\n  disable_any_whitespace: 'false'\n")
    with pytest.raises(OptionsError, match="disable_any_whitespace"):
        options_from_args(build_parser().parse_args(["--model", "m", "--config", str(cfg)]))
