"""Streams under attack: bad requests, clients that hang up and one that never reads its stream
leave a batch of greedy streams exactly as they are alone, with no slot leaked; a full queue
refuses a stream with a 503 before any 200; a client that reads nothing is dropped after
--timeout-send."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import openai
import pytest

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]
REGEX_BOMB = "a{1000000}"

# -- a batch under attack --------------------------------------------------------------------

BAD_BODIES = [
    (CHAT, b"{"), (CHAT, b"[]"), (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1' + b"0" * 400 + b"}"),
    (COMP, json.dumps({"prompt": "aaa", "guided_regex": REGEX_BOMB, "max_tokens": 4}).encode()),
    (COMP, json.dumps({"prompt": [1] * 600}).encode()),
    (CHAT, json.dumps({"messages": MSG, "logit_bias": {"5": 100}, "temperature": 1e-9, "max_tokens": 20}).encode()),
]


async def _greedy_stream(client: openai.AsyncOpenAI, prompt: str) -> str:
    stream = await client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": prompt}],
                                                  max_tokens=40, temperature=0, stream=True,
                                                  extra_body={"ignore_eos": True})
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


async def _hang_up(url: str) -> int:
    async with httpx.AsyncClient(timeout=60) as h:
        async with h.stream("POST", url + CHAT, json={"messages": MSG, "max_tokens": 400, "stream": True,
                                                      "ignore_eos": True}) as r:
            lines = 0
            async for _ in r.aiter_lines():
                lines += 1
                if lines > 4:
                    break
    return lines


def _never_reads(port: int) -> socket.socket:
    """A client that sends a streaming request for ~8 MB of events and never reads them."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    body = json.dumps({"messages": MSG, "max_tokens": 400, "n": 8, "stream": True, "ignore_eos": True,
                       "logprobs": True, "top_logprobs": 20}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return sock


def _gauges(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        for name in ("kaito_running_requests", "vllm:num_requests_running"):
            if line.startswith(name):
                out[name] = float(line.rsplit(" ", 1)[1])
    return out


async def _attack(server, client: openai.AsyncOpenAI, prompts: list[str]) -> tuple[list, list]:
    async with httpx.AsyncClient(timeout=60) as h:
        bad = [h.post(server.url + route, content=body, headers={"content-type": "application/json"})
               for route, body in BAD_BODIES * 2]
        results = await asyncio.gather(*(_greedy_stream(client, p) for p in prompts), *bad,
                                       _hang_up(server.url), _hang_up(server.url))
    return list(results[:len(prompts)]), list(results[len(prompts):])


def test_bad_requests_a_hang_up_and_a_stalled_reader_leave_eight_streams_intact(server):
    prompts = [f"Tell me about topic {i}" for i in range(8)]
    errors_before = _server_errors(server.url)

    async def scenario() -> tuple[list, list, list]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        alone = [await _greedy_stream(client, p) for p in prompts]
        good, others = await _attack(server, client, prompts)
        await client.close()
        return alone, good, others

    stalled = _never_reads(server.port)
    try:
        alone, good, others = asyncio.run(scenario())
        assert good == alone
        statuses = [r.status_code for r in others[:-2]]
        assert statuses == [400, 400, 400, 400, 400, 200] * 2, [r.text[:200] for r in others[:-2]]
        assert others[-2:] == [5, 5]  # both hung up after five lines
    finally:
        stalled.close()
    gauges: dict[str, float] = {}
    for _ in range(200):  # the stalled stream's slot is freed once its socket closes
        gauges = _gauges(server.url)
        if gauges == {"kaito_running_requests": 0.0, "vllm:num_requests_running": 0.0}:
            break
        time.sleep(0.05)
    assert gauges == {"kaito_running_requests": 0.0, "vllm:num_requests_running": 0.0}
    assert _server_errors(server.url) == errors_before


def _server_errors(url: str) -> float:
    """5xx answers so far (the session's server is shared: other modules' tests count too)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(url + "/metrics").text.splitlines()
               if line.startswith("kaito_request_errors_total{") and 'type="server"' in line)


def test_a_stream_refused_at_capacity_is_a_503_before_any_200(tiny_models, make_server):
    """A full queue answers a stream as it answers any request: 503 with Retry-After (which the
    OpenAI client retries), not a 200 whose stream carries the error."""
    srv = make_server(model=str(tiny_models["llama"]), served_model_name="tiny-llama", max_queue=0)
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="tiny-llama", messages=MSG, max_tokens=2, stream=True)
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "1"
    assert err.value.body["code"] == "overloaded"
    r = httpx.post(srv.url + COMP, json={"prompt": "x", "max_tokens": 2, "stream": True})
    assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded", r.text
    assert 'kaito_running_requests 0.0' in httpx.get(srv.url + "/metrics").text


def test_a_stream_whose_client_reads_nothing_is_dropped_after_timeout_send(tiny_models, make_server):
    """A client that keeps its connection open and reads nothing held its buffered events (up to
    max_tokens x n) for as long as it liked; after --timeout-send the stream is dropped, its
    request stops counting as running, and others are served as before."""
    srv = make_server(model=str(tiny_models["llama"]), served_model_name="tiny-llama", timeout_send=1.0)
    stalled = _never_reads(srv.port)
    try:
        seen = []
        for _ in range(600):   # bounded waits: the request runs, then is dropped; the socket stays open
            gauges = _gauges(srv.url)
            seen.append(gauges.get("kaito_running_requests"))
            if 1.0 in seen and seen[-1] == 0.0:
                break
            time.sleep(0.05)
        assert 1.0 in seen, seen[:5]
        assert gauges == {"kaito_running_requests": 0.0, "vllm:num_requests_running": 0.0}
        r = httpx.post(srv.url + CHAT, json={"messages": MSG, "max_tokens": 2})
        assert r.status_code == 200, r.text
    finally:
        stalled.close()
