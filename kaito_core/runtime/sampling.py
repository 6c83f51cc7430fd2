"""Choose each sequence's next token from a batch of logits, honouring its own parameters.

Rows are processed together where they share the cheap path (greedy -> one argmax; plain
sampling without a seed -> one multinomial) and one by one only for what is per-request by
nature: penalties over the request's own tokens, top-k/top-p/min-p filters, a seeded generator.
Penalties follow the usual definitions: ``repetition_penalty`` as in transformers (CTRL paper,
over prompt and output), ``presence``/``frequency`` as in OpenAI's API (over the output only).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

from kaito_core.runtime.protocol import SamplingParams


class Row(Protocol):
    params: SamplingParams
    prompt_ids: list[int]
    output_ids: list[int]
    generator: torch.Generator | None
    eos_ids: frozenset[int]


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


def sample(logits: torch.Tensor, rows: Sequence[Row]) -> list[int]:
    """Next token id for each row of ``logits`` ([batch, vocab])."""
    logits = logits.float()
    for i, row in enumerate(rows):
        if _needs_processing(row):
            _process_row(logits[i], row)
    out: list[int | None] = [None] * len(rows)
    greedy = [i for i, r in enumerate(rows) if r.params.greedy]
    if greedy:
        picks = logits[greedy].argmax(-1).tolist()
        for i, t in zip(greedy, picks):
            out[i] = t
    plain = [i for i, r in enumerate(rows) if out[i] is None and r.generator is None
             and not (r.params.top_k or r.params.top_p < 1.0 or r.params.min_p > 0.0)]
    if plain:
        temps = torch.tensor([rows[i].params.temperature for i in plain], dtype=logits.dtype,
                             device=logits.device).unsqueeze(-1)
        probs = torch.softmax(logits[plain] / temps, dim=-1)
        picks = torch.multinomial(probs, 1).squeeze(-1).tolist()
        for i, t in zip(plain, picks):
            out[i] = t
    for i, row in enumerate(rows):
        if out[i] is None:
            probs = torch.softmax(_filter_row(logits[i], row.params), dim=-1)
            if row.generator is not None:
                probs = probs.cpu()  # seeded generators live on the CPU
            out[i] = int(torch.multinomial(probs, 1, generator=row.generator).item())
    return [int(t) for t in out]  # type: ignore[arg-type]


def make_generator(seed: int | None, device: Any = "cpu") -> torch.Generator | None:
    if seed is None:
        return None
    g = torch.Generator(device="cpu")
    g.manual_seed(seed % (2**63))
    return g
