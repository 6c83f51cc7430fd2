"""OpenAI response objects (chat, completion, stream chunks, models) as plain dicts."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Callable

FINGERPRINT = "kaito-transformers"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_choice(index: int, text: str, finish: str, logprobs: dict | None = None,
                tool_calls: list[dict] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["content"], message["tool_calls"] = "", tool_calls   # vLLM's shape: empty content
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def chat_completion(rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int,
                    created: int | None = None, *, choices: list[dict] | None = None) -> dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": created or int(time.time()), "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices if choices is not None else [chat_choice(0, text, finish)],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None,
               index: int = 0, logprobs: dict | None = None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


# -- log-probabilities, shaped as vLLM's OpenAI server answers them -----------------------------

UNLIKELY = -9999.0  # OpenAI's (and vLLM's) stand-in for -inf, which JSON cannot carry


def _lp(value: float) -> float:
    return value if value > UNLIKELY else UNLIKELY


def _token_entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": _lp(logprob), "bytes": list(text.encode("utf-8", errors="replace"))}


def chat_logprobs(entries: list, token_text: Callable[[int], str]) -> dict[str, Any]:
    """``choices[i].logprobs`` of a chat answer: ``{"content": [...], "refusal": null}``."""
    content = []
    for tid, lp, top in entries:
        entry = _token_entry(token_text(tid), lp)
        entry["top_logprobs"] = [_token_entry(token_text(t), v) for t, v in top]
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list, token_text: Callable[[int], str], offset: int = 0) -> dict[str, Any]:
    """``choices[i].logprobs`` of a completion: the legacy parallel lists, ``text_offset`` counting
    characters from ``offset`` (the echoed prompt's length, or where the last chunk ended)."""
    tokens, lps, tops, offsets = [], [], [], []
    for tid, lp, top in entries:
        text = token_text(tid)
        tokens.append(text)
        # an echoed prompt's first token has no logprob: null in both lists, as vLLM answers
        lps.append(None if lp is None else _lp(lp))
        tops.append(None if top is None else {token_text(t): _lp(v) for t, v in top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def prompt_logprobs(scorer: Any, token_text: Callable[[int], str]) -> list[dict | None]:
    """vLLM's ``prompt_logprobs``: null for the first token, then for each token a map from token
    id to ``{"logprob", "rank", "decoded_token"}`` holding that token and the most likely ones."""
    out: list[dict | None] = [None]
    for (tid, lp, top), rank in zip(scorer.entries[1:], scorer.ranks[1:]):
        entry = {str(t): {"logprob": _lp(v), "rank": r + 1, "decoded_token": token_text(t)}
                 for r, (t, v) in enumerate(top)}
        entry[str(tid)] = {"logprob": _lp(lp), "rank": rank, "decoded_token": token_text(tid)}
        out.append(entry)
    return out


def chat_usage_chunk(rid: str, model: str, created: int, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def completion_choice(index: int, text: str, finish: str | None, logprobs: dict | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def completion(rid: str, model: str, text: str, finish: str | None, created: int,
               prompt_tokens: int | None = None, completion_tokens: int | None = None, *,
               choices: list[dict] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rid, "object": "text_completion", "created": created, "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices if choices is not None else [completion_choice(0, text, finish)],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        body["usage"] = usage(prompt_tokens, completion_tokens)
    return body


def completion_usage_chunk(rid: str, model: str, created: int, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def model_card(model_id: str, created: int, *, parent: str | None = None, root: str | None = None,
               max_model_len: int | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {"id": model_id, "object": "model", "created": created, "owned_by": "kaito",
                            "root": root or model_id, "parent": parent}
    if max_model_len is not None:
        card["max_model_len"] = max_model_len
    return card


def sse(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


SSE_DONE = sse("[DONE]")
