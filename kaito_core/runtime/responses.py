"""OpenAI response objects (chat, completion, stream chunks, models) as plain dicts."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

FINGERPRINT = "kaito-transformers"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int,
                    created: int | None = None) -> dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": created or int(time.time()), "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any], finish: str | None = None) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def chat_usage_chunk(rid: str, model: str, created: int, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": FINGERPRINT, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def completion(rid: str, model: str, text: str, finish: str | None, created: int,
               prompt_tokens: int | None = None, completion_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": rid, "object": "text_completion", "created": created, "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
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
