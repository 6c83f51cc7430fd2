"""vLLM's ``POST /tokenize`` and ``POST /detokenize``: clients count tokens (or check a chat
template's output) with the server's own tokenizer. Shapes as vLLM's serving_tokenization:
``{"count", "max_model_len", "tokens", "token_strs"}`` and ``{"prompt"}``. Tokenizing runs on
the tokenizer's worker thread, like every other request's.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from kaito_core.runtime.errors import bad_param, missing_param
from kaito_core.runtime.fields import bool_field
from kaito_core.runtime.protocol import ParsedRequest, SamplingParams, parse_messages
from kaito_core.runtime.templating import template_options

MAX_DETOKENIZE = 1 << 20   # token ids in one /detokenize request


def parse_tokenize(body: dict) -> tuple[ParsedRequest, bool, bool]:
    """(request, add_special_tokens, return_token_strs). ``prompt`` (completion style, special
    tokens added by default) or ``messages`` (chat style, templated; none added by default)."""
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise bad_param("model", model, "a model id string (GET /v1/models lists them)", code="invalid_type")
    prompt, messages = body.get("prompt"), body.get("messages")
    strs = bool_field(body, "return_token_strs")
    if messages is not None:
        if prompt is not None:
            raise bad_param("prompt", "both prompt and messages", "only one of 'prompt' or 'messages'")
        parsed = ParsedRequest(kind="chat", model=model, params=SamplingParams(), messages=parse_messages(messages),
                               template=template_options(body))
        return parsed, bool_field(body, "add_special_tokens", False), strs
    if prompt is None:
        raise missing_param("prompt", "the text to tokenize (or 'messages' to tokenize a templated chat)")
    if not isinstance(prompt, str):
        raise bad_param("prompt", prompt, "a string", code="invalid_type")
    parsed = ParsedRequest(kind="completion", model=model, params=SamplingParams(), prompt=prompt)
    return parsed, bool_field(body, "add_special_tokens", True), strs


def parse_detokenize(body: dict, vocab_size: int) -> list[int]:
    tokens = body.get("tokens")
    if tokens is None:
        raise missing_param("tokens", "a list of token ids")
    if not isinstance(tokens, list) or len(tokens) > MAX_DETOKENIZE:
        raise bad_param("tokens", tokens, f"a list of at most {MAX_DETOKENIZE} token ids", code="invalid_type")
    for i, t in enumerate(tokens):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size:
            raise bad_param(f"tokens[{i}]", t, f"a token id in [0, {vocab_size})")
    return tokens


def register(app: FastAPI, ctx: Any) -> None:
    service = ctx.service

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        parsed, special, strs = await ctx.body_of(request, parse_tokenize)
        service.require_ready()
        ids = await service.on_tokenizer(service.tokenize, parsed, special)
        return {"count": len(ids), "max_model_len": service.loaded.context_length, "tokens": ids,
                "token_strs": service.loaded.tokenizer.convert_ids_to_tokens(ids) if strs else None}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        body = await ctx.body_of(request)
        service.require_ready()
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise bad_param("model", model, "a model id string", code="invalid_type")
        service.resolve_model(model)
        ids = parse_detokenize(body, service.loaded.vocab_size)
        text = await service.on_tokenizer(service.loaded.tokenizer.decode, ids)
        return {"prompt": text}
