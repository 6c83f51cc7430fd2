"""Continuous batching over the model's own KV cache (transformers backend).

One engine thread owns the model. Each turn of its loop it

1. runs pending admin commands (adapter load/unload) between forward passes,
2. admits waiting requests (up to ``max_batch``) and prefills them together, left-padded,
3. merges their KV cache into the running batch (left-padding the shorter side), and
4. decodes one token for every running sequence in a single forward pass,

then drops the sequences that finished or whose client went away, and trims cache columns
that only padding still uses. Rows are right-aligned: each row's attention mask hides its
padding and its ``position_ids`` count only its real tokens, so a sequence's logits do not
depend on who else is in the batch (up to floating-point rounding).

This is TGI's original "causal LM" batching. transformers 5.24's own ``generate_batch`` (paged
attention) reached only about a fifth of a static batch's throughput on two CPU cores, while this
batcher stays near (or above) the static batch: see bench/runtime_throughput.py and docs/runtime.md.
:class:`~kaito_core.runtime.slots.SlotEngine` (the default where the model allows) replaces the
concatenated cache with preallocated slots and chunked prefill; this class stays for the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

import torch

from kaito_core.runtime.sampling import sample
from kaito_core.runtime.sequence import AsyncSink, EngineBusy, Output, Sequence  # noqa: F401 - re-exported

log = logging.getLogger("kaito.runtime.engine")


class Engine:
    """Owns the model on one thread; other threads submit :class:`Sequence` objects."""

    def __init__(self, model: Any, *, max_batch: int = 16, max_queue: int = 256,
                 max_prefill_tokens: int = 8192, metrics: Any = None, context_length: int = 2048,
                 forward_kwargs: Callable[[list[Sequence]], dict[str, Any]] | None = None):
        self.model = model
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_prefill_tokens = max_prefill_tokens
        self.context_length = context_length
        self.metrics = metrics
        self.forward_kwargs = forward_kwargs or (lambda rows: {})
        self.device = next(model.parameters()).device
        self.waiting: deque[Sequence] = deque()
        self.rows: list[Sequence] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.commands: deque[tuple[Callable[[], Any], Future]] = deque()
        self.cv = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.steps = 0
        self.max_batch_seen = 0
        self._pending: list[tuple[Sequence, Output]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public, any thread ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self.thread = threading.Thread(target=self._run, name="kaito-engine", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)

    def submit(self, seq: Sequence) -> None:
        with self.cv:
            if len(self.waiting) >= self.max_queue:
                raise EngineBusy(f"{len(self.waiting)} requests are already waiting")
            self.waiting.append(seq)
            self._gauge()
            self.cv.notify_all()

    def call(self, fn: Callable[[], Any], timeout: float = 600.0) -> Any:
        """Run ``fn`` on the engine thread between two forward passes and return its result."""
        fut: Future = Future()
        with self.cv:
            self.commands.append((fn, fut))
            self.cv.notify_all()
        return fut.result(timeout)

    async def acall(self, fn: Callable[[], Any]) -> Any:
        fut: Future = Future()
        with self.cv:
            self.commands.append((fn, fut))
            self.cv.notify_all()
        return await asyncio.wrap_future(fut)

    @property
    def busy_adapters(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in [*self.rows, *getattr(self, "prefilling", ()), *self.waiting]:
            if s.adapter and not s.cancelled:
                counts[s.adapter] = counts.get(s.adapter, 0) + 1
        return counts

    # -- the loop (engine thread) -------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self.cv:
                    while not (self.stopping or self.commands or self.waiting or self._busy()):
                        self.cv.wait(0.5)
                    if self.stopping:
                        break
                self._run_commands()
                admitted: list[Sequence] = []
                try:
                    admitted = self._admit()
                    self._step(admitted)
                except Exception as exc:  # noqa: BLE001 - fail the requests, keep serving
                    log.exception("engine step failed")
                    self._fail_all(f"{type(exc).__name__}: {exc}", extra=admitted)
                self._gauge()
                self._flush()
        self._fail_all("the server is shutting down")
        for seq in list(self.waiting):
            self._finish(seq, Output(finished=True, finish_reason="abort", error="the server is shutting down"),
                         "abort")
        self.waiting.clear()
        self._flush()

    def _busy(self) -> bool:
        """Sequences in the batch (waiting ones are counted by the caller)."""
        return bool(self.rows)

    def _step(self, admitted: list[Sequence]) -> None:
        """One turn: prefill what was admitted, then decode one token for every row."""
        if admitted:
            self._prefill(admitted)
            self._flush()  # first tokens out now, not after the next decode step
        if self.rows:
            self._decode()

    def _run_commands(self) -> None:
        while True:
            with self.cv:
                if not self.commands:
                    return
                fn, fut = self.commands.popleft()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - reported to the caller
                    fut.set_exception(exc)

    def _admit(self) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.max_prefill_tokens
        with self.cv:
            while self.waiting and self.running() + len(admitted) < self.max_batch:
                seq = self.waiting[0]
                if seq.cancelled:
                    self.waiting.popleft()
                    self._finish(seq, Output(finished=True, finish_reason="abort"), "abort")
                    continue
                if admitted and len(seq.prompt_ids) > budget:
                    break
                budget -= len(seq.prompt_ids)
                admitted.append(self.waiting.popleft())
                if self.metrics is not None:
                    self.metrics.observe_admitted(seq)
            self._gauge()
        return admitted

    def _forward(self, rows: list[Sequence], **kw: Any) -> Any:
        return self.model(**kw, use_cache=True, **self.forward_kwargs(rows))

    def _prefill(self, new: list[Sequence]) -> None:
        from transformers import DynamicCache

        length = max(len(s.prompt_ids) for s in new)
        ids = torch.zeros((len(new), length), dtype=torch.long)
        mask = torch.zeros((len(new), length), dtype=torch.long)
        for i, s in enumerate(new):
            ids[i, length - len(s.prompt_ids):] = torch.tensor(s.prompt_ids, dtype=torch.long)
            mask[i, length - len(s.prompt_ids):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self._forward(new, input_ids=ids, attention_mask=mask, position_ids=positions,
                            cache=cache, logits_to_keep=1)
        self._merge(new, cache, mask)  # the model filled ``cache`` in place
        self._after_step(new, out.logits[:, -1, :])

    def _merge(self, new: list[Sequence], cache: Any, mask: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask = list(new), cache, mask
            return
        t_old, t_new = self.mask.shape[1], mask.shape[1]
        width = max(t_old, t_new)

        def left_pad(t: torch.Tensor, n: int) -> torch.Tensor:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[-2] = n
            return torch.cat([t.new_zeros(shape), t], dim=-2)

        for old_layer, new_layer in zip(self.cache.layers, cache.layers):
            old_layer.keys = torch.cat([left_pad(old_layer.keys, width - t_old),
                                        left_pad(new_layer.keys, width - t_new)], dim=0)
            old_layer.values = torch.cat([left_pad(old_layer.values, width - t_old),
                                          left_pad(new_layer.values, width - t_new)], dim=0)
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (width - t_old, 0)),
                               torch.nn.functional.pad(mask, (width - t_new, 0))], dim=0)
        self.rows.extend(new)

    def _decode(self) -> None:
        self._drop_finished()
        if not self.rows:
            return
        ids = torch.tensor([[s.output_ids[-1]] for s in self.rows], dtype=torch.long, device=self.device)
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        out = self._forward(self.rows, input_ids=ids, attention_mask=self.mask, position_ids=positions,
                            cache=self.cache)
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(self.rows))
        if self.metrics is not None:
            self.metrics.observe_step(len(self.rows))
        self._after_step(self.rows, out.logits[:, -1, :])
        self._drop_finished()

    def _after_step(self, rows: list[Sequence], logits: torch.Tensor) -> None:
        """Sample one token for each row still going (every engine calls this after a forward
        pass, with that pass's last-position logits) and hand it on."""
        live = [s for s in rows if s.finish_reason is None]
        if not live:
            return
        index = [i for i, s in enumerate(rows) if s.finish_reason is None]
        if len(index) != len(rows):
            logits = logits[index]
        failed: dict[int, str] = {}
        if any(s.grammar is not None for s in live):  # JSON mode; unconstrained batches skip it
            from kaito_core.runtime.grammar import constrain

            logits, failed = constrain(logits, live)
        picks = sample(logits, live)
        for i, error in failed.items():
            picks[i].token, picks[i].error = None, error
        now = time.monotonic()
        for seq, pick in zip(live, picks):
            if seq.cancelled:
                continue
            if pick.error is not None:  # this request alone ends; the rest of the batch goes on
                log.warning("request failed alone: %s", pick.error)
                self._fail_one(seq, pick.error)
                continue
            self._token(seq, pick, now)

    def _fail_one(self, seq: Sequence, error: str) -> None:
        self._finish(seq, Output(finished=True, finish_reason="error", error=error,
                                 completion_tokens=len(seq.output_ids)), "error")

    def _token(self, seq: Sequence, pick: Any, now: float) -> None:
        tok = pick.token
        seq.output_ids.append(tok)
        if pick.logprob is not None:
            seq.pending_logprobs.append((tok, pick.logprob, pick.top or []))
        if self.metrics is not None:
            if seq.first_token_at is None:
                self.metrics.observe_first_token(now - seq.arrived)
            else:
                self.metrics.observe_token_gap(now - (seq.last_token_at or now))
        if seq.first_token_at is None:
            seq.first_token_at = now
        seq.last_token_at = now
        p = seq.params
        is_end = (tok in seq.eos_ids and not p.ignore_eos) or tok in p.stop_token_ids
        complete = False  # JSON mode: the grammar allows nothing more (its end token is not sampled)
        if seq.grammar is not None and not is_end:
            verdict = seq.grammar.advance(tok)
            if verdict is not None and verdict != "stop":
                log.warning("request failed alone: %s", verdict)
                self._fail_one(seq, verdict)
                return
            complete = verdict == "stop"
        # the end token itself is not part of the text (vLLM's default too)
        text = seq.detok.flush() if is_end else seq.detok.add(tok)
        if complete:
            text += seq.detok.flush()
        text = seq.stopper.feed(text)
        reason = None
        if seq.stopper.stopped or is_end or complete:
            reason = "stop"
        elif len(seq.output_ids) >= seq.max_new_tokens:
            reason = "length"
            text += seq.stopper.feed(seq.detok.flush())
        if reason is not None:
            if not seq.stopper.stopped:
                text += seq.stopper.finish()
            self._finish(seq, Output(text=text, completion_tokens=len(seq.output_ids), finished=True,
                                     finish_reason=reason, logprobs=self._take_logprobs(seq)), reason)
        elif text or seq.pending_logprobs:
            # with logprobs, every token is a chunk even while its text is held back (an
            # incomplete UTF-8 character, a possible stop string), as vLLM streams them
            self._emit(seq, Output(text=text, completion_tokens=len(seq.output_ids),
                                   logprobs=self._take_logprobs(seq)))

    @staticmethod
    def _take_logprobs(seq: Sequence) -> list | None:
        if seq.params.logprobs is None:
            return None
        out, seq.pending_logprobs = seq.pending_logprobs, []
        return out

    def _finish(self, seq: Sequence, out: Output, reason: str) -> None:
        """Every way a request ends goes through here, so the metrics count each one once."""
        seq.finish_reason = reason
        if self.metrics is not None:
            self.metrics.observe_finished(seq, reason)
        self._emit(seq, out)

    def _drop_finished(self) -> None:
        keep = [i for i, s in enumerate(self.rows) if s.finish_reason is None and not s.cancelled]
        for i, s in enumerate(self.rows):
            if s.cancelled and s.finish_reason is None:
                self._finish(s, Output(finished=True, finish_reason="abort", completion_tokens=len(s.output_ids)),
                             "abort")
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.mask = self.mask.index_select(0, index)
        first = int((self.mask.sum(0) > 0).nonzero()[0])  # columns left of this are padding for all
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]
        self.rows = [self.rows[i] for i in keep]

    def _fail_all(self, message: str, extra: list[Sequence] = ()) -> None:
        for s in [*self.rows, *(x for x in extra if x not in self.rows)]:
            if s.finish_reason is None:
                self._finish(s, Output(finished=True, finish_reason="error", error=message,
                                       completion_tokens=len(s.output_ids)), "error")
        self.rows, self.cache, self.mask = [], None, None

    # -- outputs -------------------------------------------------------------------------

    def _emit(self, seq: Sequence, out: Output) -> None:
        self._pending.append((seq, out))

    def _flush(self) -> None:
        """Deliver this step's outputs with one wake-up of the event loop, not one per token."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []

        def deliver() -> None:
            for seq, out in pending:
                seq.sink(out)

        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(deliver)
                return
            except RuntimeError:  # loop closed between the check and the call
                pass
        deliver()

    def kv_usage(self) -> float:
        """Share of the KV-cache capacity (``max_batch`` rows of the model's context) in use."""
        capacity = self.max_batch * max(self.context_length, 1)
        return min(1.0, sum(len(s.prompt_ids) + len(s.output_ids) for s in self.rows) / capacity)

    def running(self) -> int:
        return len(self.rows)

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.set_load(running=self.running(), waiting=len(self.waiting), kv_usage=self.kv_usage())
