"""Request bodies -> validated generation requests, or an :class:`APIError` naming the param.

Written by hand rather than as pydantic models so every refusal says which parameter, what
it was and what is expected, in OpenAI's error shape, and so the checks are cheap: they run on
the event loop for every request. Standard library only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kaito_core.runtime.constraints import Constraint, response_format
from kaito_core.runtime.templating import template_options
from kaito_core.runtime.tools import Tools, parse_tools, template_message
from kaito_core.runtime.errors import bad_param, missing_param, unsupported_param
from kaito_core.runtime.fields import (  # noqa: F401 - check_text, parse_json: public from here too
    bool_field, check_text, int_field, logit_bias_field, num_field, parse_json, stop_field, stop_token_ids_field)

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_SEED = 2**63 - 1
MAX_MESSAGES = 4096

# Parameters OpenAI defines that this server cannot honour: refused, never silently ignored.
_UNSUPPORTED_CHAT = {
    "functions": "function calling is not implemented by the transformers backend",
    "function_call": "function calling is not implemented by the transformers backend",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}
_UNSUPPORTED_COMPLETION = {
    "suffix": "insertion (suffix) is not supported",
}
MAX_N = 16             # choices per request (each is one sequence in the batch)
MAX_CHOICES_TOTAL = 256  # prompts x n in one /v1/completions request
MAX_LOGPROBS = 20      # vLLM's default --max-logprobs
# vLLM (sampling_params.py): below _SAMPLING_EPS a temperature means greedy; below _MAX_TEMP it
# is raised to _MAX_TEMP, because dividing logits by it overflows to inf/NaN.
SAMPLING_EPS = 1e-5
MIN_TEMPERATURE = 1e-2


@dataclass
class SamplingParams:
    """Per-request decoding settings, already validated."""

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                      # 0: no top-k
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None         # None: not asked; k: the sampled token's + the k most likely
    skip_special_tokens: bool = True    # vLLM's: special tokens left out of the text
    include_stop_str_in_output: bool = False  # vLLM's: a matched stop string ends the text

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass
class ParsedRequest:
    """What the server hands to the engine once the body is valid (tokens come later)."""

    kind: str                              # "chat" | "completion" | "kaito_chat"
    model: str | None
    params: SamplingParams
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    prompt_ids: list[int] | None = None
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False         # vLLM's stream_options.continuous_usage_stats: usage in every chunk
    prompt_logprobs: int | None = None     # vLLM's: the prompt tokens' logprobs (+ this many top ones)
    return_full_text: bool = False         # /chat: upstream's pipeline default
    max_length: int | None = None          # /chat: prompt + new tokens (upstream's generate_kwargs)
    min_length: int = 0                    # /chat: prompt + new tokens, at least
    echo: bool = False
    n: int = 1                             # choices; each one is its own sequence in the batch
    constraint: Constraint | None = None   # JSON mode
    # keyword arguments of the chat template's rendering (vLLM's add_generation_prompt,
    # continue_final_message and chat_template_kwargs)
    template: dict[str, Any] = field(default_factory=lambda: {"add_generation_prompt": True})
    more_prompts: list[tuple[str | None, list[int] | None]] = field(default_factory=list)  # a batch's others
    tools: Tools = field(default_factory=Tools)   # chat: tools for the template, and a forced call
    max_tokens_param: str = "max_tokens"   # the field that set params.max_tokens, named in its errors


def normalise_temperature(value: float) -> float:
    """vLLM's rule: a temperature under 1e-5 is greedy (0), one under 1e-2 is raised to 1e-2."""
    if value < SAMPLING_EPS:
        return 0.0
    return max(value, MIN_TEMPERATURE)


def sampling_from(body: dict) -> SamplingParams:
    """The sampling parameters shared by chat and completions (OpenAI + vLLM extras)."""
    max_tokens = int_field(body, "max_tokens", lo=1, expected="a positive integer")
    # OpenAI's newer name wins when both are sent
    mct = int_field(body, "max_completion_tokens", lo=1, expected="a positive integer")
    max_tokens = mct if mct is not None else max_tokens
    top_k = int_field(body, "top_k", lo=-1, expected="-1, 0 (disabled) or a positive integer", default=0)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=normalise_temperature(num_field(body, "temperature", lo=0.0, hi=2.0, default=1.0)),
        top_p=num_field(body, "top_p", lo=0.0, hi=1.0, lo_open=True, default=1.0),
        top_k=max(top_k, 0),
        min_p=num_field(body, "min_p", lo=0.0, hi=1.0, default=0.0),
        seed=int_field(body, "seed", lo=-MAX_SEED, hi=MAX_SEED, expected="a 64-bit integer"),
        stop=stop_field(body),
        stop_token_ids=stop_token_ids_field(body),
        presence_penalty=num_field(body, "presence_penalty", lo=-2.0, hi=2.0, default=0.0),
        frequency_penalty=num_field(body, "frequency_penalty", lo=-2.0, hi=2.0, default=0.0),
        # vLLM only requires > 0; the upper bound keeps a typo (100 for 1.00) from silently
        # making every seen token unpickable
        repetition_penalty=num_field(body, "repetition_penalty", lo=0.0, hi=10.0, lo_open=True, default=1.0),
        logit_bias=logit_bias_field(body),
        ignore_eos=bool_field(body, "ignore_eos"),
        min_tokens=int_field(body, "min_tokens", lo=0, default=0, expected="a non-negative integer"),
        skip_special_tokens=bool_field(body, "skip_special_tokens", True),
        include_stop_str_in_output=bool_field(body, "include_stop_str_in_output"),
    )
    if params.max_tokens is not None and params.min_tokens > params.max_tokens:
        raise bad_param("min_tokens", params.min_tokens, f"at most max_tokens ({params.max_tokens})")
    return params


def _max_tokens_param(body: dict) -> str:
    return "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"


def _choices(body: dict, kind: str) -> int:
    n = int_field(body, "n", lo=1, hi=MAX_N, default=1, expected=f"an integer in [1, {MAX_N}]")
    best_of = int_field(body, "best_of", lo=1, default=None, expected="a positive integer")
    if kind == "completion" and best_of is not None and best_of != n:
        # best_of == n is the default (vLLM V1 accepts nothing else either)
        raise unsupported_param("best_of", f"best_of {best_of} != n {n}: ranking extra candidates is not "
                                           "implemented; leave best_of out or equal to n")
    return n


def _chat_logprobs(body: dict) -> int | None:
    want = bool_field(body, "logprobs")
    top = int_field(body, "top_logprobs", lo=0, hi=MAX_LOGPROBS, default=None,
               expected=f"an integer in [0, {MAX_LOGPROBS}]")
    if top is not None and top > 0 and not want:
        raise bad_param("top_logprobs", top, "to be sent with logprobs: true (OpenAI's rule)")
    return (top or 0) if want else None


def _completion_logprobs(body: dict) -> int | None:
    value = body.get("logprobs")
    if value is None or value is False:
        return None
    return int_field(body, "logprobs", lo=0, hi=MAX_LOGPROBS, expected=f"an integer in [0, {MAX_LOGPROBS}]")


def _common(body: dict, unsupported: dict[str, str], kind: str) -> tuple[str | None, bool, bool]:
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise bad_param("model", model, "a model id string (GET /v1/models lists them)", code="invalid_type")
    for key, why in unsupported.items():
        if body.get(key) not in (None, [], {}):
            raise unsupported_param(key, why)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_param("user", user, "a string", code="invalid_type")
    stream = bool_field(body, "stream")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not stream:
            raise bad_param("stream_options", opts, "to be set only when stream is true")
        if not isinstance(opts, dict):
            raise bad_param("stream_options", opts, "an object such as {\"include_usage\": true}", code="invalid_type")
        include_usage = bool_field(opts, "include_usage", param="stream_options.include_usage")
    return model, stream, include_usage


def _prompt_logprobs(body: dict, stream: bool) -> int | None:
    k = int_field(body, "prompt_logprobs", lo=0, hi=MAX_LOGPROBS, expected=f"an integer in [0, {MAX_LOGPROBS}]")
    if k is not None and stream:  # vLLM's rule
        raise bad_param("prompt_logprobs", k, "to be left out when stream is true")
    return k


def _continuous_usage(body: dict, include_usage: bool) -> bool:
    """vLLM's ``stream_options.continuous_usage_stats``: every chunk carries ``usage`` (with
    ``include_usage`` only, as in vLLM)."""
    opts = body.get("stream_options")
    if not isinstance(opts, dict):
        return False
    return bool_field(opts, "continuous_usage_stats", param="stream_options.continuous_usage_stats") and include_usage


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise bad_param(f"{where}[{j}]", part, "a content part object {\"type\": \"text\", \"text\": ...}",
                                code="invalid_type")
            if part.get("type") != "text":
                raise bad_param(f"{where}[{j}].type", part.get("type"),
                                "'text' (this model reads text only; images, audio and files are not supported)")
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_param(f"{where}[{j}].text", text, "a string", code="invalid_type")
            parts.append(text)
        return "".join(parts)
    raise bad_param(where, content, "a string or a list of text parts", code="invalid_type")


def parse_messages(value: Any, param: str = "messages") -> list[dict[str, Any]]:
    if value is None:
        raise missing_param(param, "a non-empty list of {\"role\", \"content\"} messages")
    if not isinstance(value, list):
        raise bad_param(param, value, "a list of {\"role\", \"content\"} messages", code="invalid_type")
    if not value:
        raise bad_param(param, value, "at least one message")
    if len(value) > MAX_MESSAGES:
        raise bad_param(param, f"{len(value)} messages", f"at most {MAX_MESSAGES} messages")
    out = []
    for i, msg in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(msg, dict):
            raise bad_param(where, msg, "an object with 'role' and 'content'", code="invalid_type")
        role = msg.get("role")
        if role is None:
            raise missing_param(f"{where}.role", f"one of {list(ROLES)}")
        if role not in ROLES:
            extra = " (legacy function messages: send role 'tool')" if role == "function" else ""
            raise bad_param(f"{where}.role", role, f"one of {list(ROLES)}{extra}")
        name = msg.get("name")
        if name is not None and not isinstance(name, str):  # OpenAI's and vLLM's schema: a string
            raise bad_param(f"{where}.name", name, "a string (the participant's name)", code="invalid_type")
        calls = template_message(msg, where)
        if "content" not in msg or msg["content"] is None:
            if role != "assistant" or "tool_calls" not in calls:  # a tool-calling turn may have no text
                raise missing_param(f"{where}.content", "the message text (a string or a list of text parts)")
            text = ""
        else:
            text = _content_text(msg["content"], f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": text, **calls})
    return out


def parse_chat(body: dict) -> ParsedRequest:
    """``POST /v1/chat/completions``."""
    model, stream, include_usage = _common(body, _UNSUPPORTED_CHAT, "chat")
    tools, forced = parse_tools(body)
    constraint = response_format(body, forced)
    messages = parse_messages(body.get("messages"))
    params = sampling_from(body)
    params.logprobs = _chat_logprobs(body)
    return ParsedRequest(kind="chat", model=model, params=params, messages=messages, stream=stream,
                         include_usage=include_usage, n=_choices(body, "chat"), constraint=constraint,
                         continuous_usage=_continuous_usage(body, include_usage),
                         prompt_logprobs=_prompt_logprobs(body, stream),
                         template=template_options(body), tools=tools,
                         max_tokens_param=_max_tokens_param(body))


def parse_completion(body: dict) -> ParsedRequest:
    """``POST /v1/completions``: a prompt (a string or token ids) or a batch of them."""
    model, stream, include_usage = _common(body, _UNSUPPORTED_COMPLETION, "completion")
    echo = bool_field(body, "echo")
    constraint = response_format(body)
    prompts = _prompts(body.get("prompt"))
    n = _choices(body, "completion")
    if len(prompts) * n > MAX_CHOICES_TOTAL:
        raise bad_param("prompt", f"{len(prompts)} prompts x n={n}", f"at most {MAX_CHOICES_TOTAL} choices in all "
                                                                     "(send several requests)")
    params = sampling_from(body)
    params.logprobs = _completion_logprobs(body)
    (text, ids), rest = prompts[0], prompts[1:]
    return ParsedRequest(kind="completion", model=model, params=params, prompt=text, prompt_ids=ids,
                         stream=stream, include_usage=include_usage, echo=echo, n=n, constraint=constraint,
                         continuous_usage=_continuous_usage(body, include_usage),
                         prompt_logprobs=_prompt_logprobs(body, stream),
                         more_prompts=rest, max_tokens_param=_max_tokens_param(body))


def _one_prompt(value: Any, where: str) -> tuple[str | None, list[int] | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        if any(t < 0 for t in value):
            raise bad_param(where, value, "token ids >= 0")
        return None, list(value)
    raise bad_param(where, value, "a string or a non-empty list of token ids", code="invalid_type")


def _prompts(value: Any) -> list[tuple[str | None, list[int] | None]]:
    """A prompt (a string or token ids), or a batch of them (a list of strings or of token-id
    lists), as vLLM accepts: each prompt gets ``n`` choices, indexed prompt by prompt."""
    if value is None:
        raise missing_param("prompt", "a string, a list of token ids, or a list of those (a batch)")
    if isinstance(value, list) and value and all(isinstance(p, (str, list)) for p in value):
        return [_one_prompt(p, f"prompt[{i}]") for i, p in enumerate(value)]
    return [_one_prompt(value, "prompt")]


def split_batch(parsed: ParsedRequest) -> list[ParsedRequest]:
    """One request per prompt of a batch, each with its own copy of the sampling parameters
    (preparing a request adjusts them to its prompt's length)."""
    prompts = [(parsed.prompt, parsed.prompt_ids), *parsed.more_prompts]
    return [dataclasses.replace(parsed, prompt=text, prompt_ids=ids, more_prompts=[],
                                params=dataclasses.replace(parsed.params)) for text, ids in prompts]


# upstream KAITO's generate_kwargs defaults (presets/.../text-generation/inference_api.py)
KAITO_DEFAULTS = {"max_length": 200, "min_length": 0, "do_sample": True, "temperature": 1.0,
                  "top_k": 10, "top_p": 1.0, "repetition_penalty": 1.0}


def parse_kaito_chat(body: dict) -> ParsedRequest:
    """``POST /chat``: upstream KAITO's older API (``prompt`` or ``messages`` + ``generate_kwargs``)."""
    prompt, messages = body.get("prompt"), body.get("messages")
    if prompt is None and messages is None:
        raise missing_param("prompt", "a 'prompt' string (text generation) or a 'messages' list (conversation)")
    if prompt is not None and messages is not None:
        raise bad_param("messages", "both prompt and messages", "only one of 'prompt' or 'messages'")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise bad_param("prompt", prompt, "a non-empty string", code="invalid_type")
    parsed_messages = parse_messages(messages) if messages is not None else None
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise bad_param("model", model, "a model or adapter id string", code="invalid_type")
    gk = body.get("generate_kwargs")
    if gk is None:
        gk = {}
    if not isinstance(gk, dict):
        raise bad_param("generate_kwargs", gk, "an object such as {\"max_length\": 200, \"temperature\": 0.7}",
                        code="invalid_type")
    kw = {**KAITO_DEFAULTS, **gk}
    p = "generate_kwargs."
    max_length = int_field(kw, "max_length", lo=1, param=p + "max_length", expected="a positive integer")
    max_new = int_field(kw, "max_new_tokens", lo=1, param=p + "max_new_tokens", expected="a positive integer")
    num_beams = int_field(kw, "num_beams", lo=1, default=1, param=p + "num_beams")
    if num_beams != 1:
        raise unsupported_param(p + "num_beams", "beam search is not implemented; use num_beams=1")
    do_sample = bool_field(kw, "do_sample", True, param=p + "do_sample")
    temperature = num_field(kw, "temperature", lo=0.0, hi=100.0, default=1.0, param=p + "temperature")
    top_k = int_field(kw, "top_k", lo=0, default=0, param=p + "top_k", expected="a non-negative integer")
    params = SamplingParams(
        max_tokens=max_new,
        temperature=normalise_temperature(temperature) if do_sample else 0.0,
        top_p=num_field(kw, "top_p", lo=0.0, hi=1.0, lo_open=True, default=1.0, param=p + "top_p"),
        top_k=top_k,
        seed=int_field(kw, "seed", lo=-MAX_SEED, hi=MAX_SEED, param=p + "seed"),
        repetition_penalty=num_field(kw, "repetition_penalty", lo=0.0, hi=10.0, lo_open=True, default=1.0,
                                param=p + "repetition_penalty"),
        min_tokens=int_field(kw, "min_new_tokens", lo=0, default=0, param=p + "min_new_tokens"),
        stop=stop_field(kw, "stop_strings", p + "stop_strings"),
    )
    min_length = int_field(kw, "min_length", lo=0, default=0, param=p + "min_length")
    if max_length is not None and min_length > max_length:
        raise bad_param(p + "min_length", min_length, f"at most max_length ({max_length})")
    rft = bool_field(body, "return_full_text", True)
    req = ParsedRequest(kind="kaito_chat", model=model, params=params, prompt=prompt, messages=parsed_messages,
                        return_full_text=rft and prompt is not None, max_length=None if max_new else max_length,
                        min_length=min_length, max_tokens_param=p + "max_new_tokens")
    return req
