"""OpenAI routes of the transformers backend: models, chat completions, completions.

Answers follow vLLM's OpenAI server where OpenAI leaves room: ``n`` choices (each a sequence of
its own in the batch), batched completion prompts (``n`` choices each, indexed prompt by
prompt), ``logprobs``/``top_logprobs`` as vLLM shapes them (raw model log-probabilities, -9999.0
for -inf), streamed chunks carrying their choice ``index``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from kaito_core.runtime import responses as R
from kaito_core.runtime.errors import APIError, model_not_found
from kaito_core.runtime.protocol import parse_chat, parse_completion, split_batch
from kaito_core.runtime.service import Prepared
from kaito_core.runtime.tools import Tools, tool_calls

log = logging.getLogger("kaito.runtime.server")


@dataclass
class Choice:
    """One choice's text, tokens and log-probabilities, as collected from the engine."""

    parts: list[str] = field(default_factory=list)
    tokens: int = 0
    finish: str = "stop"
    logprobs: list = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def finish_of(out: Any) -> str | None:
    """OpenAI knows only stop and length (an abort never reaches a client)."""
    if not out.finished:
        return None
    return "length" if out.finish_reason == "length" else "stop"


async def collect(service: Any, request: Request, preps: list[Prepared]) -> list[Choice]:
    choices = [Choice() for p in preps for _ in range(p.parsed.n)]
    async for index, out in service.generate(preps, request.is_disconnected):
        c = choices[index]
        c.parts.append(out.text)
        c.tokens = out.completion_tokens
        if out.logprobs:
            c.logprobs.extend(out.logprobs)
        if out.finished:
            c.finish = finish_of(out) or "stop"
    return choices


def register(app: FastAPI, ctx: Any) -> None:
    """Add the OpenAI routes; ``ctx`` carries the service, options, auth and body reader."""
    service, opts = ctx.service, ctx.opts

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def list_models(request: Request) -> dict[str, Any]:
        ctx.auth.check(request)
        service.require_ready()
        data = [R.model_card(service.model_id, service.created, root=opts.model,
                             max_model_len=service.loaded.context_length)]
        for name, info in sorted(service.adapters.adapters.items()):
            data.append(R.model_card(name, info.created, parent=service.model_id, root=info.source,
                                     max_model_len=service.loaded.context_length))
        return {"object": "list", "data": data}

    @app.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"])
    async def get_model(model_id: str, request: Request) -> dict[str, Any]:
        listing = await list_models(request)
        for card in listing["data"]:
            if card["id"] == model_id:
                return card
        raise model_not_found(model_id, [c["id"] for c in listing["data"]])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        parsed = await ctx.body_of(request, parse_chat)
        prep = await service.prepare_async(parsed)
        rid, created = R.new_id("chatcmpl"), int(time.time())
        if parsed.stream:
            return await stream(service, request, [prep], rid, created, chat=True)
        choices = await collect(service, request, [prep])
        scored = None
        if parsed.prompt_logprobs is not None:  # vLLM puts a chat's on the response
            from kaito_core.runtime.prompt_logprobs import score_prompt  # torch: loaded with the model

            scored = await score_prompt(service.engine, prep.prompt_ids, parsed.prompt_logprobs, prep.adapter)
        build = functools.partial(_chat_answer, service, prep, choices, scored, rid, created)
        return await _answer(build, heavy=parsed.params.logprobs is not None or scored is not None)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        parsed = await ctx.body_of(request, parse_completion)
        # a batch of prompts: each prepared (and checked) on its own, all decoded together
        preps = list(await asyncio.gather(*(service.prepare_async(p) for p in split_batch(parsed))))
        rid, created = R.new_id("cmpl"), int(time.time())
        if parsed.stream:
            return await stream(service, request, preps, rid, created, chat=False)
        choices = await collect(service, request, preps)
        # echo + logprobs: the prompt's tokens carry their logprobs too (how harnesses score text)
        heads = await _prompt_heads(service, preps)
        scored = None
        if parsed.prompt_logprobs is not None:  # vLLM puts a completion's on each choice
            from kaito_core.runtime.prompt_logprobs import score_prompt

            scored = [await score_prompt(service.engine, p.prompt_ids, parsed.prompt_logprobs, p.adapter)
                      for p in preps]
        build = functools.partial(_completion_answer, service, preps, choices, heads, scored, rid, created)
        return await _answer(build, heavy=parsed.params.logprobs is not None or scored is not None
                             or len(choices) > 16)


# An answer with logprobs can hold hundreds of thousands of entries (n=16, top 20, a scored
# 500-token prompt: 16 MB of JSON): building and encoding it on the event loop stalled every
# running stream for 0.65 s, so such answers are built on a worker thread.
async def _answer(build: Any, heavy: bool) -> Response:
    def render() -> bytes:
        return _encode(build())

    return Response(await asyncio.to_thread(render) if heavy else render(), media_type="application/json")


_DUMPS = functools.partial(json.dumps, ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # Starlette's
_SLOT = "\x00choices\x00"


def _encode(answer: dict[str, Any]) -> bytes:
    """``answer`` as JSON, one choice per ``json.dumps`` call: a single call over 16 MB holds the
    GIL for its whole length (streams on the event loop stalled 0.4 s), separate calls let other
    threads run in between."""
    choices = answer.get("choices") or []
    if len(choices) < 2:
        return _DUMPS(answer).encode("utf-8")
    head = _DUMPS({**answer, "choices": _SLOT})   # "choices" comes before any text a model wrote
    return head.replace(_DUMPS(_SLOT), "[" + ",".join(_DUMPS(c) for c in choices) + "]", 1).encode("utf-8")


def _chat_answer(service: Any, prep: Prepared, choices: list[Choice], scored: Any, rid: str,
                 created: int) -> dict[str, Any]:
    parsed = prep.parsed
    want_lp = parsed.params.logprobs is not None
    call_id = functools.partial(R.new_id, "chatcmpl-tool")
    body = [R.chat_choice(i, c.text, c.finish,
                          R.chat_logprobs(c.logprobs, service.token_text) if want_lp else None,
                          tool_calls(parsed.tools, c.text, call_id))
            for i, c in enumerate(choices)]
    answer = R.chat_completion(rid, prep.model_id, "", "stop", len(prep.prompt_ids),
                               sum(c.tokens for c in choices), created, choices=body)
    if scored is not None:
        answer["prompt_logprobs"] = R.prompt_logprobs(scored, service.token_text)
    return answer


def _completion_answer(service: Any, preps: list[Prepared], choices: list[Choice], heads: list | None,
                       scored: list | None, rid: str, created: int) -> dict[str, Any]:
    parsed = preps[0].parsed
    want_lp = parsed.params.logprobs is not None
    body = []
    for i, c in enumerate(choices):
        head = preps[i // parsed.n].prompt_text if parsed.echo else ""
        lp = None
        if want_lp:
            entries = heads[i // parsed.n] + c.logprobs if heads else c.logprobs
            lp = R.completion_logprobs(entries, service.token_text, 0 if heads else len(head))
        choice = R.completion_choice(i, head + c.text, c.finish, lp)
        if scored is not None:
            choice["prompt_logprobs"] = R.prompt_logprobs(scored[i // parsed.n], service.token_text)
        body.append(choice)
    return R.completion(rid, preps[0].model_id, "", None, created, _prompt_tokens(preps),
                        sum(c.tokens for c in choices), choices=body)


def _prompt_tokens(preps: list[Prepared]) -> int:
    return sum(len(p.prompt_ids) for p in preps)


async def stream(service: Any, request: Request, preps: list[Prepared], rid: str, created: int,
                 chat: bool) -> StreamingResponse:
    # submitted before the 200 is sent: a full queue is a 503 with Retry-After (which clients
    # retry), not a 200 whose stream carries the error. Once started, the generator's finally
    # (run by asyncio's async-generator finalizer even if the response never iterates it)
    # frees the request's sequences.
    outputs = service.generate(preps, request.is_disconnected, announce=True)
    await outputs.__anext__()
    return EventStream(_events(service, request, preps, rid, created, chat, outputs),
                       send_timeout=service.opts.timeout_send or None, media_type="text/event-stream",
                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class EventStream(StreamingResponse):
    """Server-sent events that give up on a client that reads nothing for ``send_timeout``
    seconds (``--timeout-send``). Such a client's events wait in memory, up to ``max_tokens`` x
    ``n`` of them (16 MB with top-20 logprobs), for as long as it keeps the connection open:
    dropping the stream frees them. uvicorn then closes the connection (logging that the
    response was not completed)."""

    def __init__(self, content: Any, send_timeout: float | None, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.send_timeout = send_timeout

    async def stream_response(self, send: Any) -> None:
        async def timed(message: dict) -> None:
            await asyncio.wait_for(send(message), self.send_timeout)

        try:
            await timed({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                await timed({"type": "http.response.body", "body": chunk, "more_body": True})
        except asyncio.TimeoutError:
            log.info("a client read nothing for %gs: its stream is dropped (--timeout-send)", self.send_timeout)
            await self.body_iterator.aclose()  # the generator's finally frees the request's sequences
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _events(service: Any, request: Request, preps: list[Prepared], rid: str, created: int,
                  chat: bool, outputs: AsyncIterator[tuple[int, Any]]) -> AsyncIterator[bytes]:
    model, parsed = preps[0].model_id, preps[0].parsed
    want_lp = parsed.params.logprobs is not None
    total = parsed.n * len(preps)
    tokens = [0] * total
    echo = _Echo(preps, await _prompt_heads(service, preps)) if parsed.echo else None
    calls = _ToolStream(parsed.tools) if chat and parsed.tools.choice != "none" else None
    offsets = [0] * total

    def sse(chunk: dict, i: int) -> bytes:
        if parsed.continuous_usage:  # this choice's tokens so far, as vLLM counts them
            chunk["usage"] = R.usage(len(preps[i // parsed.n].prompt_ids), tokens[i])
        return R.sse(chunk)

    if chat:
        for i in range(parsed.n):
            yield sse(R.chat_chunk(rid, model, created, {"role": "assistant", "content": ""}, index=i), i)
    try:
        async for i, out in outputs:
            tokens[i] = out.completion_tokens
            finish = finish_of(out)
            if chat:
                delta = calls.delta(i, out.text, bool(finish)) if calls is not None else {"content": out.text}
                if delta or out.logprobs:
                    lp = R.chat_logprobs(out.logprobs or [], service.token_text) if want_lp else None
                    yield sse(R.chat_chunk(rid, model, created, delta, index=i, logprobs=lp), i)
                if finish:
                    yield sse(R.chat_chunk(rid, model, created, {}, finish, index=i), i)
                continue
            text, entries = out.text, out.logprobs or []
            if echo is not None:
                text, entries, offsets[i] = echo.first(i, text, entries, offsets[i])
            if text or finish or entries:
                lp = None
                if want_lp:
                    lp = R.completion_logprobs(entries, service.token_text, offsets[i])
                    offsets[i] += sum(len(t) for t in lp["tokens"])
                yield sse(R.completion(rid, model, "", None, created,
                                       choices=[R.completion_choice(i, text, finish, lp)]), i)
    except APIError as exc:
        yield R.sse(exc.body())
        yield R.SSE_DONE
        return
    if parsed.include_usage:
        make = R.chat_usage_chunk if chat else R.completion_usage_chunk
        yield R.sse(make(rid, model, created, _prompt_tokens(preps), sum(tokens)))
    yield R.SSE_DONE


async def _prompt_heads(service: Any, preps: list[Prepared]) -> list | None:
    """Each prompt's own token logprobs, when a completion asks for echo with logprobs."""
    parsed = preps[0].parsed
    if not (parsed.echo and parsed.params.logprobs is not None):
        return None
    from kaito_core.runtime.prompt_logprobs import score_prompt

    return [(await score_prompt(service.engine, p.prompt_ids, parsed.params.logprobs or 0, p.adapter)).entries
            for p in preps]


class _Echo:
    """Streamed echo, as vLLM streams it: a choice's first chunk carries its prompt (and the
    prompt's logprobs, when asked for) before the first generated text."""

    def __init__(self, preps: list[Prepared], heads: list | None):
        self.preps, self.heads, self.done = preps, heads, set()

    def first(self, i: int, text: str, entries: list, offset: int) -> tuple[str, list, int]:
        if i in self.done:
            return text, entries, offset
        self.done.add(i)
        k = i // self.preps[0].parsed.n
        if self.heads is not None:
            return self.preps[k].prompt_text + text, self.heads[k] + entries, 0
        return self.preps[k].prompt_text + text, entries, len(self.preps[k].prompt_text)


class _ToolStream:
    """A forced tool call, streamed as vLLM streams it: for a named function, a first delta with
    the call's id and name, then its ``arguments`` piece by piece; for ``required``, the calls in
    one delta once the JSON array is complete (or the text, when ``max_tokens`` cut it short)."""

    def __init__(self, tools: Tools):
        self.tools, self.started, self.text = tools, set(), {}

    def delta(self, i: int, text: str, finished: bool) -> dict:
        if self.tools.choice == "named":
            if i not in self.started:
                self.started.add(i)
                call = {"index": 0, "id": R.new_id("chatcmpl-tool"), "type": "function",
                        "function": {"name": self.tools.name, "arguments": text}}
                return {"tool_calls": [call]}
            return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]} if text else {}
        self.text[i] = self.text.get(i, "") + text
        if not finished:
            return {}
        found = tool_calls(self.tools, self.text[i], functools.partial(R.new_id, "chatcmpl-tool"))
        if found is None:
            return {"content": self.text[i]}
        return {"tool_calls": [{"index": k, **c} for k, c in enumerate(found)]}

