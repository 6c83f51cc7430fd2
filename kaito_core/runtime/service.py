"""The transformers backend as the HTTP layer sees it: load, resolve a model name, tokenize,
check the context, and run one generation through the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator

from kaito_core.runtime.errors import APIError, bad_param, generation_error, model_not_found
from kaito_core.runtime.fields import MAX_TEMPLATE_DEPTH, nesting
from kaito_core.runtime.loader import ModelLoadError
from kaito_core.runtime.options import ServeOptions
from kaito_core.runtime.protocol import ParsedRequest
from kaito_core.runtime.service_admin import AdapterAdmin

log = logging.getLogger("kaito.runtime.service")


@dataclass
class Prepared:
    """A request ready for the engine: tokens, limits and the adapter to use."""

    parsed: ParsedRequest
    model_id: str
    adapter: str | None
    prompt_ids: list[int]
    prompt_text: str
    max_new_tokens: int
    grammars: list[Any] = dataclasses.field(default_factory=list)   # JSON mode: one matcher per choice


# Tokenize at most (context x the longest token's length) characters before deciding a prompt
# is too long: a prefix that already fills the context proves the whole prompt does, so an 8 MB
# prompt costs a 2048-token model at most 2048 * 64 characters of tokenizing, not 8 MB.
MAX_CHARS_PER_TOKEN = 64


def longest_token(tokenizer: Any) -> int:
    """Characters the longest vocabulary entry can cover (its byte-level or sentencepiece form
    is at least as long as the text it stands for), capped at :data:`MAX_CHARS_PER_TOKEN`."""
    try:
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        longest = max((len(p) for p in pieces if isinstance(p, str)), default=MAX_CHARS_PER_TOKEN)
    except Exception:  # noqa: BLE001 - an exotic tokenizer: keep the safe default
        return MAX_CHARS_PER_TOKEN
    return max(1, min(longest, MAX_CHARS_PER_TOKEN))


def make_engine(opts: ServeOptions, loaded: Any, metrics: Any, forward_kwargs: Any) -> Any:
    """:class:`SlotEngine` when ``--kv-cache`` allows and the model supports it, else :class:`Engine`."""
    from kaito_core.runtime.engine import Engine
    from kaito_core.runtime.slots import SlotEngine, supports_slots

    common = dict(max_batch=opts.max_batch, max_queue=opts.max_queue, metrics=metrics,
                  forward_kwargs=forward_kwargs, context_length=loaded.context_length)
    why_not = supports_slots(loaded.model, loaded.context_length)
    if opts.kv_cache == "slots" and why_not:
        raise ModelLoadError(f"--kv-cache slots: this model cannot use KV-cache slots: {why_not}; "
                             "use --kv-cache dynamic")
    if opts.kv_cache == "dynamic" or why_not:
        if why_not and opts.kv_cache == "auto":
            log.info("KV-cache slots not used: %s", why_not)
        return Engine(loaded.model, **common)
    return SlotEngine(loaded.model, chunk_tokens=opts.prefill_chunk, cuda_graphs=opts.cuda_graphs, **common)


def _tagged(queue: asyncio.Queue, index: int, out: Any) -> None:
    queue.put_nowait((index, out))


class TransformersService(AdapterAdmin):
    def __init__(self, opts: ServeOptions, preset: Any = None, metrics: Any = None):
        self.opts = opts
        self.preset = preset
        self.metrics = metrics
        self.loaded: Any = None
        self.engine: Any = None
        self.adapters: Any = None
        self.state = "loading"          # loading | ready | failed | stopped
        self.error: str | None = None
        self.created = int(time.time())
        self._thread: threading.Thread | None = None
        self._admin_lock = asyncio.Lock()
        self._fetching: set[str] = set()   # adapter names being fetched (outside the lock)
        # One worker: a fast tokenizer is not safe to reconfigure from two threads at once
        # (tokenizers' "Already borrowed"), and one thread is enough to keep the loop free.
        self._tokenizer_pool = ThreadPoolExecutor(1, thread_name_prefix="kaito-tokenize")
        # JSON-mode grammars compile here, beside tokenizing (a large schema can take a second)
        self._grammar_pool = ThreadPoolExecutor(2, thread_name_prefix="kaito-grammar")
        self.grammars: Any = None
        self._token_texts: dict[int, str] = {}
        self._max_token_chars = MAX_CHARS_PER_TOKEN
        self.on_failed: Any = None       # called (from the loading thread) when loading fails

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, background: bool = True) -> None:
        if background:
            self._thread = threading.Thread(target=self._load, args=(loop,), name="kaito-load", daemon=True)
            self._thread.start()
        else:
            self._load(loop)

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            from kaito_core.runtime.adapters import AdapterSet, scan_adapters_dir
            from kaito_core.runtime.loader import load_model

            self.loaded = load_model(self.opts, self.preset)
            self.adapters = AdapterSet(self.loaded.model, allow_pickle=self.opts.allow_pickle)
            from kaito_core.runtime.grammar import Grammars  # imports llguidance only when used

            self.grammars = Grammars(self.loaded.tokenizer, self.loaded.vocab_size, self.loaded.eos_ids,
                                     compact=self.opts.disable_any_whitespace)
            specs = list(self.opts.adapters)
            if self.opts.adapters_dir:
                names = {s.name for s in specs}
                specs += [s for s in scan_adapters_dir(self.opts.adapters_dir, self.opts.adapter_strengths)
                          if s.name not in names]
            for spec in specs:
                self.adapters.load(spec.name, spec.source, spec.strength)
            self.engine = make_engine(self.opts, self.loaded, self.metrics, self.adapters.forward_kwargs)
            self.engine.model = self.adapters.model
            self.engine.start(loop)
            # Everything loaded so far (torch, transformers, the model's modules) lives as long
            # as the process: move it out of the collector's reach, as vLLM does after start-up.
            # Without this, a full collection walks millions of objects and stalls every stream
            # for 150-400 ms each time a burst of allocations (a large request) triggers one.
            self._max_token_chars = longest_token(self.loaded.tokenizer)
            gc.collect()
            gc.freeze()
            self.state = "ready"
            if self.metrics is not None:
                self.metrics.loaded.set(1)
        except Exception as exc:  # noqa: BLE001 - reported by /health and the log
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("loading failed: %s", self.error)
            if self.on_failed is not None:
                self.on_failed()

    def wait_loaded(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.stop()
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        self._grammar_pool.shutdown(wait=False, cancel_futures=True)
        if self.state != "failed":
            self.state = "stopped"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def require_ready(self) -> None:
        if self.state == "loading":
            raise APIError(503, "the model is still loading; retry shortly (GET /health says when it is ready)",
                           type="server_error", code="model_loading", headers={"Retry-After": "5"})
        if self.state != "ready":
            raise APIError(503, f"the model failed to load: {self.error}", type="server_error", code="model_failed")

    # -- names ---------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.opts.model_name

    def base_names(self) -> set[str]:
        names = {self.opts.model_name, self.opts.model}
        if self.preset is not None:
            names |= {self.preset.name, *self.preset.aliases}
        return names

    def model_ids(self) -> list[str]:
        return [self.model_id, *sorted(self.adapters.adapters if self.adapters else [])]

    def resolve_model(self, name: str | None, lenient: bool = False) -> tuple[str, str | None]:
        """``model`` -> (id answered, adapter). Unknown: 404 as vLLM answers, or the base model
        when ``lenient`` (upstream KAITO's /chat never read the field)."""
        if name is None or name in self.base_names():
            return self.model_id, None
        if self.adapters is not None and name in self.adapters.adapters:
            return name, name
        if lenient:
            return self.model_id, None
        raise model_not_found(name, self.model_ids())

    def token_text(self, token_id: int) -> str:
        """One token's text, for log-probabilities (cached: the same ids recur constantly)."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self.loaded.tokenizer.decode([token_id], skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False)
            if len(self._token_texts) < 200_000:
                self._token_texts[token_id] = text
        return text

    # -- requests ------------------------------------------------------------------------

    def prepare(self, parsed: ParsedRequest) -> Prepared:
        self.require_ready()
        model_id, adapter = self.resolve_model(parsed.model, lenient=parsed.kind == "kaito_chat")
        tok = self.loaded.tokenizer
        ctx = self.loaded.context_length
        if parsed.messages is not None:
            text = self._render(parsed)
            prompt_param = "messages"
            ids = self._tokenize(text, ctx, prompt_param, add_special_tokens=False)
        elif parsed.prompt_ids is not None:
            bad = [t for t in parsed.prompt_ids if t >= self.loaded.vocab_size]
            if bad:
                raise bad_param("prompt", bad[0], f"token ids below the vocabulary size ({self.loaded.vocab_size})")
            ids = list(parsed.prompt_ids)
            text = tok.decode(ids)
            prompt_param = "prompt"
        else:
            text = parsed.prompt or ""
            prompt_param = "prompt"
            ids = self._tokenize(text, ctx, prompt_param)
        if not ids:
            raise bad_param(prompt_param, text, "a prompt of at least one token")
        n = len(ids)
        if n >= ctx:
            raise APIError(400, f"this model's maximum context length is {ctx} tokens, but the {prompt_param} has "
                                f"{n} tokens; shorten it to at most {ctx - 1} tokens", param=prompt_param,
                           code="context_length_exceeded")
        params = parsed.params
        outside = sorted(t for t in params.logit_bias if t >= self.loaded.vocab_size)
        if outside:  # vLLM refuses them too (they used to be dropped without a word)
            raise bad_param("logit_bias", str(outside[0]), f"token ids below the vocabulary size "
                                                           f"({self.loaded.vocab_size})")
        if parsed.kind == "kaito_chat" and parsed.max_length is not None:
            max_new = parsed.max_length - n
            if max_new < 1:
                raise bad_param("generate_kwargs.max_length", parsed.max_length,
                                f"more than the prompt's {n} tokens (max_length counts prompt + new tokens), "
                                "or send generate_kwargs.max_new_tokens")
            max_new = min(max_new, ctx - n)
            params.min_tokens = max(params.min_tokens, parsed.min_length - n)
        elif params.max_tokens is not None:
            if n + params.max_tokens > ctx:
                raise APIError(400, f"this model's maximum context length is {ctx} tokens; you asked for "
                                    f"{params.max_tokens} new tokens after a {n}-token prompt ({n + params.max_tokens} "
                                    f"in all); lower {parsed.max_tokens_param} to at most {ctx - n}",
                               param=parsed.max_tokens_param,
                               code="context_length_exceeded")
            max_new = params.max_tokens
        else:
            max_new = ctx - n
        params.min_tokens = min(params.min_tokens, max_new)
        return Prepared(parsed=parsed, model_id=model_id, adapter=adapter, prompt_ids=ids, prompt_text=text,
                        max_new_tokens=max_new)

    def _render(self, parsed: ParsedRequest) -> str:
        for param, value in (("tools", parsed.tools.tools), ("messages", parsed.messages)):
            if value and nesting(value, MAX_TEMPLATE_DEPTH) > MAX_TEMPLATE_DEPTH:
                raise APIError(400, f"'{param}' nests too deeply for the chat template to render (more than "
                                    f"{MAX_TEMPLATE_DEPTH} levels); flatten it", param=param, code="invalid_value")
        try:
            return self.loaded.tokenizer.apply_chat_template(parsed.messages, chat_template=self.loaded.chat_template,
                                                             tools=parsed.tools.tools or None, tokenize=False,
                                                             **parsed.template)
        except RecursionError:  # a tool schema (or tool-call arguments) nested too deep to render
            param = "tools" if parsed.tools.tools else "messages"
            raise APIError(400, f"'{param}' nests too deeply for the chat template to render; flatten it",
                           param=param, code="invalid_value") from None
        except Exception as exc:  # noqa: BLE001 - templates raise for e.g. a wrong role order
            raise bad_param("messages", f"{len(parsed.messages)} messages",
                            f"messages this model's chat template accepts ({exc})") from None

    def tokenize(self, parsed: ParsedRequest, add_special_tokens: bool) -> list[int]:
        """``POST /tokenize`` (worker thread): the prompt's or the templated messages' token ids.
        Like vLLM's, the count may exceed the context; a prompt so long that its first
        (context x longest token) characters already fill the context is a 400 instead of a
        tokenization of megabytes."""
        self.require_ready()
        self.resolve_model(parsed.model)
        param, text = ("messages", self._render(parsed)) if parsed.messages is not None else ("prompt", parsed.prompt)
        return self._tokenize(text or "", self.loaded.context_length, param, add_special_tokens=add_special_tokens)

    def _tokenize(self, text: str, ctx: int, param: str, **kw: Any) -> list[int]:
        tok = self.loaded.tokenizer
        cap = ctx * self._max_token_chars
        if len(text) > cap:
            # the backend's batch call releases the GIL, and len() of an Encoding builds no list
            # of Python ints (that many allocations trigger full garbage collections)
            backend = getattr(tok, "backend_tokenizer", None)
            if backend is not None:
                n = len(backend.encode_batch([text[:cap]], add_special_tokens=kw.get("add_special_tokens", True))[0])
            else:
                n = len(tok(text[:cap], **kw)["input_ids"])
            if n >= ctx:
                raise APIError(400, f"this model's maximum context length is {ctx} tokens, but the {param} has more "
                                    f"than {n} tokens ({len(text)} characters); shorten it",
                               param=param, code="context_length_exceeded")
        return tok(text, **kw)["input_ids"]

    async def on_tokenizer(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the tokenizer's worker thread (the one thread that may use it)."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_pool, fn, *args)

    async def prepare_async(self, parsed: ParsedRequest) -> Prepared:
        """:meth:`prepare` on the tokenizer's worker thread: chat templating and tokenizing a
        large request must never stall the event loop (and with it every running stream). A
        JSON-mode grammar compiles at the same time on another worker; a prompt error is
        reported before a schema error."""
        self.require_ready()
        loop = asyncio.get_running_loop()
        prepared = loop.run_in_executor(self._tokenizer_pool, self.prepare, parsed)
        if parsed.constraint is None:
            return await prepared
        grammars = loop.run_in_executor(self._grammar_pool, self.grammars.rows, parsed.constraint, parsed.n)
        prep, rows = await asyncio.gather(prepared, grammars, return_exceptions=True)
        for outcome in (prep, rows):
            if isinstance(outcome, BaseException):
                raise outcome
        prep.grammars = rows
        return prep

    async def generate(self, prep: Prepared | list[Prepared], is_disconnected: Any = None,
                       announce: bool = False) -> AsyncIterator[tuple[int, Any]]:
        """Yield ``(choice index, Output)`` until every choice has finished: ``n`` per prepared
        prompt (several for a batched /v1/completions), indexed prompt by prompt as vLLM does.
        Each choice is its own sequence in the batch; all are cancelled on exit. ``announce``:
        first yield ``(-1, None)`` once submitted, so a stream can be refused (503) before its
        200 is sent."""
        from kaito_core.runtime.engine import EngineBusy, Sequence
        from kaito_core.runtime.textstream import Detokenizer

        preps = prep if isinstance(prep, list) else [prep]
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        seqs = []
        for p in preps:
            n = p.parsed.n
            for i in range(n):
                params = p.parsed.params
                if n > 1 and params.seed is not None:  # n seeded choices differ, yet the request repeats
                    params = dataclasses.replace(params, seed=params.seed + i)
                detok = Detokenizer(self.loaded.tokenizer, params.skip_special_tokens)
                seqs.append(Sequence(prompt_ids=p.prompt_ids, params=params, max_new_tokens=p.max_new_tokens,
                                     eos_ids=self.loaded.eos_ids, detok=detok,
                                     sink=functools.partial(_tagged, queue, len(seqs)), adapter=p.adapter,
                                     model_id=p.model_id, grammar=p.grammars[i] if p.grammars else None))
        try:
            for seq in seqs:
                self.engine.submit(seq)
        except EngineBusy as exc:
            for seq in seqs:
                seq.cancel()
            raise APIError(503, f"the server is at capacity ({exc}); retry later", type="server_error",
                           code="overloaded", headers={"Retry-After": "1"}) from None
        if self.metrics is not None:
            self.metrics.running.inc()
            self.metrics.adapter_requests.labels(preps[0].adapter or "").inc()
        left = len(seqs)
        last_check = time.monotonic()
        try:
            if announce:
                yield -1, None
            while left:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    item = None
                now = time.monotonic()
                if is_disconnected is not None and (item is None or now - last_check > 0.5):
                    last_check = now
                    if await is_disconnected():
                        log.info("client went away; freeing its slot")
                        return
                if item is None:
                    continue
                index, out = item
                if out.finished:
                    left -= 1
                    if out.error:
                        raise generation_error(out, preps[index // preps[0].parsed.n].parsed.constraint)
                yield index, out
        finally:
            for seq in seqs:
                if seq.finish_reason is None:
                    seq.cancel()
            if self.metrics is not None:
                self.metrics.running.dec()
