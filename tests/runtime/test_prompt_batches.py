"""Batched prompts on /v1/completions, as vLLM serves them: ``prompt`` may be a list of strings
or of token-id lists; each prompt gets ``n`` choices, indexed prompt by prompt (choice
``k * n + i`` is prompt ``k``'s ``i``-th), decoded together in the engine's batch."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

PROMPTS = ["The quick brown fox", "Kubernetes schedules pods", "def add(a, b):"]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def alone(client, prompt) -> tuple[str, int]:
    r = client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=6, temperature=0,
                                  extra_body={"ignore_eos": True})
    return r.choices[0].text, r.usage.prompt_tokens


def test_a_batch_answers_each_prompt_as_if_alone(client, server, openai_schema):
    expected = [alone(client, p) for p in PROMPTS]
    ids = server.service.loaded.tokenizer(PROMPTS[2])["input_ids"]
    raw = client.completions.with_raw_response.create(model="tiny-llama", prompt=PROMPTS, max_tokens=6,
                                                      temperature=0, n=2, extra_body={"ignore_eos": True})
    openai_schema(json.loads(raw.text), "CreateCompletionResponse")
    resp = raw.parse()
    assert [c.index for c in resp.choices] == list(range(6))
    assert [c.text for c in resp.choices] == [t for t, _ in expected for _ in range(2)]
    assert resp.usage.prompt_tokens == sum(n for _, n in expected)
    assert resp.usage.completion_tokens == 6 * 6
    by_ids = client.completions.create(model="tiny-llama", prompt=[ids, ids], max_tokens=6, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert [c.text for c in by_ids.choices] == [expected[2][0]] * 2


def test_a_streamed_batch_tags_each_chunk_with_its_choice(server):
    body = {"prompt": PROMPTS[:2], "max_tokens": 5, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    texts: dict[int, str] = {}
    finishes, usage = {}, None
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                usage = data["usage"]
            for c in data["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + c["text"]
                if c["finish_reason"]:
                    finishes[c["index"]] = c["finish_reason"]
    assert finishes == {0: "length", 1: "length"}
    whole = httpx.post(server.url + "/v1/completions", json={**body, "stream": False, "stream_options": None},
                       timeout=60).json()
    assert [texts[0], texts[1]] == [c["text"] for c in whole["choices"]]
    assert usage["completion_tokens"] == 10 and usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]


def test_echo_prepends_each_choices_own_prompt(client):
    resp = client.completions.create(model="tiny-llama", prompt=PROMPTS[:2], max_tokens=2, echo=True)
    assert [c.text.startswith(p) for c, p in zip(resp.choices, PROMPTS[:2])] == [True, True]


def test_one_bad_prompt_refuses_the_batch_naming_it(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": ["fine", "x" * 60000], "max_tokens": 2},
                   timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
