"""What the engine works on: one request's :class:`Sequence`, the :class:`Output` pieces it hands
back, and :class:`AsyncSink`, the hand-over from the engine thread to an asyncio consumer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from kaito_core.runtime.protocol import SamplingParams
from kaito_core.runtime.sampling import make_generator
from kaito_core.runtime.textstream import Detokenizer, StopMatcher


class EngineBusy(Exception):
    """The waiting queue is full (the server answers 503 with Retry-After)."""


@dataclass
class Output:
    text: str = ""
    completion_tokens: int = 0
    finished: bool = False
    finish_reason: str | None = None
    error: str | None = None
    # (token id, its log-probability, [(id, logprob) of the top ones]) per token in this output,
    # when the request asked for logprobs
    logprobs: list[tuple[int, float, list[tuple[int, float]]]] | None = None


@dataclass(eq=False)
class Sequence:
    """One request inside the engine."""

    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    eos_ids: frozenset[int]
    detok: Detokenizer
    sink: Callable[[Output], None]
    adapter: str | None = None
    model_id: str = ""                       # what the client asked for (metrics label)
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    stopper: StopMatcher | None = None
    cancelled: bool = False
    finish_reason: str | None = None
    arrived: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None
    slot: int = -1                           # KV-cache slot (SlotEngine)
    pos: int = 0                             # tokens already in the KV cache (SlotEngine)
    pending_logprobs: list[tuple[int, float, list[tuple[int, float]]]] = field(default_factory=list)
    grammar: Any = None                      # a grammar.RowGrammar in JSON mode (its own matcher)

    def __post_init__(self) -> None:
        self.generator = make_generator(self.params.seed)
        self.stopper = StopMatcher(self.params.stop, include=self.params.include_stop_str_in_output)

    def cancel(self) -> None:
        """Called from any thread when the client goes away; the engine drops it next step."""
        self.cancelled = True


class AsyncSink:
    """Hands outputs from the engine thread to one asyncio consumer, batched per loop wake-up."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[Output] = asyncio.Queue()

    def __call__(self, out: Output) -> None:
        self.queue.put_nowait(out)
