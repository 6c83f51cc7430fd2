"""Packing: samples share a row but never see each other; loss masking is unchanged."""

from __future__ import annotations

import pytest

from kaito_core.tuning import run
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


def _packed_and_alone(model_dir, attention):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation=attention).eval()
    packed = pack(ROWS, 32)
    assert len(packed) == 1 and len(packed[0]["seq_lens"]) == 4
    batch = PackedCollator(0, model.config._attn_implementation)([packed[0]])
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         position_ids=batch["position_ids"]).logits[0]
        plain = model(input_ids=batch["input_ids"]).logits[0]  # one causal sequence: samples see each other
        alone = {}
        for r in ROWS:
            alone[r["input_ids"][0]] = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
    return packed[0], together, plain, alone, model, batch


@pytest.mark.parametrize("arch", ["llama", "phi3", "falcon"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_row_gives_each_sample_the_logits_it_has_alone(arch, attention, tiny_models):
    row, together, plain, alone, _, _ = _packed_and_alone(tiny_models[arch], attention)
    start, worst, leaked = 0, 0.0, 0.0
    for n in row["seq_lens"]:
        ref = alone[row["input_ids"][start]]
        worst = max(worst, (together[start:start + n] - ref).abs().max().item())
        leaked = max(leaked, (plain[start:start + n] - ref).abs().max().item())
        start += n
    assert worst < 1e-4
    assert leaked > 1e-3  # without the block mask the later samples do see the earlier ones


def test_the_packed_loss_is_the_token_weighted_loss_of_the_samples(tiny_models):
    import torch

    row, _, _, _, model, batch = _packed_and_alone(tiny_models["llama"], "sdpa")
    labels = torch.tensor([row["labels"]])
    with torch.no_grad():
        packed_loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"], labels=labels).loss.item()
        total = count = 0.0
        for r in ROWS:
            n = sum(1 for x in r["labels"][1:] if x != IGNORE)
            lab = torch.tensor([r["labels"]])
            total += model(input_ids=torch.tensor([r["input_ids"]]), labels=lab).loss.item() * n
            count += n
    assert packed_loss == pytest.approx(total / count, abs=1e-5)


def test_a_run_with_packing_learns_in_fewer_steps(tiny_models, chat_jsonl, fast_config, tmp_path):
    steps = []
    fast_config["training_config"]["TrainingArguments"].update(packing=True, max_steps=10, group_by_length=True)
    fast_config["training_config"]["DatasetConfig"].update(max_seq_length=256, train_test_split=0.75)
    result = run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
                 output=str(tmp_path / "a"), progress="none", on_step=steps.append)
    p = result.summary["packing"]
    assert p["samples"] == 12 and p["rows"] < 12 and p["strategy"] == "bfd"
    assert result.summary["eval_loss"] > 0  # the held-out rows are evaluated one sample per row
    assert steps[-1].loss < steps[0].loss
    # per_device_train_batch_size 2 packed rows: each step sees several samples' tokens
    assert result.summary["tokens_seen"] / result.summary["steps"] > 2 * 30
