"""Continuous batching over preallocated KV-cache slots, with chunked prefill.

:class:`Engine` keeps the batch's KV cache as transformers' ``DynamicCache``: every decode step
concatenates one column, a request joining re-pads and concatenates the whole cache, and one
leaving re-indexes it. :class:`SlotEngine` instead owns one key and one value buffer per layer,
``[max_batch slots, kv heads, capacity, head dim]``:

- a request gets a slot when admitted; its tokens are written in place at their positions
  (``index_put``), so nothing is concatenated when requests join or leave. Rows in the decode
  batch occupy slots ``0..n-1``, so attention reads a view ``[:n, :, :length]``; a request that
  leaves is replaced by the last row (one slot copied, not the whole cache);
- prompts are prefilled in chunks of at most ``chunk_tokens`` tokens per engine turn,
  interleaved with decode steps, so a long prompt delays running streams by one chunk's forward
  pass at most, never by its whole prefill (vLLM's chunked prefill, in two passes per turn);
- the attention mask is built here as a 4D mask (transformers uses a 4D mask as given), so each
  row sees exactly its own positions: outputs do not depend on who else is in the batch;
- the buffers grow by doubling up to the context (one copy per doubling), not per token; with
  the static decode step they are allocated for the whole context at once and never move.

Decode, two ways (``cuda_graphs`` / ``$KAITO_CUDA_GRAPHS``: auto = static on CUDA, dynamic on CPU):

- dynamic (the CPU default): an eager forward over exactly the live rows and the longest row's
  length; the host builds ids, positions, slot and column indices and the mask as new tensors,
  and sampling reads back the bad-row flags with the argmax (one ``tolist``) plus whatever a
  request's own parameters need;
- static (:mod:`kaito_core.runtime.graphs`): the step is padded to a batch bucket (1, 2, 4, ...
  ``max_batch``) and a KV-length bucket (powers of two from ``graph_min_len``, then the whole
  buffer); it reads only preallocated buffers (inputs copied from pinned host memory with
  ``non_blocking=True``), builds the mask on the device, samples greedy and plain-temperature
  rows on the device, and the host reads back one tensor per token: the sampled ids. The next
  step is launched before the tokens just read are delivered, so the host's per-token work runs
  while the device computes (:mod:`kaito_core.runtime.overlap`). On CUDA every bucket's greedy
  step is captured as a CUDA graph when the engine starts and replayed after; the temperature
  variant is captured on first use. On CPU (``on``) the same step runs eagerly.

What stays on the host or eager: prefill (chunks have varying shapes; vLLM's original engine
captured decode batches only, too); rows with penalties, logit bias, top-k/top-p/min-p, a seed,
logprobs or a JSON grammar (the static step's logits go to the host sampler, one extra read).
Once a LoRA adapter is loaded, the engine's model is a PeftModel, whose mixed-adapter forward
picks rows on the host: decode steps then run the dynamic path.

Verified on CPU only: the static step's equality with the dynamic path and ``generate``, what it
reads, and that its op trace is a pure function of its bucket (tests/runtime/test_graphs.py);
``torch.cuda.graph`` capture and replay themselves have not been run on a GPU yet.

Supported when the model uses SDPA or eager attention, no ALiBi and no sliding window shorter
than the context (Llama, Phi-3, Mistral, Qwen, Falcon with rotary embeddings); others keep
:class:`Engine`.
"""

from __future__ import annotations

from typing import Any

import torch

from kaito_core.runtime.engine import Engine, Sequence


def supports_slots(model: Any, context_length: int) -> str | None:
    """None when :class:`SlotEngine` can run ``model``; else why not."""
    config = getattr(model, "config", None)
    if config is None:
        return "the model has no config"
    impl = getattr(config, "_attn_implementation", None)
    if impl not in ("sdpa", "eager"):
        return f"attention implementation {impl!r} (needs sdpa or eager, which take a 4D mask)"
    if getattr(config, "alibi", False):
        return "ALiBi position biases"
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and window < context_length:
        return f"a sliding window ({window}) shorter than the context ({context_length})"
    return None


class SlotStore:
    """The per-layer key/value buffers and where the current forward pass writes."""

    def __init__(self, slots: int, max_len: int, initial: int = 256):
        self.slots, self.max_len = slots, max_len
        self.capacity = min(initial, max_len) + 1        # the last column is a scratch column
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.slot_index: torch.Tensor | None = None      # [rows, q] slot of each input token
        self.write_index: torch.Tensor | None = None     # [rows, q] column of each input token
        self.static_cols: torch.Tensor | None = None     # [B, 1]: the static decode step's columns
        self.view = (0, 0, 0)                            # start slot, rows, length to attend over

    def release(self, initial: int = 256) -> None:
        """Drop the buffers; they are allocated again (``initial`` columns) by the next write."""
        self.keys.clear()
        self.values.clear()
        self.capacity = min(initial, self.max_len) + 1

    @property
    def scratch(self) -> int:
        return self.capacity - 1

    def ensure(self, length: int) -> None:
        """Room for ``length`` columns (plus the scratch column); grows by doubling."""
        if length < self.capacity:
            return
        new = min(max(self.capacity * 2, length + 1), self.max_len + 1)
        if new <= length:
            raise RuntimeError(f"KV cache: {length} tokens do not fit the context ({self.max_len})")
        for store in (self.keys, self.values):
            for layer, old in store.items():
                grown = old.new_zeros((old.shape[0], old.shape[1], new, old.shape[3]))
                grown[:, :, :self.scratch].copy_(old[:, :, :self.scratch])
                store[layer] = grown
        self.capacity = new

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this pass's keys/values ([rows, heads, q, dim]) and return what attention reads."""
        if layer not in self.keys:
            shape = (self.slots, key.shape[1], self.capacity, key.shape[3])
            self.keys[layer] = key.new_zeros(shape)
            self.values[layer] = value.new_zeros(shape)
        k, v = self.keys[layer], self.values[layer]
        start, rows, length = self.view
        if self.static_cols is not None:
            # the static decode step (graphs.py): row r is slot r, one column each; scatter_ takes
            # its indices from a device tensor, so the write can be captured in a CUDA graph
            index = self.static_cols[:, None, :, None].expand(-1, key.shape[1], -1, key.shape[3])
            k[:rows].scatter_(2, index, key)
            v[:rows].scatter_(2, index, value)
            return k[:rows, :, :length], v[:rows, :, :length]
        # advanced indices around a slice: the indexed result is [rows, q, heads, dim]
        k[self.slot_index, :, self.write_index] = key.transpose(1, 2)
        v[self.slot_index, :, self.write_index] = value.transpose(1, 2)
        return k[start:start + rows, :, :length], v[start:start + rows, :, :length]

    def move(self, src: int, dst: int) -> None:
        for store in (self.keys, self.values):
            for t in store.values():
                t[dst].copy_(t[src])

    def swap(self, a: int, b: int) -> None:
        for store in (self.keys, self.values):
            for t in store.values():
                tmp = t[a].clone()
                t[a].copy_(t[b])
                t[b].copy_(tmp)


def _slot_cache(store: SlotStore, layers: int) -> Any:
    """A transformers ``Cache`` whose layers write into ``store`` (the model calls
    ``cache.update(key, value, layer_idx)`` and attends over what it returns)."""
    from transformers.cache_utils import Cache, DynamicLayer

    class SlotLayer(DynamicLayer):
        def __init__(self, index: int):
            super().__init__()
            self.index, self.is_initialized = index, True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return store.write(self.index, key_states, value_states)

        def get_seq_length(self) -> int:  # positions are always passed explicitly
            return 0

    return Cache(layers=[SlotLayer(i) for i in range(layers)])


class SlotEngine(Engine):
    """:class:`Engine` with preallocated KV-cache slots and chunked prefill."""

    def __init__(self, model: Any, *, chunk_tokens: int = 512, cuda_graphs: str | None = None,
                 graph_min_len: int = 64, **kwargs: Any):
        """``cuda_graphs``: auto | on | off (None: ``$KAITO_CUDA_GRAPHS``, else auto), see
        :func:`~kaito_core.runtime.graphs.static_decode_wanted`; ``graph_min_len``: the smallest
        KV-length bucket of the static decode step."""
        from kaito_core.runtime.graphs import DecodeGraphs, static_decode_wanted

        super().__init__(model, **kwargs)
        self.max_prefill_tokens = 1 << 62      # admission is not limited by prompt size: chunks are
        self.chunk_tokens = max(1, chunk_tokens)
        self.prefilling: list[Sequence] = []   # in slots len(rows) .. len(rows) + len(prefilling) - 1
        static = static_decode_wanted(cuda_graphs, self.device)
        # the static step's buffers must not move: preallocate the whole context up front
        self.store = SlotStore(self.max_batch, self.context_length,
                               initial=self.context_length if static else 256)
        layers = getattr(model.config, "num_hidden_layers", None) or model.config.num_layers
        self.slot_cache = _slot_cache(self.store, layers)
        impl = model.config._attn_implementation
        self.mask_dtype = None if impl == "sdpa" else next(model.parameters()).dtype  # eager: additive
        self.prefill_chunks = 0
        self.in_flight: Any = None             # overlap.InFlight: the static step launched last turn
        self.graphs = DecodeGraphs(model, self.store, self.slot_cache, max_batch=self.max_batch,
                                   mask_dtype=self.mask_dtype, min_len=graph_min_len) if static else None
        if self.graphs is not None and self.graphs.capture:
            # the first thing the engine thread does: capture before serving (see graphs.py)
            from concurrent.futures import Future

            self.commands.append((self._capture_graphs, Future()))

    def _capture_graphs(self) -> None:
        from kaito_core.runtime.graphs import prepare

        prepare(self)

    def running(self) -> int:
        return len(self.rows) + len(self.prefilling)

    def _busy(self) -> bool:
        return bool(self.rows or self.prefilling)

    def kv_usage(self) -> float:
        capacity = self.max_batch * max(self.context_length, 1)
        return min(1.0, sum(s.pos for s in [*self.rows, *self.prefilling]) / capacity)

    # -- one turn: a prefill chunk, then a decode step ------------------------------------

    def _step(self, admitted: list[Sequence]) -> None:
        for seq in admitted:
            seq.slot, seq.pos = len(self.rows) + len(self.prefilling), 0
            self.prefilling.append(seq)
        self._drop_cancelled_prefills()
        if self.prefilling:
            self._prefill_chunk()
            self._flush()  # first tokens out now, not after the next decode step
        if self.rows or self.in_flight is not None:
            self._decode()

    def _mask(self, limit: torch.Tensor, length: int) -> torch.Tensor:
        """[rows, 1, q, length]: query (r, j) sees columns 0..limit[r, j]."""
        allowed = torch.arange(length, device=self.device)[None, None, :] <= limit[:, :, None]
        allowed = allowed[:, None]
        if self.mask_dtype is None:
            return allowed
        zero = torch.zeros((), dtype=self.mask_dtype, device=self.device)
        return torch.where(allowed, zero, torch.finfo(self.mask_dtype).min)

    def _run_pass(self, rows: list[Sequence], ids: torch.Tensor, cols: torch.Tensor, limit: torch.Tensor,
                  length: int, **kw: Any) -> Any:
        store = self.store
        store.ensure(length)
        cols = torch.where(cols < 0, torch.full_like(cols, store.scratch), cols)  # padding -> scratch
        slots = torch.tensor([s.slot for s in rows], dtype=torch.long)[:, None].expand_as(cols)
        store.slot_index, store.write_index = slots.to(self.device), cols.to(self.device)
        store.view = (rows[0].slot, len(rows), length)
        return self._forward(rows, input_ids=ids.to(self.device), position_ids=limit.clamp(min=0).to(self.device),
                             attention_mask=self._mask(limit.clamp(min=0).to(self.device), length),
                             cache=self.slot_cache, **kw)

    def _prefill_chunk(self) -> None:
        budget, batch = self.chunk_tokens, []
        for seq in self.prefilling:        # a prefix of the list: a contiguous range of slots
            if budget <= 0:
                break
            take = min(len(seq.prompt_ids) - seq.pos, budget)
            batch.append((seq, take))
            budget -= take
        width = max(take for _, take in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        cols = torch.full((len(batch), width), -1, dtype=torch.long)  # left padding writes to scratch
        for b, (seq, take) in enumerate(batch):
            ids[b, width - take:] = torch.tensor(seq.prompt_ids[seq.pos:seq.pos + take])
            cols[b, width - take:] = torch.arange(seq.pos, seq.pos + take)
        length = max(seq.pos + take for seq, take in batch)
        out = self._run_pass([s for s, _ in batch], ids, cols, cols.clone(), length, logits_to_keep=1)
        self.prefill_chunks += 1
        done = []
        for b, (seq, take) in enumerate(batch):
            seq.pos += take
            if seq.pos == len(seq.prompt_ids):
                done.append(b)
        if done:
            rows = [batch[b][0] for b in done]
            self._after_step(rows, out.logits[done, -1, :])
            for seq in rows:
                self._promote(seq)

    def _promote(self, seq: Sequence) -> None:
        """A prefilled sequence joins the decode rows: swap it into the first prefill slot."""
        first = len(self.rows)
        if seq.slot != first:
            other = self.prefilling[0]
            self.store.swap(seq.slot, first)
            i = self.prefilling.index(seq)
            self.prefilling[0], self.prefilling[i] = seq, other
            other.slot, seq.slot = seq.slot, first
        self.prefilling.pop(0)
        self.rows.append(seq)

    def _decode(self) -> None:
        self._drop_finished()
        if self.graphs is not None:
            from kaito_core.runtime.overlap import overlapped_turn

            ahead = overlapped_turn(self)    # the next step runs on the device while this delivers
            self._drop_finished()
            if ahead:
                return
        if not self.rows:
            return
        rows = self.rows
        picks = None
        if self.graphs is not None and self.graphs.usable(self.model, self.forward_kwargs(rows)):
            picks, logits = self.graphs.decode(rows)
        else:
            ids = torch.tensor([[s.output_ids[-1]] for s in rows], dtype=torch.long)
            pos = torch.tensor([[s.pos] for s in rows], dtype=torch.long)
            logits = self._run_pass(rows, ids, pos, pos, max(s.pos for s in rows) + 1).logits[:, -1, :]
        for s in rows:
            s.pos += 1
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(rows))
        if self.metrics is not None:
            self.metrics.observe_step(len(rows))
        if picks is None:
            self._after_step(rows, logits)
        else:
            self._deliver(rows, picks)
        self._drop_finished()

    def _deliver(self, rows: list[Sequence], picks: list[Any]) -> None:
        """What :meth:`Engine._after_step` does after sampling, for picks made on the device."""
        import time

        from kaito_core.runtime.engine import Output, log

        now = time.monotonic()
        for seq, pick in zip(rows, picks):
            if seq.cancelled or seq.finish_reason is not None:
                continue
            if pick.error is not None:  # this request alone ends; the rest of the batch goes on
                log.warning("request failed alone: %s", pick.error)
                self._finish(seq, Output(finished=True, finish_reason="error", error=pick.error,
                                         completion_tokens=len(seq.output_ids)), "error")
                continue
            self._token(seq, pick, now)

    # -- leaving ------------------------------------------------------------------------

    def _drop_finished(self) -> None:
        from kaito_core.runtime.engine import Output

        for s in self.rows:
            if s.cancelled and s.finish_reason is None:
                self._finish(s, Output(finished=True, finish_reason="abort", completion_tokens=len(s.output_ids)),
                             "abort")
        i = 0
        while i < len(self.rows):
            if self.rows[i].finish_reason is None:
                i += 1
                continue
            self._remove_row(i)

    def _remove_row(self, i: int) -> None:
        """Fill row ``i``'s slot with the last decode row, and the freed boundary slot with the
        last prefilling sequence, so both regions stay contiguous (two slot copies at most)."""
        last = len(self.rows) - 1
        if i != last:
            self.store.move(last, i)
            self.rows[i] = self.rows[last]
            self.rows[i].slot = i
        self.rows.pop()
        if self.prefilling:
            tail = self.prefilling.pop()
            if tail.slot != last:
                self.store.move(tail.slot, last)
            tail.slot = last
            self.prefilling.insert(0, tail)

    def _drop_cancelled_prefills(self) -> None:
        from kaito_core.runtime.engine import Output

        for seq in [s for s in self.prefilling if s.cancelled]:
            self._finish(seq, Output(finished=True, finish_reason="abort"), "abort")
            i = self.prefilling.index(seq)
            tail = self.prefilling.pop()
            if tail is not seq:
                self.store.move(tail.slot, seq.slot)
                tail.slot = seq.slot
                self.prefilling[i] = tail

    def _fail_all(self, message: str, extra: list[Sequence] = ()) -> None:
        super()._fail_all(message, [*self.prefilling, *extra])
        self.prefilling, self.in_flight = [], None
