"""The static decode turn, with the host's per-token work overlapped with the device's step.

Each engine turn of :class:`~kaito_core.runtime.slots.SlotEngine` with the static step
(:mod:`kaito_core.runtime.graphs`) and every row sampled on the device:

1. **collect** the step launched in the previous turn: read its sampled ids (the one host read per
   token; on CUDA the sync) and advance every row that is still running, unchanged, by one;
2. **launch** the next step for the current rows at once: their inputs are the tokens just read
   (for a row that joined from prefill this turn, its first token). It is queued on the device
   and the host does not wait for it;
3. **deliver** the collected tokens (detokenizing, stop strings, streaming, finishing rows) while
   the device computes step 2. vLLM's async scheduling overlaps the same two things.

A row that ends in 3 was computed once more for nothing: its result is dropped at the next collect,
and the column that step wrote is never read (the row has left; a slot's columns past a request's
position are rewritten before anyone attends to them). Slot moves after a row leaves are queued
behind the step on the same stream, so they copy what it wrote. Turns where a row needs the host
sampler (penalties, top-p, logprobs, grammars, ...) collect and deliver first, then run the
synchronous step; so do turns after the model changed (a LoRA adapter was loaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class InFlight:
    """The step launched last turn: its rows in slot order and the position each was run at."""

    rows: list[Any]
    positions: list[int]


def collect(engine: Any) -> tuple[list[Any], list[Any]]:
    """Read the step in flight, if any; return the rows still running unchanged and their picks
    (each row advanced by one position: its KV column was written by that step)."""
    flight, engine.in_flight = engine.in_flight, None
    if flight is None:
        return [], []
    picks = engine.graphs.collect(len(flight.rows))
    engine.steps += 1
    if engine.metrics is not None:
        engine.metrics.observe_step(len(flight.rows))
    rows, kept = [], []
    for seq, pos, pick in zip(flight.rows, flight.positions, picks):
        if seq.finish_reason is None and not seq.cancelled and seq.pos == pos:
            seq.pos += 1
            rows.append(seq)
            kept.append(pick)
    return rows, kept


def overlapped_turn(engine: Any) -> bool:
    """Collect, launch the next step, deliver. False when the next step cannot be launched ahead
    (the caller delivers nothing more itself: what was collected is delivered here either way,
    and then it runs the synchronous step)."""
    rows, picks = collect(engine)
    live, graphs = engine.rows, engine.graphs
    ahead = (bool(live) and graphs.usable(engine.model, engine.forward_kwargs(live))
             and graphs.all_on_device(live))
    if ahead:
        pending = {id(seq): pick for seq, pick in zip(rows, picks)}
        inputs = []
        for seq in live:
            pick = pending.get(id(seq))
            if pick is None:     # joined from prefill this turn: its first token is delivered
                inputs.append((seq.output_ids[-1], seq.pos, len(seq.output_ids)))
            else:                # its token is read but not delivered yet (a failed row: any id)
                inputs.append((pick.token if pick.token is not None else 0, seq.pos, len(seq.output_ids) + 1))
        graphs.launch(live, inputs)
        engine.in_flight = InFlight(list(live), [seq.pos for seq in live])
        engine.max_batch_seen = max(engine.max_batch_seen, len(live))
    engine._deliver(rows, picks)
    return ahead
