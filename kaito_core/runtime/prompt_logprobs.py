"""Log-probabilities of a prompt's own tokens, for ``echo`` + ``logprobs`` on /v1/completions.

Evaluation harnesses score a continuation this way (lm-evaluation-harness's loglikelihood
requests send the context + continuation with ``echo: true, logprobs: 1`` and read the
continuation's part of ``token_logprobs``), so the echoed prompt must carry its logprobs as vLLM
returns them: the first token's is ``null``, every other token's is the raw log-softmax of the
logits at the position before it, with its ``top_logprobs``.

The engine's prefill keeps only the last position's logits, so this is a pass of its own over
the prompt, on the engine thread between two steps, in chunks (a 4k-token prompt over a 128k
vocabulary would need 2 GB of logits at once).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import torch

CHUNK = 512


def prompt_logprobs(model: Any, forward_kwargs: Callable[[list[Any]], dict[str, Any]], ids: list[int], k: int,
                    adapter: str | None = None) -> list[tuple[int, float | None, list[tuple[int, float]] | None]]:
    """``(token, logprob, top k)`` for every prompt token; engine thread only."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    out: list[tuple[int, float | None, list[tuple[int, float]] | None]] = [(ids[0], None, None)]
    cache = DynamicCache()
    row = SimpleNamespace(adapter=adapter)  # what forward_kwargs reads (the adapter to use)
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, CHUNK):
            end = min(start + CHUNK, len(ids) - 1)   # positions start..end-1 predict tokens start+1..end
            logits = model(input_ids=torch.tensor([ids[start:end]], device=device),
                           position_ids=torch.arange(start, end, device=device)[None], cache=cache,
                           use_cache=True, **forward_kwargs([row])).logits[0]
            lp = torch.log_softmax(logits.float(), dim=-1)
            targets = torch.tensor(ids[start + 1:end + 1], device=device)
            chosen = lp.gather(1, targets[:, None]).squeeze(1).tolist()
            top_v, top_i = lp.topk(k, dim=-1) if k else (None, None)
            top_v = top_v.tolist() if top_v is not None else None
            top_i = top_i.tolist() if top_i is not None else None
            for j, tok in enumerate(ids[start + 1:end + 1]):
                top = list(zip(top_i[j], top_v[j])) if k else []
                out.append((tok, chosen[j], top))
    return out
