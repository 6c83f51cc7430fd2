"""The decode step with static shapes, replayed as CUDA graphs per (batch, length) bucket.

:class:`~kaito_core.runtime.slots.SlotEngine` decodes one token for ``n`` rows per step. Here that
step is padded to a bucket ``B`` (1, 2, 4, ... ``max_batch``) of rows and a bucket ``L`` (powers of
two from ``min_len``, then the whole KV buffer) of cache columns, and it reads and writes only
tensors allocated once:

- inputs: one int64 buffer ``[3 + E, max_batch]`` (input ids, positions, write columns, ``E``
  banned token ids per row) and one float32 buffer of temperatures, filled on the host in pinned
  memory and copied with ``non_blocking=True`` (on CPU the host buffer *is* the device buffer);
- the KV buffers of the :class:`~kaito_core.runtime.slots.SlotStore`, preallocated for the whole
  context so they never move (no doubling while graphs exist);
- outputs: the last-position logits ``[max_batch, vocab]`` and the sampled ids ``[max_batch]``.

The 4D attention mask is built inside the step from the positions (column ``c`` is visible to a row
at position ``p`` when ``c <= p``). Padding rows (``n <= r < B``) sit in spare slots, write their
key/value to the scratch column (never visible to anyone) and attend to column 0 only, so a live
row's output does not depend on them.

Sampling runs on the device for greedy rows and for plain temperature sampling (vLLM's
``random_sample``: ``argmax(probs / Exponential(1))``), with ``ignore_eos``/``min_tokens`` bans, so the
host reads back exactly one tensor per token: the sampled ids (``-1`` marks a row whose logits
cannot be sampled, which then fails alone, as in :func:`~kaito_core.runtime.sampling.sample`).
Rows that need more (penalties, logit bias, top-k/p, min-p, seeds, logprobs, JSON grammars) are
sampled on the host from the static logits by the engine's usual path.

On CUDA the greedy step of every (B, L) bucket is captured when the engine starts (:meth:`warm_up`,
with padding rows only, before the first request is served; vLLM also captures at start-up), and the
temperature-sampling variant of a bucket lazily, the first time a step needs it. A capture is two
eager warm-up runs on a side stream, then ``torch.cuda.graph`` into one memory pool shared by every
graph (outputs are copied into the static buffers above, so no graph's pool memory has to outlive
its replay); later steps replay it. Elsewhere, or with capture off, the same step runs eagerly on
the same buffers, which is what the CPU tests exercise. A capture that fails is logged once and the
step stays eager. While the engine's model is another object (a PeftModel, once a LoRA adapter
is loaded) or a step passes adapter names, decode takes the dynamic path; graphs captured before
are dropped. :meth:`DecodeGraphs.launch` only queues a step and :meth:`DecodeGraphs.collect`
reads its ids, so the engine can deliver one step's tokens while the next runs (overlap.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from kaito_core.runtime.options import CUDA_GRAPHS as MODES
from kaito_core.runtime.options import OptionsError
from kaito_core.runtime.sampling import Pick

log = logging.getLogger("kaito.runtime.graphs")

ENV = "KAITO_CUDA_GRAPHS"
MAX_BANNED = 8          # end tokens banned per row on the device (ignore_eos / min_tokens)
BAD_ROW = ("sampling failed: the penalties and biases of this request leave no finite "
           "probability to sample from; use values closer to their defaults")


def static_decode_wanted(mode: str | None, device: torch.device) -> bool:
    """Resolve ``--cuda-graphs`` (or ``$KAITO_CUDA_GRAPHS``): auto = on for CUDA, off elsewhere;
    on = the static step everywhere (captured on CUDA, eager on CPU)."""
    value = mode if mode is not None else os.environ.get(ENV, "auto")
    value = str(value).strip().lower()
    if value not in MODES:
        source = "--cuda-graphs" if mode is not None else f"${ENV}"
        raise OptionsError(f"{source} is {value!r}, expected one of {list(MODES)} "
                           "(auto: CUDA graphs on GPUs, the eager dynamic decode on CPUs)")
    return value == "on" or (value == "auto" and device.type == "cuda")


def buckets(limit: int, floor: int = 1) -> list[int]:
    """Powers of two from ``floor`` below ``limit``, then ``limit`` itself."""
    sizes, size = [], max(1, floor)
    while size < limit:
        sizes.append(size)
        size *= 2
    return [*sizes, limit]


def bucket(n: int, sizes: list[int]) -> int:
    for size in sizes:
        if size >= n:
            return size
    raise ValueError(f"{n} exceeds the largest bucket ({sizes[-1]})")


def banned_ids(row: Any, vocab: int, produced: int | None = None) -> list[int]:
    """Tokens :func:`~kaito_core.runtime.sampling.sample` would set to -inf for this row, once it
    has ``produced`` tokens (default: its output so far)."""
    p = row.params
    ends = set(row.eos_ids) if p.ignore_eos else set()
    if (len(row.output_ids) if produced is None else produced) < p.min_tokens:
        ends |= set(row.eos_ids) | set(p.stop_token_ids)
    return sorted(t for t in ends if t < vocab)


def samples_on_device(row: Any, vocab: int) -> bool:
    """Whether this row's next token can be chosen by :func:`sample_on_device`: greedy or plain
    temperature sampling, with at most :data:`MAX_BANNED` banned end tokens and nothing else."""
    p = row.params
    if (row.generator is not None or p.logprobs is not None or getattr(row, "grammar", None) is not None
            or p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
            or p.logit_bias):
        return False
    if len(banned_ids(row, vocab)) > MAX_BANNED:
        return False
    return p.greedy or not (p.top_k or p.top_p < 1.0 or p.min_p > 0.0)


def sample_on_device(logits: torch.Tensor, temperature: torch.Tensor, banned: torch.Tensor,
                     out: torch.Tensor, sampling: bool) -> None:
    """Write each row's token into ``out`` ([B] int64): argmax where ``temperature`` is 0, else a
    draw from ``softmax(logits / temperature)``; ``-1`` where the row cannot be sampled (NaN or +inf
    logits, or everything banned). ``banned`` ([B, E]) holds token ids set to -inf, padded with
    ``vocab`` (nothing banned). Only device ops: no host sync, nothing read back."""
    vocab = logits.shape[-1]
    ban = torch.where(banned < vocab, float("-inf"), 0.0)
    # out of place: ``logits`` is the static output the host sampler may read; adding 0 keeps a value
    x = logits.float().scatter_add(1, banned.clamp(max=vocab - 1), ban)
    # one pass for both: max propagates NaN and +inf, and is -inf only when everything is banned,
    # which are exactly the rows sampling.sample refuses
    top, ids = x.max(-1)
    bad = ~torch.isfinite(top)
    if sampling:
        hot = temperature > 0
        probs = torch.softmax(x / torch.where(hot, temperature, 1.0)[:, None], dim=-1)
        # vLLM's random_sample: the argmax of p / q with q ~ Exponential(1) is a draw from p
        # (the exponential race), with no multinomial and no sync
        drawn = (probs / torch.empty_like(probs).exponential_()).argmax(-1)
        ids = torch.where(hot, drawn, ids)
        bad = bad | (hot & ~torch.isfinite(probs).all(-1))
    out.copy_(torch.where(bad, -1, ids))


class DecodeGraphs:
    """Static buffers, the static step, and its CUDA graphs for one model and one SlotStore."""

    def __init__(self, model: Any, store: Any, cache: Any, *, max_batch: int, mask_dtype: torch.dtype | None,
                 capture: bool | None = None, min_len: int = 64):
        self.model, self.store, self.cache = model, store, cache  # cache: a transformers Cache over store
        self.device = next(model.parameters()).device
        self.capture = (self.device.type == "cuda") if capture is None else capture
        if self.capture and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; the model is on {self.device}")
        self.mask_dtype = mask_dtype
        self.batch_sizes = buckets(max_batch)
        self.lengths = buckets(store.capacity, floor=min_len)
        self.max_batch = max_batch
        self.graphs: dict[tuple[int, int, bool], Any] = {}
        self.pool: Any = None
        self.model_changed = False
        self.kv_ptrs: tuple[int, ...] = ()
        self.captures = self.replays = self.eager_steps = 0
        self.seen: set[tuple[int, int, bool]] = set()  # (B, L, sampling) keys that ran
        self.logits: torch.Tensor | None = None   # [max_batch, vocab], allocated by the first step
        self._alloc()

    def _alloc(self) -> None:
        n, dev, pin = self.max_batch, self.device, self.device.type == "cuda"
        self.host = torch.zeros((3 + MAX_BANNED, n), dtype=torch.long, pin_memory=pin)
        self.host_temp = torch.zeros((n,), dtype=torch.float32, pin_memory=pin)
        self.host_np, self.host_temp_np = self.host.numpy(), self.host_temp.numpy()
        same = dev.type == "cpu"
        self.ints = self.host if same else torch.zeros_like(self.host, device=dev)
        self.temp = self.host_temp if same else torch.zeros_like(self.host_temp, device=dev)
        self.columns = torch.arange(self.store.capacity, device=dev)
        self.ids = torch.zeros((n,), dtype=torch.long, device=dev)
        self.copied = torch.cuda.Event() if pin else None   # the last host -> device copy is done

    # -- when the static step may run ----------------------------------------------------------

    def usable(self, model: Any, forward_kwargs: dict) -> bool:
        """False for another model object (a PeftModel) or per-row adapter arguments; graphs
        captured before a model change are dropped once the original model is back."""
        if model is not self.model:
            self.model_changed = True
            return False
        if self.model_changed:
            self.reset()
        return not forward_kwargs

    def reset(self) -> None:
        self.graphs.clear()
        self.model_changed = False

    # -- one decode step ----------------------------------------------------------------------

    def decode(self, rows: list[Any]) -> tuple[list[Pick] | None, torch.Tensor]:
        """Run the step for ``rows`` (slots ``0..n-1``, each at position ``row.pos``) and wait for
        it. Returns the picks when every row samples on the device (one host read: the ids), else
        ``None`` and the rows' logits for the host sampler."""
        on_device = self.launch(rows)
        if not on_device:
            return None, self.logits[:len(rows)]
        return self.collect(len(rows)), self.logits[:len(rows)]

    def launch(self, rows: list[Any], inputs: list[tuple[int, int, int]] | None = None) -> bool:
        """Start the step for ``rows`` without waiting for it; ``inputs``: each row's (token,
        position, tokens produced), by default its last token at ``row.pos`` and its output so
        far. Returns whether the step samples every row on the device (else only its logits
        are meaningful)."""
        n = len(rows)
        vocab = self._vocab()
        inputs = inputs or [(r.output_ids[-1], r.pos, len(r.output_ids)) for r in rows]
        on_device = self.all_on_device(rows)
        B = bucket(n, self.batch_sizes)
        L = bucket(max(pos for _, pos, _ in inputs) + 1, self.lengths)
        sampling = on_device and any(not r.params.greedy for r in rows)
        self._fill(rows, inputs, B, vocab, on_device)
        self._launch((B, L, sampling))
        return on_device

    def collect(self, n: int) -> list[Pick]:
        """The picks of the last step's first ``n`` rows: the one read per token (a sync on CUDA)."""
        return [Pick(token=t) if t >= 0 else Pick(error=BAD_ROW) for t in self.ids[:n].tolist()]

    def warm_up(self) -> int:
        """Run (capture, on CUDA) the greedy step of every (B, L) bucket with padding rows only:
        they write nothing but scratch columns. Needs the KV buffers (the engine allocates them
        first). Returns how many buckets ran."""
        vocab = self._vocab()
        for B in self.batch_sizes:
            for L in self.lengths:
                self._fill([], [], B, vocab, False)
                self._launch((B, L, False))
        return len(self.batch_sizes) * len(self.lengths)

    def all_on_device(self, rows: list[Any]) -> bool:
        vocab = self._vocab()
        return all(samples_on_device(r, vocab) for r in rows)

    def _vocab(self) -> int:
        if self.logits is not None:
            return self.logits.shape[1]
        head = self.model.get_output_embeddings()
        return int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)

    def _fill(self, rows: list[Any], inputs: list[tuple[int, int, int]], B: int, vocab: int, bans: bool) -> None:
        """Host side: write this step's inputs into the pinned buffers, then one async copy each."""
        if self.copied is not None and not self.copied.query():
            # the previous copy still reads the pinned buffers (back-to-back launches, as in
            # warm_up; in serving, the sampled ids read since then already waited for it)
            self.copied.synchronize()
        n, h, t = len(rows), self.host_np, self.host_temp_np
        pos = [p for _, p, _ in inputs]
        h[0, :n] = [tok for tok, _, _ in inputs]
        h[1, :n] = pos
        h[2, :n] = pos
        h[0:2, n:B] = 0                     # padding rows: token 0 at position 0, sees column 0
        h[2, n:B] = self.store.scratch      # ... and writes to the scratch column of its spare slot
        h[3:, :B] = vocab                   # the dummy column: nothing banned
        t[:B] = 0.0
        for i, r in enumerate(rows):
            if bans:
                banned = banned_ids(r, vocab, inputs[i][2])
                h[3:3 + len(banned), i] = banned
            if not r.params.greedy:
                t[i] = r.params.temperature
        if self.ints is not self.host:
            self.ints.copy_(self.host, non_blocking=True)
            self.temp.copy_(self.host_temp, non_blocking=True)
            self.copied.record()

    def _launch(self, key: tuple[int, int, bool]) -> None:
        self.seen.add(key)
        if not self.capture:
            self._step(*key)
            self.eager_steps += 1
            return
        ptrs = tuple(t.data_ptr() for t in [*self.store.keys.values(), *self.store.values.values()])
        if ptrs != self.kv_ptrs:  # the KV buffers moved (never, when preallocated): re-capture all
            self.graphs.clear()
            self.kv_ptrs = ptrs
        graph = self.graphs.get(key)
        if graph is None:
            graph = self._capture(key)
            if graph is None:
                return  # the capture failed and the step already ran eagerly
        graph.replay()
        self.replays += 1

    def _step(self, B: int, L: int, sampling: bool) -> None:
        """The static step itself: reads the static buffers, writes ``self.logits`` and ``self.ids``."""
        ids, pos, cols = self.ints[0, :B, None], self.ints[1, :B, None], self.ints[2, :B, None]
        allowed = self.columns[None, None, None, :L] <= pos[:, None, :, None]     # [B, 1, 1, L]
        mask = allowed if self.mask_dtype is None else (~allowed).to(self.mask_dtype) * torch.finfo(
            self.mask_dtype).min
        store = self.store
        store.static_cols, store.view = cols, (0, B, L)
        try:
            out = self.model(input_ids=ids, position_ids=pos, attention_mask=mask, cache=self.cache,
                             use_cache=True)
        finally:
            store.static_cols = None
        last = out.logits[:, -1, :]
        if self.logits is None:  # first step (a warm-up run on CUDA): allocate the static output
            self.logits = torch.zeros((self.max_batch, last.shape[-1]), dtype=last.dtype, device=last.device)
        self.logits[:B].copy_(last)
        sample_on_device(self.logits[:B], self.temp[:B], self.ints[3:, :B].t(), self.ids[:B], sampling)

    def _capture(self, key: tuple[int, int, bool]) -> Any:
        """Warm up on a side stream, then capture ``key``'s step into the shared pool."""
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # these runs do the step's real work (the same writes) too
                    self._step(*key)
            torch.cuda.current_stream().wait_stream(side)
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            # thread_local: only this (the engine) thread's unsafe calls invalidate the capture
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                self._step(*key)
        except Exception as exc:  # noqa: BLE001 - keep serving eagerly, say why once
            log.warning("CUDA graph capture failed for batch %d, length %d (%s: %s); decoding eagerly",
                        key[0], key[1], type(exc).__name__, exc)
            self.capture = False
            torch.cuda.synchronize()
            self._step(*key)
            self.eager_steps += 1
            return None
        self.graphs[key] = graph
        self.captures += 1
        log.info("captured the decode step for batch %d, length %d (%d graphs)", key[0], key[1], len(self.graphs))
        return graph


def prepare(engine: Any) -> None:
    """At engine start (on CUDA): allocate the KV buffers (one token written to slot 0's scratch
    column), check that prefill still has room, then capture every bucket's greedy step. On any
    failure (out of memory: every slot's whole context did not fit) the engine goes on with the
    dynamic decode and buffers that grow with the requests."""
    import time

    graphs, store, device = engine.graphs, engine.store, engine.device
    if engine.model is not graphs.model:  # started with an adapter (a PeftModel): dynamic decode only
        engine.graphs = None
        store.release()
        return
    started = time.monotonic()
    store.slot_index = torch.zeros((1, 1), dtype=torch.long, device=device)
    store.write_index = torch.full((1, 1), store.scratch, dtype=torch.long, device=device)
    store.view = (0, 1, 1)
    zero = torch.zeros((1, 1), dtype=torch.long, device=device)
    try:
        engine.model(input_ids=zero, position_ids=zero, attention_mask=engine._mask(zero, 1),
                     cache=engine.slot_cache, use_cache=True)
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            if free < max(1 << 30, total // 20):  # prefill activations need room beyond the KV buffers
                raise MemoryError(f"only {free / 2**30:.1f} GiB of GPU memory left after the KV buffers")
        buckets = graphs.warm_up()
    except Exception:  # noqa: BLE001 - serve without the static step rather than not at all
        log.exception("preparing the static decode step (KV buffers for %d slots x %d tokens) failed; "
                      "decoding eagerly with growing buffers (a smaller --max-batch may fit the static step)",
                      engine.max_batch, engine.context_length)
        engine.graphs = None
        store.release()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return
    log.info("decode step ready for %d (batch, length) buckets in %.1f s (%d CUDA graphs)", buckets,
             time.monotonic() - started, len(graphs.graphs))
