"""vLLM's output options on the OpenAI routes: ``include_stop_str_in_output`` and
``skip_special_tokens``."""

from __future__ import annotations

import httpx
import pytest


def complete(server, **body):
    r = httpx.post(server.url + "/v1/completions", json={"max_tokens": 12, "temperature": 0, "ignore_eos": True,
                                                         **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def test_include_stop_str_in_output(server):
    free = complete(server, prompt="The quick brown fox")["text"]
    stop = free[3:5]
    cut = complete(server, prompt="The quick brown fox", stop=[stop])
    kept = complete(server, prompt="The quick brown fox", stop=[stop], include_stop_str_in_output=True)
    assert cut["finish_reason"] == kept["finish_reason"] == "stop"
    at = free.index(stop)
    assert cut["text"] == free[:at] and kept["text"] == free[:at + len(stop)]


def test_skip_special_tokens_false_keeps_them_in_the_text(server):
    tok = server.service.loaded.tokenizer
    special = tok.convert_tokens_to_ids("<|user|>")
    body = {"prompt": "x", "max_tokens": 3, "logit_bias": {str(special): 100}}
    shown = complete(server, skip_special_tokens=False, **body)["text"]
    hidden = complete(server, **body)["text"]
    assert shown == "<|user|>" * 3 and hidden == ""


@pytest.mark.parametrize("field", ["skip_special_tokens", "include_stop_str_in_output"])
def test_the_options_are_booleans(server, field):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2, field: "yes"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_continuous_usage_stats_puts_usage_in_every_chunk(server):
    import json

    body = {"prompt": "x", "max_tokens": 4, "ignore_eos": True, "stream": True, "n": 2,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    *per_token, last = chunks
    assert per_token and all("usage" in c for c in per_token)
    for index in (0, 1):
        counts = [c["usage"]["completion_tokens"] for c in per_token if c["choices"][0]["index"] == index]
        assert counts == sorted(counts) and counts[-1] == 4
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 8
    plain = {**body, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.url + "/v1/completions", json=plain, timeout=60) as r:
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    assert not any("usage" in c for c in chunks[:-1])
