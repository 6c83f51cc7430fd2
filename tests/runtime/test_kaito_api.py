"""Upstream KAITO's ``/chat`` API, health, API key, metrics, and the three architectures."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest


def test_chat_prompt_returns_full_text_by_default(server):
    r = httpx.post(server.url + "/chat", json={"prompt": "Tell me a joke",
                                               "generate_kwargs": {"max_length": 30, "temperature": 0.7}})
    assert r.status_code == 200, r.text
    result = r.json()["Result"]
    assert result.startswith("Tell me a joke")
    short = httpx.post(server.url + "/chat", json={"prompt": "Tell me a joke", "return_full_text": False,
                                                   "generate_kwargs": {"max_new_tokens": 5, "do_sample": False}})
    assert not short.json()["Result"].startswith("Tell me a joke")


def test_chat_max_length_counts_prompt_tokens(server):
    tok = server.service.loaded.tokenizer
    prompt = "The quick brown fox jumps over the lazy dog."
    n = len(tok(prompt)["input_ids"])
    r = httpx.post(server.url + "/chat", json={"prompt": prompt, "return_full_text": False,
                                               "generate_kwargs": {"max_length": n + 4, "min_length": n + 4,
                                                                   "do_sample": False}})
    assert r.status_code == 200
    assert len(tok(r.json()["Result"], add_special_tokens=False)["input_ids"]) <= 4 + 2  # re-tokenising may merge


def test_chat_messages_and_adapter(server):
    msgs = [{"role": "user", "content": "What is your favourite condiment?"}]
    base = httpx.post(server.url + "/chat", json={"messages": msgs,
                                                  "generate_kwargs": {"max_new_tokens": 8, "do_sample": False}})
    sql = httpx.post(server.url + "/chat", json={"messages": msgs, "model": "sql",
                                                 "generate_kwargs": {"max_new_tokens": 8, "do_sample": False}})
    assert base.status_code == sql.status_code == 200
    assert isinstance(base.json()["Result"], str)
    assert base.json()["Result"] != sql.json()["Result"]


def test_health_open_and_api_key_enforced(keyed_server, openai_schema):
    url = keyed_server.url
    assert httpx.get(url + "/health").json() == {"status": "Healthy"}
    assert httpx.get(url + "/healthz").status_code == 200
    r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401
    openai_schema(r.json(), "ErrorResponse")
    assert httpx.get(url + "/v1/models").status_code == 401
    assert httpx.post(url + "/chat", json={"prompt": "x"}).status_code == 401
    bad = openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
    assert good.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "x"}],
                                        max_tokens=2).choices
    assert httpx.post(url + "/chat", json={"prompt": "x", "generate_kwargs": {"max_new_tokens": 2}},
                      headers={"api-key": "s3cret"}).status_code == 200


def test_health_is_503_until_the_model_is_loaded(tiny_models):
    from kaito_core.runtime.server import create_app

    app = create_app(model=str(tiny_models["llama"]))

    async def probe():
        transport = httpx.ASGITransport(app=app)  # no lifespan: the model never starts loading
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            h = await c.get("/health")
            g = await c.post("/v1/completions", json={"prompt": "x"})
            return h, g

    health, gen = asyncio.run(probe())
    assert health.status_code == 503 and health.json()["status"] == "Loading"
    assert gen.status_code == 503 and gen.json()["error"]["code"] == "model_loading"


def test_a_model_that_fails_to_load_is_reported_by_health(tmp_path, make_server, tiny_models):
    import shutil

    import torch
    from safetensors.torch import load_file

    bad = tmp_path / "pickled-model"
    shutil.copytree(tiny_models["llama"], bad)
    torch.save(load_file(bad / "model.safetensors"), bad / "pytorch_model.bin")
    (bad / "model.safetensors").unlink()
    srv = make_server(wait_healthy=False, model=str(bad))
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and srv.service.state == "loading":
        time.sleep(0.05)
    r = httpx.get(srv.url + "/health")
    assert r.status_code == 503 and r.json()["status"] == "Failed"
    assert "pickle" in r.json()["error"] and "--allow-pickle" in r.json()["error"]
    gen = httpx.post(srv.url + "/v1/completions", json={"prompt": "x"})
    assert gen.status_code == 503 and "pickle" in gen.json()["error"]["message"]

    allowed = make_server(model=str(bad), allow_pickle=True)  # explicitly trusted: it loads
    assert httpx.post(allowed.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_metrics_count_requests_tokens_and_latencies(server):
    before = httpx.get(server.url + "/metrics").text
    for _ in range(2):
        httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 3, "ignore_eos": True})
    httpx.post(server.url + "/v1/completions", json={"prompt": "Hi", "temperature": -1})
    httpx.post(server.url + "/v1/completions", json={"model": "sql", "prompt": "Hi", "max_tokens": 2})
    text = httpx.get(server.url + "/metrics").text

    def value(body, sample):
        for line in body.splitlines():
            if line.startswith(sample + " ") or line.startswith(sample + "{") and line.split(" ")[0] == sample:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    ok = 'kaito_requests_total{code="200",route="/v1/completions"}'
    assert value(text, ok) - value(before, ok) == 3
    bad = 'kaito_requests_total{code="400",route="/v1/completions"}'
    assert value(text, bad) - value(before, bad) == 1
    gen = 'kaito_generation_tokens_total{model="tiny-llama"}'
    assert value(text, gen) - value(before, gen) >= 6
    assert value(text, 'kaito_adapter_requests_total{adapter="sql"}') >= 1
    for name in ("kaito_time_to_first_token_seconds_count", "kaito_inter_token_latency_seconds_count",
                 "kaito_batch_size_count", "kaito_queue_depth", "kaito_prompt_tokens_total"):
        assert name in text, name
    assert value(text, "kaito_time_to_first_token_seconds_count") > value(before,
                                                                          "kaito_time_to_first_token_seconds_count")


@pytest.mark.parametrize("arch", ["phi3", "falcon"])
def test_other_architectures_serve_chat_and_streams(arch, tiny_models, make_server):
    srv = make_server(model=str(tiny_models[arch]), served_model_name=f"tiny-{arch}")
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    kw = dict(model=f"tiny-{arch}", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0,
              extra_body={"ignore_eos": True})
    whole = client.chat.completions.create(**kw)
    assert whole.usage.completion_tokens == 8
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kw)
                       if c.choices)
    assert streamed == whole.choices[0].message.content
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: client.chat.completions.create(**kw).choices[0].message.content, range(4)))
    assert outs == [whole.choices[0].message.content] * 4


def test_preset_sets_name_dtype_and_context(tiny_models, make_server):
    """--preset: the model id is the preset's name (aliases work too), dtype from the preset."""
    srv = make_server(model=str(tiny_models["phi3"]), preset="phi-3-mini-4k-instruct", max_model_len=256)
    loaded = srv.service.loaded
    assert loaded.dtype == "bfloat16"  # the preset's transformers dtype
    assert loaded.context_length == 256
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
    assert [m.id for m in client.models.list()] == ["phi-3-mini-4k-instruct"]
    for name in ("phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct"):
        out = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
        assert out.model == "phi-3-mini-4k-instruct"
    with pytest.raises(openai.BadRequestError, match="256"):
        client.completions.create(model="phi-3-mini-4k-instruct", prompt="Hi", max_tokens=300)


def test_max_model_len_beyond_the_model_fails_to_load(tiny_models, make_server):
    import time

    srv = make_server(wait_healthy=False, model=str(tiny_models["llama"]), max_model_len=100000)
    deadline = time.monotonic() + 30
    while srv.service.state == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.service.state == "failed" and "--max-model-len 100000" in srv.service.error
