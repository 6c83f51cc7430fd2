"""vLLM's chat-template extras in a request, checked for shape and named field by field
(standard library only; runs on the event loop)."""

from __future__ import annotations

from typing import Any

from kaito_core.runtime.errors import bad_param
from kaito_core.runtime.fields import bool_field

# apply_chat_template's own parameters: a chat_template_kwargs key must not override them
_RESERVED_TEMPLATE_KEYS = frozenset({
    "conversation", "messages", "tools", "documents", "chat_template", "add_generation_prompt",
    "continue_final_message", "tokenize", "padding", "truncation", "max_length", "return_tensors",
    "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs"})


def template_options(body: dict) -> dict[str, Any]:
    """vLLM's chat-template extras: ``add_generation_prompt`` (true), ``continue_final_message``
    (false; the answer continues the last, assistant, message: "prefilling" it) and
    ``chat_template_kwargs`` (variables for the template, such as Qwen3's ``enable_thinking``).
    As vLLM's validator, both flags true is refused; ``continue_final_message`` alone turns the
    generation prompt off, since transformers refuses the two together."""
    cont = bool_field(body, "continue_final_message")
    agp = body.get("add_generation_prompt")
    if agp is not None and not isinstance(agp, bool):
        raise bad_param("add_generation_prompt", agp, "true or false", code="invalid_type")
    if cont and agp:
        raise bad_param("continue_final_message", True, "false when add_generation_prompt is true (vLLM's rule); "
                                                        "set add_generation_prompt to false")
    options: dict[str, Any] = {"add_generation_prompt": (not cont) if agp is None else agp,
                               "continue_final_message": cont}
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return options
    if not isinstance(kwargs, dict):
        raise bad_param("chat_template_kwargs", kwargs, "an object such as {\"enable_thinking\": false}",
                        code="invalid_type")
    for key in kwargs:
        if not key.isidentifier() or key in _RESERVED_TEMPLATE_KEYS:
            raise bad_param(f"chat_template_kwargs.{key}", kwargs[key],
                            "a template variable name (an identifier, not one of apply_chat_template's own "
                            f"parameters {sorted(_RESERVED_TEMPLATE_KEYS)})")
    return {**kwargs, **options}
