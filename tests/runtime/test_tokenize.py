"""vLLM's /tokenize and /detokenize on the transformers backend: the server's own tokenizer and
chat template, answered in vLLM's shapes."""

from __future__ import annotations

import httpx
import pytest

MSG = [{"role": "user", "content": "Hello there"}]


def post(server, route, body, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + route, json=body, headers=headers, timeout=30)


def test_tokenize_a_prompt_and_back(server):
    tok = server.service.loaded.tokenizer
    r = post(server, "/tokenize", {"model": "tiny-llama", "prompt": "The quick brown fox", "return_token_strs": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tokens"] == tok("The quick brown fox")["input_ids"]
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == server.service.loaded.context_length
    assert body["token_strs"] == tok.convert_ids_to_tokens(body["tokens"])
    back = post(server, "/detokenize", {"model": "tiny-llama", "tokens": body["tokens"]})
    assert back.status_code == 200 and back.json() == {"prompt": "The quick brown fox"}


def test_tokenize_messages_counts_what_chat_completions_counts(server):
    r = post(server, "/tokenize", {"messages": MSG})
    usage = post(server, "/v1/chat/completions", {"messages": MSG, "max_tokens": 1}).json()["usage"]
    assert r.json()["count"] == usage["prompt_tokens"]
    assert r.json()["token_strs"] is None
    cont = post(server, "/tokenize", {"messages": MSG + [{"role": "assistant", "content": "Hi"}],
                                      "continue_final_message": True})
    text = post(server, "/detokenize", {"tokens": cont.json()["tokens"]}).json()["prompt"]
    assert text.endswith("Hi")


def test_the_count_may_exceed_the_context_as_in_vllm(server):
    ctx = server.service.loaded.context_length
    r = post(server, "/tokenize", {"prompt": "fox " * (ctx + 10)})
    assert r.status_code == 200 and r.json()["count"] > ctx


@pytest.mark.parametrize("route,body,param", [
    ("/tokenize", {}, "prompt"),
    ("/tokenize", {"prompt": ["a"]}, "prompt"),
    ("/tokenize", {"prompt": "a", "messages": MSG}, "prompt"),
    ("/tokenize", {"prompt": "a", "model": "nope"}, "model"),
    ("/tokenize", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ("/detokenize", {}, "tokens"),
    ("/detokenize", {"tokens": [1, -1]}, "tokens[1]"),
    ("/detokenize", {"tokens": [10**9]}, "tokens[0]"),
])
def test_bad_tokenize_requests_name_the_field(server, route, body, param):
    r = post(server, route, body)
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["param"] == param


def test_tokenize_needs_the_key(keyed_server):
    assert post(keyed_server, "/tokenize", {"prompt": "a"}).status_code == 401
    assert post(keyed_server, "/tokenize", {"prompt": "a"}, key="s3cret").status_code == 200
