"""One request never hurts the others: a row whose sampling fails ends alone, and parameters
that used to overflow (a temperature of 1e-40) are normalised as vLLM normalises them."""

from __future__ import annotations

import concurrent.futures as cf
import json

import httpx
import pytest
import torch

from kaito_core.runtime.protocol import SamplingParams, normalise_temperature, sampling_from
from kaito_core.runtime.sampling import make_generator, sample

PROMPTS = ["The quick brown fox", "Kubernetes schedules pods", "def add(a, b):", "Hello! How can I",
           "LoRA adapters add low-rank", "What is the capital of France?", "Numbers: 0 1 2", "A workspace"]


class _Row:
    def __init__(self, **params):
        self.params = SamplingParams(**params)
        self.prompt_ids, self.output_ids, self.eos_ids = [1, 2, 3], [], frozenset()
        self.generator = make_generator(self.params.seed)


def test_a_row_with_nan_logits_fails_alone():
    logits = torch.randn(4, 50)
    logits[1, 7] = float("nan")
    rows = [_Row(temperature=0.0), _Row(temperature=0.8), _Row(temperature=0.7), _Row(temperature=0.9, seed=3)]
    picks = sample(logits, rows)
    assert picks[1].error is not None and picks[1].token is None
    assert picks[0].token == int(logits[0].argmax())
    assert all(p.error is None and 0 <= p.token < 50 for p in (picks[0], picks[2], picks[3]))


def test_an_overflowing_penalty_fails_its_row_only():
    logits = torch.randn(3, 50)
    logits[:, 2] = 5.0  # a prompt token with a positive logit: / 1e-300 overflows to +inf
    rows = [_Row(temperature=0.0), _Row(temperature=0.0, repetition_penalty=1e-300), _Row(temperature=0.0)]
    picks = sample(logits, rows)
    assert picks[1].error and "sampling failed" in picks[1].error
    assert picks[0].token == int(logits[0].argmax()) and picks[2].token == int(logits[2].argmax())


@pytest.mark.parametrize("given,expected", [(0.0, 0.0), (1e-40, 0.0), (9e-6, 0.0), (1e-4, 1e-2), (0.005, 1e-2),
                                            (0.01, 0.01), (0.7, 0.7)])
def test_temperature_normalised_as_vllm(given, expected):
    assert normalise_temperature(given) == expected
    assert sampling_from({"temperature": given}).temperature == expected


def test_logprobs_are_the_raw_models_and_top_k_sorted():
    logits = torch.randn(2, 30)
    rows = [_Row(temperature=0.0, logprobs=3), _Row(temperature=0.0, repetition_penalty=1.5)]
    picks = sample(logits, rows)
    lp = torch.log_softmax(logits[0], -1)
    assert picks[0].logprob == pytest.approx(float(lp.max()), abs=1e-5)
    assert [t for t, _ in picks[0].top] == lp.topk(3).indices.tolist()
    assert picks[1].logprob is None and picks[1].top is None


def _complete(url, prompt, stream, **extra):
    body = {"prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True, "stream": stream, **extra}
    if not stream:
        r = httpx.post(url + "/v1/completions", json=body, timeout=120)
        return r.status_code, (r.json()["choices"][0]["text"] if r.status_code == 200 else r.json())
    text, errors = [], []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                data = json.loads(line[6:])
                if "error" in data:
                    errors.append(data["error"])
                elif data["choices"]:
                    text.append(data["choices"][0]["text"])
    return r.status_code, ("".join(text) if not errors else {"error": errors[0]})


def test_tiny_temperature_and_a_failing_row_leave_fifteen_others_intact(tiny_models, make_server):
    srv = make_server(model=str(tiny_models["llama"]), max_batch=16)
    others = [(PROMPTS[i % len(PROMPTS)], i % 2 == 0) for i in range(15)]  # half of them stream
    solo = [_complete(srv.url, p, False)[1] for p, _ in others]
    ids = srv.service.loaded.tokenizer("The quick brown fox")["input_ids"]
    with cf.ThreadPoolExecutor(17) as pool:
        futures = [pool.submit(_complete, srv.url, p, s) for p, s in others]
        tiny = pool.submit(_complete, srv.url, "The quick brown fox", True, temperature=1e-40)
        # a positive logit on a prompt token divided by 1e-300 is +inf: this row cannot be sampled
        failing = pool.submit(_complete, srv.url, ids, False, temperature=1.0, repetition_penalty=1e-300,
                              logit_bias={str(ids[0]): 100})
        together = [f.result() for f in futures]
    assert [t for _, t in together] == solo
    assert all(status == 200 for status, _ in together)
    assert tiny.result() == (200, _complete(srv.url, "The quick brown fox", False)[1])  # greedy
    status, body = failing.result()
    assert status == 400 and body["error"]["code"] == "sampling_failed", body
    assert srv.service.engine.max_batch_seen >= 8  # they really shared the batch
    assert metric(srv.url, "vllm:request_success_total", finished_reason="error") == 1
    assert metric(srv.url, "vllm:request_success_total", finished_reason="length") == 15 * 2 + 2


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample on ``GET /metrics`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0
