"""Parity with vLLM's OpenAI server where users feel it, through the real ``openai`` client:
``n`` choices, ``logprobs``/``top_logprobs`` shaped as vLLM answers them, default values
accepted, and vLLM's metric names (what upstream KAITO's KEDA autoscaler reads)."""

from __future__ import annotations

import json
import math
import time

import httpx
import openai
import pytest

from tests.runtime.test_isolation import metric

MSG = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_n2_with_logprobs(client, server, openai_schema):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=6, n=2, temperature=1.0,
                                          logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    assert [c.index for c in resp.choices] == [0, 1]
    assert resp.usage.completion_tokens == 12
    for c in resp.choices:
        content = c.logprobs.content
        assert len(content) == 6
        for entry in content:
            assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
            tops = [t.logprob for t in entry.top_logprobs]
            assert tops == sorted(tops, reverse=True) and entry.logprob <= tops[0] + 1e-6
            assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
    raw = httpx.post(server.url + "/v1/chat/completions", json={
        "messages": MSG, "max_tokens": 4, "n": 2, "logprobs": True, "top_logprobs": 2}).json()
    openai_schema(raw, "CreateChatCompletionResponse")


def test_greedy_logprob_is_the_top_one(client):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=5, temperature=0,
                                          logprobs=True, top_logprobs=1, extra_body={"ignore_eos": True})
    for entry in resp.choices[0].logprobs.content:
        assert entry.top_logprobs[0].token == entry.token
        assert math.isclose(entry.top_logprobs[0].logprob, entry.logprob, abs_tol=1e-6)


def test_completion_n2_logprobs_and_schema(client, server, openai_schema):
    resp = client.completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=5, n=2,
                                     logprobs=2, seed=7, extra_body={"ignore_eos": True})
    assert len(resp.choices) == 2 and resp.usage.completion_tokens == 10
    for c in resp.choices:
        lp = c.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
        # keyed by token text, as in OpenAI and vLLM: two ids decoding alike share one key
        assert all(1 <= len(t) <= 2 for t in lp.top_logprobs)
        assert all(lp_ <= 0 for lp_ in lp.token_logprobs)
        assert lp.text_offset[0] == 0
    raw = httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 3, "n": 2, "logprobs": 1,
                                                           "echo": True}).json()
    for c in raw["choices"]:  # echo: the prompt's tokens come first, the very first without a logprob
        lp = c["logprobs"]
        assert len(lp["tokens"]) == raw["usage"]["prompt_tokens"] + 3 and lp["text_offset"][0] == 0
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        # OpenAI's legacy API and vLLM answer null there; the schema subset knows no null: fill it
        lp["token_logprobs"][0], lp["top_logprobs"][0] = 0.0, {}
    openai_schema(raw, "CreateCompletionResponse")
    # seeded n choices differ from each other and repeat across requests
    again = client.completions.create(model="tiny-llama", prompt="The quick brown fox", max_tokens=5, n=2,
                                      logprobs=2, seed=7, extra_body={"ignore_eos": True})
    assert [c.text for c in again.choices] == [c.text for c in resp.choices]


def test_streaming_n2_with_logprobs(client, openai_schema, server):
    stream = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=5, n=2, stream=True,
                                            logprobs=True, top_logprobs=1, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    texts, finishes, lps, usage = {0: "", 1: ""}, {}, {0: 0, 1: 0}, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.logprobs and c.logprobs.content:
                lps[c.index] += len(c.logprobs.content)
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert finishes == {0: "length", 1: "length"}
    assert lps == {0: 5, 1: 5}
    assert usage.completion_tokens == 10
    with httpx.stream("POST", server.url + "/v1/completions", json={
            "prompt": "Hi", "max_tokens": 4, "n": 2, "stream": True, "logprobs": 1, "ignore_eos": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    for e in events:  # the schema describes whole answers: finish_reason null is stream-only
        if e["choices"][0]["finish_reason"]:
            openai_schema(e, "CreateCompletionResponse")
        assert set(e["choices"][0]["logprobs"]) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert {e["choices"][0]["index"] for e in events} == {0, 1}
    assert sum(len(e["choices"][0]["logprobs"]["tokens"]) for e in events) == 8


def test_default_values_are_accepted(client):
    resp = client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=2,
                                          response_format={"type": "text"}, tool_choice="none")
    assert resp.choices[0].message.role == "assistant"
    comp = client.completions.create(model="tiny-llama", prompt="x", max_tokens=2, best_of=1)
    assert comp.choices[0].text is not None
    with pytest.raises(openai.BadRequestError) as exc:  # JSON mode is in test_json_mode.py; this is not
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=2,
                                       response_format={"type": "structural_tag"})
    assert exc.value.body["param"] == "response_format" and "json_schema" in exc.value.body["message"]


VLLM_NAMES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
              "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
              "vllm:request_success_total", "vllm:time_to_first_token_seconds_bucket",
              "vllm:e2e_request_latency_seconds_count", "vllm:inter_token_latency_seconds_count",
              "vllm:time_per_output_token_seconds_count", "vllm:request_queue_time_seconds_count",
              "vllm:request_prompt_tokens_count", "vllm:request_generation_tokens_count", "vllm:num_preemptions_total"]


def test_vllm_metric_names_with_model_name(client, server):
    gen_before = metric(server.url, "vllm:generation_tokens_total", model_name="tiny-llama")
    client.completions.create(model="tiny-llama", prompt="x", max_tokens=4, extra_body={"ignore_eos": True})
    text = httpx.get(server.url + "/metrics").text
    for name in VLLM_NAMES:
        assert f'{name}{{' in text and 'model_name="tiny-llama"' in text, name
    assert metric(server.url, "vllm:generation_tokens_total", model_name="tiny-llama") == gen_before + 4
    assert "kaito_generation_tokens_total" in text  # ours stay next to vLLM's


def test_an_aborted_request_counts_as_finished(server):
    before = metric(server.url, "vllm:request_success_total", finished_reason="abort")
    with httpx.Client(timeout=60) as c:
        with c.stream("POST", server.url + "/v1/completions", json={
                "prompt": "Go", "max_tokens": 400, "ignore_eos": True, "stream": True}) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and metric(server.url, "vllm:request_success_total",
                                                 finished_reason="abort") == before:
        time.sleep(0.05)
    assert metric(server.url, "vllm:request_success_total", finished_reason="abort") == before + 1
    assert metric(server.url, "vllm:num_requests_running") == 0
