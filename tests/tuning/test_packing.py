"""Packing: samples share a row but never see each other; loss masking is unchanged."""

from __future__ import annotations

import pytest

from kaito_core.tuning import attention, run
from kaito_core.tuning.encode import IGNORE
from kaito_core.tuning.packing import PackedCollator, block_causal_mask, pack

ROWS = [{"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE, IGNORE, 7, 8, 9]},
        {"input_ids": [11, 12, 13], "labels": [11, 12, 13]},
        {"input_ids": [20, 21, 22, 23], "labels": [IGNORE, 21, 22, 23]},
        {"input_ids": [30, 31, 32, 33, 34, 35, 36], "labels": [30, 31, 32, 33, 34, 35, 36]}]


def test_best_fit_decreasing_keeps_samples_whole_and_restarts_positions():
    packed = pack(ROWS, 10)
    assert all(len(r["input_ids"]) <= 10 for r in packed)
    assert sorted(n for r in packed for n in r["seq_lens"]) == sorted(len(r["input_ids"]) for r in ROWS)
    assert len(packed) == 2  # 19 tokens in rows of 10
    for r in packed:
        start = 0
        for n in r["seq_lens"]:
            assert r["position_ids"][start:start + n] == list(range(n))
            assert r["labels"][start] == IGNORE  # never predicted from the previous sample
            start += n
    # every other label is the sample's own (assistant-only masking unchanged)
    by_first = {r["input_ids"][0]: r for r in ROWS}
    for r in packed:
        start = 0
        for n in r["seq_lens"]:
            src = by_first[r["input_ids"][start]]
            assert r["input_ids"][start:start + n] == src["input_ids"]
            assert r["labels"][start + 1:start + n] == src["labels"][1:]
            start += n


def test_wrapped_cuts_at_the_row_length():
    packed = pack(ROWS, 8, "wrapped")
    assert [len(r["input_ids"]) for r in packed] == [8, 8, 3]
    assert [r["seq_lens"] for r in packed] == [[5, 3], [4, 4], [3]]  # the last sample is cut in two


def test_block_causal_mask():
    m = block_causal_mask([[2, 3]], 6)[0, 0]
    assert m[1].tolist() == [True, True, False, False, False, False]
    assert m[4].tolist() == [False, False, True, True, True, False]  # second sample only, causal
    assert m[5].tolist() == [False] * 5 + [True]  # padding sees itself only


def _packed_and_alone(model_dir, attention_name, **config):
    import torch
    from transformers import AutoModelForCausalLM

    varlen = attention_name == "varlen"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="sdpa" if varlen else attention_name,
                                                 **config).eval()
    packed = pack(ROWS, 32)
    assert len(packed) == 1 and len(packed[0]["seq_lens"]) == 4
    batch = PackedCollator(0, model.config._attn_implementation, varlen=varlen)([packed[0]])
    assert ("attention_mask" in batch) is not varlen and (attention.PLAN_KEY in batch) is varlen
    with torch.no_grad():
        with attention.use_packed_attention(model, varlen):
            together = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        plain = model(input_ids=batch["input_ids"]).logits[0]  # one causal sequence: samples see each other
        alone = {}
        for r in ROWS:
            alone[r["input_ids"][0]] = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
    return packed[0], together, plain, alone, model, batch


def _worst_and_leaked(row, together, plain, alone):
    start, worst, leaked = 0, 0.0, 0.0
    for n in row["seq_lens"]:
        ref = alone[row["input_ids"][start]]
        worst = max(worst, (together[start:start + n] - ref).abs().max().item())
        leaked = max(leaked, (plain[start:start + n] - ref).abs().max().item())
        start += n
    return worst, leaked


# Falcon does not use transformers' AttentionInterface: it always gets the 4D block mask.
@pytest.mark.parametrize("arch,attention_name", [(a, n) for a in ("llama", "phi3", "falcon")
                                                 for n in ("sdpa", "eager", "varlen") if (a, n) != ("falcon", "varlen")])
def test_a_packed_row_gives_each_sample_the_logits_it_has_alone(arch, attention_name, tiny_models):
    worst, leaked = _worst_and_leaked(*_packed_and_alone(tiny_models[arch], attention_name)[:4])
    assert worst < 1e-4
    assert leaked > 1e-3  # without the block mask the later samples do see the earlier ones


def test_per_sample_attention_keeps_a_sliding_window(tiny_models):
    """Phi-3 with a 3-token window: each sample alone gets transformers' sliding-window mask;
    the packed row's per-sample attention must apply the same window (7-token sample > 3)."""
    _, together, _, alone, model, _ = _packed_and_alone(tiny_models["phi3"], "varlen", sliding_window=3)
    assert model.config.sliding_window == 3
    _, wide, _, alone_wide, _, _ = _packed_and_alone(tiny_models["phi3"], "varlen")
    row = pack(ROWS, 32)[0]
    worst, _ = _worst_and_leaked(row, together, together, alone)
    assert worst < 1e-4
    assert (alone[30] - alone_wide[30]).abs().max().item() > 1e-3  # the window does change the 7-token sample


def test_the_packed_loss_is_the_token_weighted_loss_of_the_samples(tiny_models):
    import torch

    row, _, _, _, model, batch = _packed_and_alone(tiny_models["llama"], "sdpa")
    labels = torch.tensor([row["labels"]])
    with torch.no_grad():
        packed_loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"], labels=labels).loss.item()
        varlen = PackedCollator(0, "sdpa", varlen=True)([row])
        with attention.use_packed_attention(model):
            varlen_loss = model(**varlen).loss.item()
        total = count = 0.0
        for r in ROWS:
            n = sum(1 for x in r["labels"][1:] if x != IGNORE)
            lab = torch.tensor([r["labels"]])
            total += model(input_ids=torch.tensor([r["input_ids"]]), labels=lab).loss.item() * n
            count += n
    assert packed_loss == pytest.approx(total / count, abs=1e-5)
    assert varlen_loss == pytest.approx(total / count, abs=1e-5)


def _rows(n, seed=0):
    import random

    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        k = rnd.randint(2, 40)
        ids = [rnd.randint(1, 500) for _ in range(k)]
        out.append({"input_ids": ids, "labels": [x if j >= k // 2 else IGNORE for j, x in enumerate(ids)]})
    return out


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_per_sample_attention_trains_exactly_like_the_block_mask(arch, tiny_models):
    """Same LoRA model, same packed batch (several rows, padding, grouped-query attention):
    the loss and every LoRA gradient agree between the 4D mask and per-sample attention."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kaito_core.testing.tiny_models import build_tiny_model

    model_dir = build_tiny_model(tiny_models[arch].parent / f"{arch}-gqa", arch, kv_heads=2, context=256)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    targets = ["q_proj", "v_proj"] if arch == "llama" else ["qkv_proj", "o_proj"]
    model = get_peft_model(base, LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    assert attention.supported(model)
    rows = pack(_rows(40), 128)[-3:]
    assert len({len(r["input_ids"]) for r in rows}) > 1  # the shorter rows are padded

    def loss_and_grads(varlen):
        model.zero_grad()
        batch = PackedCollator(0, "sdpa", varlen=varlen)(rows)
        with attention.use_packed_attention(model, varlen):
            loss = model(**batch).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    mask_loss, mask_grads = loss_and_grads(False)
    varlen_loss, varlen_grads = loss_and_grads(True)
    assert varlen_loss == pytest.approx(mask_loss, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(mask_grads, varlen_grads))
    assert any(g.abs().max() > 0 for g in varlen_grads)
    assert base.config._attn_implementation == "sdpa"  # restored after the block


def test_the_plan_puts_every_token_back_in_place():
    import torch

    seq_lens = [[3, 20, 1], [40, 5]]
    p = attention.plan(seq_lens, 50)
    flat = torch.cat([idx.flatten()[real] for idx, real in zip(p["index"], p["valid"])])
    assert sorted(flat.tolist()) == list(range(100))  # each token (padding included) exactly once
    assert torch.equal(flat[p["inverse"]], torch.arange(100))
    # buckets (the pad tails 26 and 5 are segments too): 3,1,5,5 | 20,26 | 40, capped at the row length
    assert [tuple(i.shape) for i in p["index"]] == [(4, 16), (2, 32), (1, 50)]
    assert p["index"][0][0].tolist() == [0, 1, 2] + [2] * 13  # padded by repeating the last token


def test_per_sample_attention_refuses_a_batch_without_its_plan(tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    with attention.use_packed_attention(model), pytest.raises(RuntimeError, match="needs the packed collator"):
        model(input_ids=torch.tensor([[1, 2, 3]]))


def test_models_outside_the_list_keep_the_block_mask(tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    falcon = AutoModelForCausalLM.from_pretrained(tiny_models["falcon"], dtype=torch.float32)
    llama = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    eager = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32,
                                                 attn_implementation="eager")
    assert not attention.supported(falcon) and attention.supported(llama) and not attention.supported(eager)


def test_a_run_with_packing_learns_in_fewer_steps(tiny_models, chat_jsonl, fast_config, tmp_path):
    steps = []
    fast_config["training_config"]["TrainingArguments"].update(packing=True, max_steps=10, group_by_length=True)
    fast_config["training_config"]["DatasetConfig"].update(max_seq_length=256, train_test_split=0.75)
    result = run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
                 output=str(tmp_path / "a"), progress="none", on_step=steps.append)
    p = result.summary["packing"]
    assert p["samples"] == 12 and p["rows"] < 12 and p["strategy"] == "bfd"
    assert p["attention"] == "per-sample SDPA"  # Llama under SDPA: attention at the samples' cost
    assert result.summary["eval_loss"] > 0  # the held-out rows are evaluated one sample per row
    assert steps[-1].loss < steps[0].loss
    # per_device_train_batch_size 2 packed rows: each step sees several samples' tokens
    assert result.summary["tokens_seen"] / result.summary["steps"] > 2 * 30


def test_the_same_config_trains_the_same_adapter_with_or_without_checkpointing(tiny_models, chat_jsonl, fast_config,
                                                                               tmp_path):
    """TrainingArguments.seed also seeds LoRA's initial weights (drawn before the Trainer exists),
    so two runs in one process agree step by step; gradient checkpointing (off by default, as in
    transformers and upstream's templates) recomputes the packed rows' activations and must not
    change a single gradient."""
    fast_config["training_config"]["TrainingArguments"].update(packing=True, max_steps=3, logging_steps=1)
    fast_config["training_config"]["DatasetConfig"].update(max_seq_length=128, train_test_split=1)
    runs = []
    for i, checkpointing in enumerate((False, False, True)):
        fast_config["training_config"]["TrainingArguments"]["gradient_checkpointing"] = checkpointing
        steps = []
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
            output=str(tmp_path / str(i)), progress="none", on_step=steps.append)
        runs.append([x for s in steps for x in (s.loss, s.grad_norm)])
    assert len(runs[0]) == 6 and all(g > 0 for g in runs[0][1::2])
    assert runs[1] == runs[0]
    assert runs[2] == pytest.approx(runs[0], rel=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_logits_only_where_labels_are_predicted_train_the_same(packed, tiny_models):
    """The LM head runs on the positions that predict a label only; loss and gradients agree with
    the full logits (packed rows and padded plain rows, several rows per batch)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kaito_core.tuning.encode import PadCollator

    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    rows = pack(_rows(40), 128)[-3:] if packed else _rows(4)

    def run_once(label_only):
        model.zero_grad()
        collate = (PackedCollator(0, "sdpa", varlen=True, label_logits_only=label_only) if packed
                   else PadCollator(0, label_logits_only=label_only))
        batch = collate(rows)
        with attention.use_packed_attention(model, packed):
            out = model(**batch)
        out.loss.backward()
        return batch, out, [p.grad.clone() for p in model.parameters() if p.requires_grad]

    full_batch, full, full_grads = run_once(False)
    batch, kept, grads = run_once(True)
    positions = batch["logits_to_keep"]
    assert "logits_to_keep" not in full_batch and 0 < len(positions) < full_batch["input_ids"].shape[1]
    assert kept.logits.shape[1] == len(positions) < full.logits.shape[1]
    assert torch.allclose(kept.logits, full.logits[:, positions], atol=1e-5)
    assert kept.loss.item() == pytest.approx(full.loss.item(), rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(full_grads, grads))


@pytest.mark.parametrize("fp32_upto,attends_in", [(attention.CPU_FP32_UPTO, "float32"), (8, "bfloat16")])
def test_bf16_rows_on_cpu_attend_in_fp32_while_their_buckets_are_short(fp32_upto, attends_in, monkeypatch):
    """CPU's bf16 SDPA is several times slower than fp32 on short sequences: short buckets are
    attended in fp32 (same values, rounded back), long ones stay bf16; the output and the
    gradients keep the model's dtype either way."""
    import torch
    import torch.nn.functional as F

    seen, sdpa = [], F.scaled_dot_product_attention

    def spy(q, *args, **kwargs):
        seen.append(q.dtype)
        return sdpa(q, *args, **kwargs)
    monkeypatch.setattr(attention, "CPU_FP32_UPTO", fp32_upto)
    torch.manual_seed(0)
    layout = attention.plan([[3, 20, 1]], 24)
    q, k, v = (torch.randn(1, 4, 24, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    with monkeypatch.context() as m:
        m.setattr(F, "scaled_dot_product_attention", spy)
        out, _ = attention.packed_sdpa(None, q, k, v, None, **{attention.PLAN_KEY: layout})
    assert out.dtype == torch.bfloat16 and set(seen) == {getattr(torch, attends_in)}
    exact, _ = attention.packed_sdpa(None, q.float(), k.float(), v.float(), None, **{attention.PLAN_KEY: layout})
    if attends_in == "float32":
        assert torch.equal(out, exact.to(torch.bfloat16))
    assert (out.float() - exact).abs().max().item() < 0.05
    out.float().pow(2).sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 and t.grad.abs().max() > 0 for t in (q, k, v))
