"""Log-probabilities of a prompt's own tokens, for ``echo`` + ``logprobs`` on /v1/completions and
vLLM's ``prompt_logprobs``.

Evaluation harnesses score a continuation this way (lm-evaluation-harness's loglikelihood
requests send the context + continuation with ``echo: true, logprobs: 1`` and read the
continuation's part of ``token_logprobs``), so the echoed prompt must carry its logprobs as vLLM
returns them: the first token's is ``null``, every other token's is the raw log-softmax of the
logits at the position before it, with its ``top_logprobs``.

The engine's prefill keeps only the last position's logits, so this is a pass of its own over
the prompt, on the engine thread, one chunk of :data:`CHUNK` tokens per engine command: decode
steps of running requests go on between chunks (as chunked prefill lets them), and a 4k-token
prompt over a 128k vocabulary never needs 2 GB of logits at once.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

CHUNK = 512

Entry = tuple[int, "float | None", "list[tuple[int, float]] | None"]


class PromptScorer:
    """Scores ``ids`` chunk by chunk: call :meth:`step` (engine thread) until :attr:`done`."""

    def __init__(self, engine: Any, ids: list[int], k: int, adapter: str | None = None):
        from transformers import DynamicCache

        # the engine, not its model: loading the first adapter swaps engine.model for a PeftModel
        # between two chunks, and each chunk must run what the engine runs
        self.engine, self.ids, self.k = engine, ids, k
        self.row = SimpleNamespace(adapter=adapter)   # what forward_kwargs reads (the adapter to use)
        self.cache = DynamicCache()
        self.start = 0
        self.entries: list[Entry] = [(ids[0], None, None)]
        self.ranks: list[int | None] = [None]          # each prompt token's rank (1: the most likely)

    @property
    def done(self) -> bool:
        return self.start >= len(self.ids) - 1

    def step(self) -> None:
        start, end = self.start, min(self.start + CHUNK, len(self.ids) - 1)  # predicting tokens start+1..end
        model, device = self.engine.model, self.engine.device
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([self.ids[start:end]], device=device),
                           position_ids=torch.arange(start, end, device=device)[None], cache=self.cache,
                           use_cache=True, **self.engine.forward_kwargs([self.row])).logits[0]
            lp = torch.log_softmax(logits.float(), dim=-1)
            targets = self.ids[start + 1:end + 1]
            chosen_t = lp.gather(1, torch.tensor(targets, device=device)[:, None])
            self.ranks += ((lp > chosen_t).sum(-1) + 1).tolist()
            chosen = chosen_t.squeeze(1).tolist()
            top_v, top_i = lp.topk(self.k, dim=-1) if self.k else (None, None)
            top = list(zip(top_i.tolist(), top_v.tolist())) if self.k else None
        for j, tok in enumerate(targets):
            self.entries.append((tok, chosen[j], list(zip(*top[j])) if top else []))
        self.start = end


async def score_prompt(engine: Any, ids: list[int], k: int, adapter: str | None = None) -> PromptScorer:
    """Score ``ids`` one chunk per engine command (running requests decode between chunks)."""
    scorer = PromptScorer(engine, ids, k, adapter)
    while not scorer.done:
        await engine.acall(scorer.step)
    return scorer

