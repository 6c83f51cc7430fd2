"""The OpenAI routes over real HTTP with the real ``openai`` client, answers checked against
OpenAI's published schemas."""

from __future__ import annotations

import json

import httpx
import openai
import pytest


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_completion_with_usage(client, server, openai_schema):
    resp = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "Hello"}],
                                          max_tokens=7, temperature=0)
    choice = resp.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens <= 7 and resp.usage.completion_tokens >= 1
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.model == "tiny-llama"
    raw = httpx.post(server.url + "/v1/chat/completions", json={
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 4}).json()
    openai_schema(raw, "CreateChatCompletionResponse")


def test_length_finish_reason_and_ignore_eos(client):
    resp = client.completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=12,
                                     extra_body={"ignore_eos": True})
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 12


def test_completion_schema_and_echo(server, openai_schema):
    body = httpx.post(server.url + "/v1/completions",
                      json={"prompt": "Kubernetes schedules", "max_tokens": 5, "echo": True}).json()
    openai_schema(body, "CreateCompletionResponse")
    assert body["choices"][0]["text"].startswith("Kubernetes schedules")


def test_completion_token_id_prompt(client):
    resp = client.completions.create(model="tiny-llama", prompt=[10, 20, 30, 40], max_tokens=3,
                                      extra_body={"ignore_eos": True})
    assert resp.usage.prompt_tokens == 4 and resp.usage.completion_tokens == 3


def test_greedy_is_deterministic_and_seed_reproducible(client):
    kw = dict(model="tiny-llama", prompt="LoRA adapters add", max_tokens=16, extra_body={"ignore_eos": True})
    a = client.completions.create(temperature=0, **kw).choices[0].text
    b = client.completions.create(temperature=0, **kw).choices[0].text
    assert a == b
    s1 = client.completions.create(temperature=1.0, seed=1234, **kw).choices[0].text
    s2 = client.completions.create(temperature=1.0, seed=1234, **kw).choices[0].text
    s3 = client.completions.create(temperature=1.0, seed=99, **kw).choices[0].text
    assert s1 == s2
    assert s3 != s1  # 16 random tokens from a 512-token vocabulary: equal only by a miracle


def test_stop_string_cuts_output(client):
    kw = dict(model="tiny-llama", prompt="Numbers: 0 1 2", max_tokens=24, temperature=0,
              extra_body={"ignore_eos": True})
    full = client.completions.create(**kw).choices[0].text
    assert len(full) > 4
    stop = full[2:4]
    cut = client.completions.create(stop=[stop], **kw).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full[:full.index(stop)]
    assert stop not in cut.text


def test_chat_streaming_with_usage(client, server, openai_schema):
    stream = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=6, temperature=0, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    full = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    assert text == full.choices[0].message.content

    with httpx.stream("POST", server.url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        openai_schema(json.loads(line[len("data: "):]), "CreateChatCompletionStreamResponse")


def test_completion_streaming(client, server, openai_schema):
    parts = list(client.completions.create(model="tiny-llama", prompt="Hello", max_tokens=5, stream=True,
                                           temperature=0, extra_body={"ignore_eos": True}))
    assert parts[-1].choices[0].finish_reason == "length"
    text = "".join(p.choices[0].text for p in parts)
    whole = client.completions.create(model="tiny-llama", prompt="Hello", max_tokens=5, temperature=0,
                                      extra_body={"ignore_eos": True}).choices[0].text
    assert text == whole
    with httpx.stream("POST", server.url + "/v1/completions",
                      json={"prompt": "Hi", "max_tokens": 2, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    openai_schema(json.loads(lines[-2][6:]), "CreateCompletionResponse")  # the last chunk has its finish_reason


def test_models_list(client, server, openai_schema):
    ids = [m.id for m in client.models.list()]
    assert ids == ["tiny-llama", "poet", "sql"]
    body = httpx.get(server.url + "/v1/models").json()
    openai_schema(body, "ListModelsResponse")
    assert client.models.retrieve("sql").id == "sql"


def test_errors_through_openai_client(client, openai_schema, server):
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert nf.value.body["param"] == "model" or "model" in str(nf.value)
    with pytest.raises(openai.BadRequestError) as br:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "x"}],
                                       temperature=-1)
    assert "temperature" in str(br.value)
    body = httpx.post(server.url + "/v1/chat/completions", json={"messages": []}).json()
    openai_schema(body, "ErrorResponse")


def test_penalties_and_top_k_top_p_are_accepted(client, server):
    resp = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Tell me"}], max_tokens=8, temperature=0.7,
        top_p=0.9, presence_penalty=1.0, frequency_penalty=0.5, seed=7,
        extra_body={"top_k": 20, "repetition_penalty": 1.3, "min_p": 0.01})
    assert resp.usage.completion_tokens >= 1
    # a logit bias of +100 on one token makes greedy decoding pick it every time
    biased = client.completions.create(model="tiny-llama", prompt="Hi", max_tokens=4, temperature=0,
                                       logit_bias={"65": 100}, extra_body={"ignore_eos": True})
    assert biased.usage.completion_tokens == 4
    assert biased.choices[0].text == server.service.loaded.tokenizer.decode([65] * 4)


def test_repetition_penalty_changes_greedy_output(client):
    kw = dict(model="tiny-llama", prompt="the the the the", max_tokens=24, temperature=0,
              extra_body={"ignore_eos": True})
    plain = client.completions.create(**kw).choices[0].text
    kw["extra_body"] = {"ignore_eos": True, "repetition_penalty": 5.0}
    penalised = client.completions.create(**kw).choices[0].text
    assert plain != penalised
