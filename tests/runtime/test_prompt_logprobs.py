"""``echo`` + ``logprobs`` on /v1/completions returns the prompt tokens' own log-probabilities,
as vLLM does and as evaluation harnesses (lm-evaluation-harness's loglikelihood) read them."""

from __future__ import annotations

import math

import openai
import pytest
import torch

PROMPT = "What is the capital of France? Paris is the capital"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(tiny_models):
    """log-softmax over the whole prompt from a separately loaded copy of the same model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    ids = tok(PROMPT)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return ids, [None] + [float(lp[i - 1, t]) for i, t in enumerate(ids) if i > 0], lp


def echo(client, model="tiny-llama", k=2):
    return client.completions.create(model=model, prompt=PROMPT, max_tokens=1, temperature=0, echo=True,
                                     logprobs=k)


def test_echoed_prompt_tokens_carry_the_models_logprobs(client, server, reference):
    ids, expected, lp = reference
    resp = echo(client)
    got = resp.choices[0].logprobs
    assert resp.choices[0].text.startswith(PROMPT)
    assert len(got.token_logprobs) == len(ids) + 1 == resp.usage.prompt_tokens + 1
    assert got.token_logprobs[0] is None and got.top_logprobs[0] is None
    assert got.token_logprobs[1:len(ids)] == pytest.approx(expected[1:], abs=1e-4)
    tok = server.service.loaded.tokenizer
    best = lp[len(ids) - 2].topk(2)
    assert list(got.top_logprobs[len(ids) - 1]) == [server.service.token_text(int(t)) for t in best.indices]
    assert got.tokens[:len(ids)] == [tok.decode([t]) for t in ids]
    assert got.text_offset[1] == len(got.tokens[0])
    # what a harness computes: the continuation's log-likelihood is a finite sum of the tail
    assert math.isfinite(sum(got.token_logprobs[-4:-1]))


def test_chunked_pass_equals_one_pass(client, reference, monkeypatch):
    from kaito_core.runtime import prompt_logprobs

    monkeypatch.setattr(prompt_logprobs, "CHUNK", 3)
    ids, expected, _ = reference
    got = echo(client).choices[0].logprobs.token_logprobs
    assert got[1:len(ids)] == pytest.approx(expected[1:], abs=1e-4)


def test_an_adapter_scores_the_prompt_with_its_weights(client, reference):
    ids, expected, _ = reference
    base = echo(client).choices[0].logprobs.token_logprobs[1:len(ids)]
    sql = echo(client, model="sql").choices[0].logprobs.token_logprobs[1:len(ids)]
    assert base == pytest.approx(expected[1:], abs=1e-4)
    assert sql != pytest.approx(base, abs=1e-3)


def test_without_echo_only_generated_tokens_have_logprobs(client):
    resp = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=3, temperature=0, logprobs=1,
                                     extra_body={"ignore_eos": True})
    assert len(resp.choices[0].logprobs.token_logprobs) == 3
    assert None not in resp.choices[0].logprobs.token_logprobs


@pytest.mark.parametrize("logprobs", [None, 1])
def test_streamed_echo_equals_the_whole_answer(client, logprobs):
    kw = dict(model="tiny-llama", prompt=[PROMPT, "Hello"], max_tokens=4, temperature=0, echo=True,
              logprobs=logprobs, extra_body={"ignore_eos": True})
    whole = client.completions.create(**kw)
    texts, lps, offsets = {}, {}, {}
    for chunk in client.completions.create(stream=True, **kw):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
            if c.logprobs is not None:
                lps.setdefault(c.index, []).extend(c.logprobs.token_logprobs)
                offsets.setdefault(c.index, []).extend(c.logprobs.text_offset)
    assert [texts[i] for i in range(2)] == [c.text for c in whole.choices]
    assert texts[0].startswith(PROMPT) and texts[1].startswith("Hello")
    if logprobs:
        assert [lps[i] for i in range(2)] == [c.logprobs.token_logprobs for c in whole.choices]
        assert [offsets[i] for i in range(2)] == [c.logprobs.text_offset for c in whole.choices]


def test_vllm_prompt_logprobs_on_completions_and_chat(client, server, reference):
    ids, expected, lp = reference
    resp = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=1, n=2,
                                     extra_body={"prompt_logprobs": 2})
    for choice in resp.model_dump()["choices"]:
        got = choice["prompt_logprobs"]
        assert len(got) == len(ids) and got[0] is None
        for pos in range(1, len(ids)):
            entry = got[pos][str(ids[pos])]
            assert entry["logprob"] == pytest.approx(expected[pos], abs=1e-4)
            assert entry["rank"] == int((lp[pos - 1] > lp[pos - 1, ids[pos]]).sum()) + 1
            assert entry["decoded_token"] == server.service.token_text(ids[pos])
            best = lp[pos - 1].topk(2).indices.tolist()
            assert {str(t) for t in best} <= set(got[pos]) and got[pos][str(best[0])]["rank"] == 1
    chat = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=1, extra_body={"prompt_logprobs": 0}).model_dump()
    assert chat["prompt_logprobs"][0] is None and len(chat["prompt_logprobs"]) == chat["usage"]["prompt_tokens"]
    assert all(len(e) == 1 for e in chat["prompt_logprobs"][1:])  # k = 0: the prompt token alone


@pytest.mark.parametrize("extra,param", [({"prompt_logprobs": 21}, "prompt_logprobs"),
                                         ({"prompt_logprobs": 1, "stream": True}, "prompt_logprobs")])
def test_bad_prompt_logprobs_name_the_field(server, extra, param):
    import httpx

    r = httpx.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1, **extra}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param
