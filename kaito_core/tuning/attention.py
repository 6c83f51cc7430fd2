"""Attention for packed rows at the cost of the samples, not of the row.

A packed row of ``max_length`` tokens holds many short samples. With a 4D block-diagonal mask,
SDPA still computes every query against every key of the row (O(row²)): on CPU the masked
kernel spent ~40% of a packed step on a 1024-token row of ~27-token samples
(bench/tuning_throughput.py, torch.profiler). Flash-attention's varlen kernels avoid that on
GPUs with flash-attn installed; this is the same idea for SDPA, on any device: the collator
describes where each sample lies (:func:`plan`), and :func:`packed_sdpa` gathers the samples of
similar length into a dense batch ``[samples, heads, bucket, head_dim]`` and runs causal SDPA
on it (``is_causal=True``, no mask: the kernel's fast path), then puts every token back in
place. Cost: O(sum of sample²). Nothing a sample computes depends on another one, exactly as
with the mask (tests/tuning/test_packing.py compares logits, loss and gradients).

Samples are right-padded up to their bucket's length by repeating their last token; a real
query at position q only attends keys <= q, so it never sees the padding, and the padded
queries' outputs are dropped. Sliding-window models (Mistral, Phi-3, Qwen2) pass
``sliding_window`` to the attention function; a bucket longer than the window gets an explicit
causal-window mask, as transformers' ``sliding_window_causal_mask`` would.

transformers calls a registered attention function by name (``AttentionInterface``); with no
mask function registered under that name, ``create_causal_mask`` builds no mask at all
("custom attention without equivalent mask creation", masking_utils), which is what we want:
the plan replaces it. The implementation is set only while the Trainer runs
(:func:`use_packed_attention`), so generation or evaluation afterwards uses the model's own.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

NAME = "kaito_packed_sdpa"
PLAN_KEY = "kaito_packed_plan"
# Decoders whose attention is plain causal self-attention through transformers'
# AttentionInterface (plus an optional sliding window, handled here). Others (Falcon, models
# with soft-capping or attention sinks) keep the 4D block mask, which is exact for any model.
MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")
MIN_BUCKET = 16
# On CPU, SDPA's bf16/fp16 kernels (and the gathers around them) are several times slower than
# fp32 for short sequences (fwd+bwd of 70 samples x 16 tokens: 15.3 ms bf16, 2.7 ms fp32; even at
# 256 tokens; bf16 wins from 512): packed rows whose buckets are all this short attend in fp32.
CPU_FP32_UPTO = 256


def _registered() -> None:
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, packed_sdpa)


def supported(model: Any) -> bool:
    """Can ``model`` (a transformers or peft model) train packed rows with :func:`packed_sdpa`?"""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    return (getattr(cfg, "model_type", None) in MODEL_TYPES
            and getattr(cfg, "_attn_implementation", None) == "sdpa"
            and bool(getattr(base, "_supports_attention_backend", False)))


@contextlib.contextmanager
def use_packed_attention(model: Any, enabled: bool = True) -> Iterator[None]:
    """Route the model's attention through :func:`packed_sdpa` for the duration of the block."""
    if not enabled:
        yield
        return
    _registered()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    base.config._attn_implementation = NAME
    try:
        yield
    finally:
        base.config._attn_implementation = before


def _bucket(n: int, cap: int) -> int:
    """Padded length for an ``n``-token sample: the next power of two (under 4x the sample's own
    attention work, a few SDPA calls per layer), never more than the row."""
    size = MIN_BUCKET
    while size < n:
        size *= 2
    return min(size, cap)


def plan(seq_lens_per_row: list[list[int]], length: int) -> dict[str, Any]:
    """Where each sample lies in the flattened ``[batch * length]`` tokens, grouped in buckets.

    ``index[b]``: ``[samples, bucket]`` token indices (the sample's last token repeated past its
    end); ``valid[b]``: the positions of real tokens in ``index[b].flatten()``; ``inverse``: the
    permutation that puts the concatenated real tokens of all buckets back in row order. The
    padding at the end of a row is one more "sample" (its outputs are never attended to)."""
    import torch

    starts: list[int] = []
    lens: list[int] = []
    for b, row in enumerate(seq_lens_per_row):
        at = b * length
        for n in row:
            if n > 0:
                starts.append(at)
                lens.append(n)
                at += n
        if at < (b + 1) * length:
            starts.append(at)
            lens.append((b + 1) * length - at)
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lens):
        groups.setdefault(_bucket(n, length), []).append(i)
    index, valid, order = [], [], []
    for size in sorted(groups):
        members = torch.tensor(groups[size], dtype=torch.long)
        s = torch.tensor(starts, dtype=torch.long)[members]
        n = torch.tensor(lens, dtype=torch.long)[members]
        offs = torch.arange(size, dtype=torch.long)
        idx = s[:, None] + torch.minimum(offs[None, :], (n - 1)[:, None])
        real = (offs[None, :] < n[:, None]).flatten().nonzero().squeeze(1)
        index.append(idx)
        valid.append(real)
        order.append(idx.flatten()[real])
    inverse = torch.empty(len(seq_lens_per_row) * length, dtype=torch.long)
    flat = torch.cat(order)
    inverse[flat] = torch.arange(flat.numel(), dtype=torch.long)
    return {"index": index, "valid": valid, "inverse": inverse}


def _window_mask(size: int, window: int, device: Any):
    import torch

    q = torch.arange(size, device=device)[:, None]
    k = torch.arange(size, device=device)[None, :]
    return (k <= q) & (k > q - window)  # transformers' sliding_window_overlay: kv_idx > q_idx - window


def packed_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers attention-interface function: ``query`` ``[B, H, L, D]``, ``key``/``value``
    ``[B, Hkv, L, D]`` -> ``([B, L, H, D], None)``, each sample attending causally to itself."""
    import torch
    import torch.nn.functional as F

    layout = kwargs.get(PLAN_KEY)
    if layout is None:
        raise RuntimeError(f"attention {NAME!r} needs the packed collator's {PLAN_KEY!r} batch entry; "
                           "it is meant for kaito's packed training only")
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    dtype = query.dtype
    if (query.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)
            and max(idx.shape[1] for idx in layout["index"]) <= CPU_FP32_UPTO):
        query, key, value = query.float(), key.float(), value.float()
    q = query.transpose(1, 2).reshape(batch * length, heads, dim)
    k = key.transpose(1, 2).reshape(batch * length, kv_heads, dim)
    v = value.transpose(1, 2).reshape(batch * length, kv_heads, dim)
    window = kwargs.get("sliding_window")
    outs = []
    for idx, real in zip(layout["index"], layout["valid"]):
        samples, size = idx.shape
        qb = q[idx].transpose(1, 2)  # [samples, heads, size, dim]
        kb = k[idx].transpose(1, 2)
        vb = v[idx].transpose(1, 2)
        if kv_heads != heads:  # grouped-query attention: as transformers' repeat_kv
            rep = heads // kv_heads
            kb = kb[:, :, None].expand(samples, kv_heads, rep, size, dim).reshape(samples, heads, size, dim)
            vb = vb[:, :, None].expand(samples, kv_heads, rep, size, dim).reshape(samples, heads, size, dim)
        mask = _window_mask(size, int(window), q.device) if window and size > int(window) else None
        ob = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, dropout_p=dropout, is_causal=mask is None,
                                            scale=scaling)
        outs.append(ob.transpose(1, 2).reshape(samples * size, heads, dim)[real])
    out = torch.cat(outs)[layout["inverse"]].to(dtype)
    return out.view(batch, length, heads, dim), None
