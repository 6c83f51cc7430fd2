"""Packing: several short samples in one training row, each still seeing only itself.

TRL's ``packing: true`` with its default ``packing_strategy: "bfd"`` (best-fit decreasing)
places whole samples into rows of at most ``max_length`` tokens and resets the position ids
at each sample (``padding_free``), so nothing is cut in half. We do the same, and make the
isolation explicit instead of trusting each model to infer it from the position ids. For the
decoders :mod:`kaito_core.tuning.attention` knows (Llama, Mistral, Qwen2/3, Phi-3 under SDPA)
the collator says where each sample lies and attention runs per sample, at the cost of the
samples instead of the row. Any other model gets a 4D block-diagonal causal mask (sample *i*'s
tokens attend only to earlier tokens of sample *i*), which the eager and SDPA attention of
transformers use as given
(``masking_utils._preprocess_mask_arguments`` returns a 4D mask unchanged). Flash-attention
cannot take a 4D mask; there transformers' varlen path splits the row at the position-id
resets (``find_packed_sequence_indices``), so only the position ids are passed. Labels are the
samples' own labels (assistant tokens only), so loss masking is unchanged, except that each
sample's first label is set to -100: the model's loss shifts labels by one, so it would
otherwise train the previous sample's last token to predict the next sample's first one, a
prediction an unpacked row never makes (TRL's padding-free collator does the same).

``wrapped`` (TRL's other strategy) concatenates and cuts at ``max_length`` regardless of
sample borders; it is accepted for compatibility, with the same per-sample masks.
"""

from __future__ import annotations

from typing import Any, Sequence

from kaito_core.tuning.encode import IGNORE, keep_label_logits

STRATEGIES = ("bfd", "wrapped")


def _bfd_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: each sample (longest first) goes to the fullest row it fits in."""
    import bisect

    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # (space left, bin index) sorted by space left: the best fit is the first with room enough.
    space: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(space, (n, -1))
        if at < len(space):
            left, b = space.pop(at)
            bins[b].append(i)
            bisect.insort(space, (left - n, b))
        else:
            bins.append([i])
            bisect.insort(space, (capacity - n, len(bins) - 1))
    return bins


def pack(rows: list[dict[str, list[int]]], max_length: int, strategy: str = "bfd") -> list[dict[str, list[int]]]:
    """Rows of ``input_ids``/``labels`` -> packed rows with ``position_ids`` restarting per sample
    and ``seq_lens`` (the length of each sample, in order). Samples longer than ``max_length``
    were already truncated by the encoder (``max_seq_length``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"packing strategy {strategy!r}: expected one of {list(STRATEGIES)}")
    if strategy == "wrapped":
        return _wrapped(rows, max_length)
    lengths = [min(len(r["input_ids"]), max_length) for r in rows]
    out = []
    for members in _bfd_bins(lengths, max_length):
        members.sort()  # keep the data's order inside a row (deterministic, readable)
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        seq_lens: list[int] = []
        for i in members:
            n = lengths[i]
            ids += rows[i]["input_ids"][:n]
            labels += [IGNORE] + list(rows[i]["labels"][1:n])
            pos += list(range(n))
            seq_lens.append(n)
        out.append({"input_ids": ids, "labels": labels, "position_ids": pos, "seq_lens": seq_lens})
    return out


def _wrapped(rows: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    out: list[dict[str, list[int]]] = []
    cur: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    for r in rows:
        ids, labels = list(r["input_ids"]), list(r["labels"])
        while ids:
            room = max_length - len(cur["input_ids"])
            take = min(room, len(ids))
            cur["input_ids"] += ids[:take]
            cur["labels"] += [IGNORE] + list(labels[1:take])
            cur["position_ids"] += list(range(take))
            cur["seq_lens"].append(take)
            ids, labels = ids[take:], labels[take:]
            if len(cur["input_ids"]) == max_length:
                out.append(cur)
                cur = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    if cur["input_ids"]:
        out.append(cur)
    return out


def block_causal_mask(seq_lens_per_row: list[list[int]], length: int):
    """A boolean [batch, 1, length, length] mask: True where query *q* may attend key *k*
    (same sample, k <= q). Padding positions attend only to themselves (no NaN rows)."""
    import torch

    rows = []
    for lens in seq_lens_per_row:
        lens = [n for n in lens if n > 0]
        real = sum(lens)
        # sample j's tokens carry segment id j; each pad token is a segment of its own
        seg = torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens, dtype=torch.long))
        rows.append(torch.cat([seg, torch.arange(len(lens), len(lens) + length - real)]))
    seg = torch.stack(rows)
    same = seg[:, :, None] == seg[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (same & causal)[:, None, :, :]


class PackedCollator:
    """Pads packed rows to the longest in the batch and adds the per-sample attention.

    ``attention``: the model's ``config._attn_implementation``. ``sdpa``/``eager``/others get
    the 4D mask (boolean for SDPA, additive in the model's dtype for eager); ``flash_*`` get
    position ids only (transformers splits the row at each position-id reset). With
    ``varlen`` (models :func:`kaito_core.tuning.attention.supported` accepts), no mask at all:
    the batch carries where each sample lies, for :func:`~kaito_core.tuning.attention.packed_sdpa`.
    """

    def __init__(self, pad_id: int, attention: str | None, dtype: Any = None, pad_to_multiple_of: int | None = None,
                 varlen: bool = False, label_logits_only: bool = False):
        from collections import deque

        self.pad_id = pad_id
        self.attention = attention or "sdpa"
        self.dtype = dtype
        self.multiple = pad_to_multiple_of
        self.varlen = varlen
        self.label_logits_only = label_logits_only
        # Real (non-padding) tokens of each packed training batch, oldest first: the Trainer
        # counts "non_padding" tokens as attention_mask.sum(), which a 4D mask would inflate.
        self.token_counts: deque[int] = deque()

    @property
    def isolation(self) -> str:
        """How samples in a row are kept apart, for the summary's ``packing.attention``."""
        if self.attention.startswith("flash"):
            return "flash-attention varlen (position ids)"
        return "per-sample SDPA" if self.varlen else f"4D block mask ({self.attention})"

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        packed = all("seq_lens" in r for r in rows)
        if not packed:  # evaluation rows are not packed: one sample per row
            rows = [dict(r, position_ids=list(range(len(r["input_ids"]))), seq_lens=[len(r["input_ids"])])
                    for r in rows]
        else:
            self.token_counts.append(sum(len(r["input_ids"]) for r in rows))

        n = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            n = -(-n // self.multiple) * self.multiple
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
        # Padding continues 0,1,2...: a fresh "sample" of its own, never attended to by real tokens.
        pos = torch.arange(n, dtype=torch.long).repeat(len(rows), 1)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.tensor(r["labels"], dtype=torch.long)
            pos[i, :k] = torch.tensor(r["position_ids"], dtype=torch.long)
            pos[i, k:] = torch.arange(n - k, dtype=torch.long)
        batch: dict[str, Any] = {"input_ids": ids, "labels": labels, "position_ids": pos}
        if self.label_logits_only:
            keep_label_logits(batch)
        if self.attention.startswith("flash"):
            return batch
        if self.varlen:
            from kaito_core.tuning.attention import PLAN_KEY, plan

            batch[PLAN_KEY] = plan([r["seq_lens"] for r in rows], n)
            return batch
        mask = block_causal_mask([r["seq_lens"] for r in rows], n)
        if self.attention == "eager":
            dtype = self.dtype or torch.float32
            additive = torch.zeros(mask.shape, dtype=dtype)
            additive.masked_fill_(~mask, torch.finfo(dtype).min)
            batch["attention_mask"] = additive
        else:
            batch["attention_mask"] = mask
        return batch


def stats(packed: list[dict[str, list[int]]], max_length: int) -> dict[str, float]:
    """Samples per row and how full the rows are (for the summary and the log)."""
    if not packed:
        return {"rows": 0, "samples": 0, "fill": 0.0}
    tokens = sum(len(r["input_ids"]) for r in packed)
    samples = sum(len(r["seq_lens"]) for r in packed)
    return {"rows": len(packed), "samples": samples, "samples_per_row": round(samples / len(packed), 2),
            "fill": round(tokens / (len(packed) * max_length), 4)}
