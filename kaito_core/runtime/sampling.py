"""Choose each sequence's next token from a batch of logits, honouring its own parameters.

Rows are processed together where they share the cheap path (greedy -> one argmax; plain
sampling without a seed -> one multinomial) and one by one only for what is per-request by
nature: penalties over the request's own tokens, top-k/top-p/min-p filters, a seeded generator.
Penalties follow the usual definitions: ``repetition_penalty`` as in transformers (CTRL paper,
over prompt and output), ``presence``/``frequency`` as in OpenAI's API (over the output only).

One row can never fail the others: a row whose processed logits are not finite (a penalty of
1e-300 overflows) or whose sampling raises gets a :class:`Pick` with ``error`` set, and the
engine finishes that request alone (vLLM isolates requests the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from kaito_core.runtime.protocol import SamplingParams


class Row(Protocol):
    params: SamplingParams
    prompt_ids: list[int]
    output_ids: list[int]
    generator: torch.Generator | None
    eos_ids: frozenset[int]


@dataclass
class Pick:
    """One row's outcome: the token, or why there is none; log-probabilities when asked for."""

    token: int | None = None
    error: str | None = None
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None


def _needs_processing(row: Row) -> bool:
    p = row.params
    return (p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0
            or bool(p.logit_bias) or len(row.output_ids) < p.min_tokens or p.ignore_eos)


def _process_row(logits: torch.Tensor, row: Row) -> None:
    """In place: bias, penalties, and banning end tokens while min_tokens is not reached."""
    p = row.params
    vocab = logits.shape[-1]
    if p.logit_bias:
        keys = [t for t in p.logit_bias if t < vocab]
        ids = torch.tensor(keys, dtype=torch.long, device=logits.device)
        if ids.numel():
            vals = torch.tensor([p.logit_bias[t] for t in keys], dtype=logits.dtype, device=logits.device)
            logits.index_add_(0, ids, vals)
    if p.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(row.prompt_ids) | set(row.output_ids)), dtype=torch.long,
                            device=logits.device)
        if seen.numel():
            seen = seen[seen < vocab]
            vals = logits.index_select(0, seen)
            vals = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
            logits.index_copy_(0, seen, vals)
    if (p.presence_penalty or p.frequency_penalty) and row.output_ids:
        out = torch.tensor(row.output_ids, dtype=torch.long, device=logits.device)
        out = out[out < vocab]
        counts = torch.bincount(out, minlength=vocab).to(logits.dtype)
        logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
    if p.ignore_eos or len(row.output_ids) < p.min_tokens:
        ends = set(row.eos_ids) if p.ignore_eos else set()
        if len(row.output_ids) < p.min_tokens:
            ends |= set(row.eos_ids) | set(p.stop_token_ids)
        banned = [t for t in ends if t < vocab]
        if banned:
            logits[banned] = -float("inf")


def _filter_row(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p, on one row of logits (1-D)."""
    logits = logits / p.temperature
    if p.top_k and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if p.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop tokens once the mass before them already reaches top_p (keep at least one)
        drop = (probs.cumsum(-1) - probs) >= p.top_p
        drop[0] = False
        logits = logits.index_fill(0, idx[drop], -float("inf"))
    if p.min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < p.min_p * probs.max(), -float("inf"))
    return logits


def _bad_and_argmax(logits: torch.Tensor) -> tuple[list[int], list[int]]:
    """Rows that cannot be sampled (NaN or +inf anywhere, or every token banned) and each row's
    argmax, fetched to the host together."""
    bad = torch.isnan(logits).any(-1) | torch.isposinf(logits).any(-1) | torch.isneginf(logits).all(-1)
    both = torch.stack([bad.long(), logits.argmax(-1)]).tolist()
    return [i for i, b in enumerate(both[0]) if b], both[1]


def _logprobs(raw: torch.Tensor, rows: Sequence[Row], picks: list[Pick]) -> None:
    """vLLM's default ``raw_logprobs``: log-softmax of the model's own logits, before penalties
    and temperature; the sampled token's and the ``top_logprobs`` most likely ones."""
    want = [i for i, r in enumerate(rows) if r.params.logprobs is not None and picks[i].token is not None]
    if not want:
        return
    lp = torch.log_softmax(raw[want].float(), dim=-1)
    k = max(rows[i].params.logprobs or 0 for i in want)
    chosen = lp.gather(1, torch.tensor([[picks[i].token] for i in want], device=lp.device)).squeeze(1).tolist()
    top_v, top_i = (lp.topk(k, dim=-1) if k else (None, None))
    top_v = top_v.tolist() if top_v is not None else None
    top_i = top_i.tolist() if top_i is not None else None
    for j, i in enumerate(want):
        picks[i].logprob = chosen[j]
        n = rows[i].params.logprobs or 0
        picks[i].top = [(top_i[j][m], top_v[j][m]) for m in range(n)] if n else []


def sample(logits: torch.Tensor, rows: Sequence[Row]) -> list[Pick]:
    """One :class:`Pick` per row of ``logits`` ([batch, vocab]); a failing row fails alone."""
    raw = logits
    logits = logits.float()
    if logits is raw:
        logits = logits.clone()  # processing is in place; logprobs read the model's own values
    picks = [Pick() for _ in rows]
    for i, row in enumerate(rows):
        if _needs_processing(row):
            try:
                _process_row(logits[i], row)
            except Exception as exc:  # noqa: BLE001 - this row's parameters, not the batch's fault
                picks[i].error = f"sampling failed: {type(exc).__name__}: {exc}"
    # One device->host copy for the common case: which rows are unusable, and every row's argmax
    # (what greedy rows pick); no other sync per token when every row is greedy.
    bad_rows, argmax = _bad_and_argmax(logits)
    for i in bad_rows:
        if picks[i].error is None:
            picks[i].error = ("sampling failed: the penalties and biases of this request leave no finite "
                              "probability to sample from; use values closer to their defaults")
    ok = [i for i, p in enumerate(picks) if p.error is None]
    for i in ok:
        if rows[i].params.greedy:
            picks[i].token = argmax[i]
    plain = [i for i in ok if picks[i].token is None and rows[i].generator is None
             and not (rows[i].params.top_k or rows[i].params.top_p < 1.0 or rows[i].params.min_p > 0.0)]
    if plain:
        temps = torch.tensor([rows[i].params.temperature for i in plain], dtype=logits.dtype,
                             device=logits.device).unsqueeze(-1)
        probs = torch.softmax(logits[plain] / temps, dim=-1)
        finite = torch.isfinite(probs).all(-1).tolist()
        if all(finite):
            for i, t in zip(plain, torch.multinomial(probs, 1).squeeze(-1).tolist()):
                picks[i].token = t
        # else: leave them to the row-by-row path below, which isolates the failing one
    for i in ok:
        if picks[i].token is None:
            picks[i].token, picks[i].error = _sample_one(logits[i], rows[i])
    _logprobs(raw, rows, picks)
    return picks


def _sample_one(logits: torch.Tensor, row: Row) -> tuple[int | None, str | None]:
    try:
        probs = torch.softmax(_filter_row(logits, row.params), dim=-1)
        if not bool(torch.isfinite(probs).all()):
            return None, "sampling failed: the probabilities are not finite (temperature or penalties too extreme)"
        if row.generator is not None:
            probs = probs.cpu()  # seeded generators live on the CPU
        return int(torch.multinomial(probs, 1, generator=row.generator).item()), None
    except Exception as exc:  # noqa: BLE001 - this row only
        return None, f"sampling failed: {type(exc).__name__}: {exc}"


def make_generator(seed: int | None, device: Any = "cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device="cpu")
    g.manual_seed(seed % (2**63))
    return g
