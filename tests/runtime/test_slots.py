"""KV-cache slots and chunked prefill (SlotEngine), driven directly on tiny real models:
answers equal the DynamicCache engine's and one-at-a-time generation, requests join and leave
without the cache being rebuilt, and a long prompt is prefilled in chunks between decode steps."""

from __future__ import annotations

import time

import pytest

from kaito_core.runtime.engine import Engine, Sequence
from kaito_core.runtime.protocol import SamplingParams
from kaito_core.runtime.slots import SlotEngine, supports_slots
from kaito_core.runtime.textstream import Detokenizer
from tests.runtime.conftest import Collector


def _seq(tok, prompt_ids, n, sink):
    return Sequence(prompt_ids=list(prompt_ids), params=SamplingParams(temperature=0.0, ignore_eos=True),
                    max_new_tokens=n, eos_ids=frozenset(), detok=Detokenizer(tok), sink=sink)


def _run(engine, seqs, stagger=0.0):
    sinks = [s.sink for s in seqs]
    engine.start()
    try:
        for s in seqs:
            engine.submit(s)
            time.sleep(stagger)
        for sink in sinks:
            assert sink.done.wait(60)
    finally:
        engine.stop()
    return [s.output_ids for s in seqs]


PROMPTS = [list(range(5, 40)), [7, 8], list(range(100, 190)), [300, 301, 302, 303, 304], list(range(50, 61))]


@pytest.mark.parametrize("arch", ["llama", "phi3", "falcon"])
def test_slots_match_dynamic_cache_and_solo(loaded, arch):
    model, tok = loaded[arch]
    assert supports_slots(model, 512) is None
    lengths = [12, 20, 6, 15, 9]

    def seqs():
        return [_seq(tok, p, n, Collector()) for p, n in zip(PROMPTS, lengths)]

    slots = _run(SlotEngine(model, max_batch=4, context_length=512, chunk_tokens=16), seqs(), stagger=0.002)
    dynamic = _run(Engine(model, max_batch=4, context_length=512), seqs(), stagger=0.002)
    solo = [_run(SlotEngine(model, max_batch=1, context_length=512), [s])[0] for s in seqs()]
    assert slots == dynamic == solo
    assert [len(o) for o in slots] == lengths


def test_join_and_leave_write_in_place(loaded):
    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=4, context_length=512, chunk_tokens=64)
    seqs = [_seq(tok, p, n, Collector()) for p, n in zip(PROMPTS[:4], [30, 3, 25, 8])]
    engine.start()
    try:
        engine.submit(seqs[0])
        while not engine.rows:
            time.sleep(0.001)
        buffers = {id(t) for t in engine.store.keys.values()}
        ptrs = {t.data_ptr() for t in engine.store.keys.values()}
        for s in seqs[1:]:
            engine.submit(s)
        for s in seqs:
            assert s.sink.done.wait(60)
    finally:
        engine.stop()
    # 4 requests joined and left at different steps; the buffers were never rebuilt (no growth:
    # every request fits the initial 256 columns)
    assert {id(t) for t in engine.store.keys.values()} == buffers
    assert {t.data_ptr() for t in engine.store.keys.values()} == ptrs
    assert engine.max_batch_seen >= 3
    assert [len(s.output_ids) for s in seqs] == [30, 3, 25, 8]


def test_capacity_grows_by_doubling_and_keeps_the_cache(loaded):
    model, tok = loaded["llama"]
    long = [_seq(tok, list(range(3, 303)), 40, Collector())]   # 340 tokens > the initial 256 columns
    grown = SlotEngine(model, max_batch=2, context_length=512, chunk_tokens=64)
    out = _run(grown, long)
    assert grown.store.capacity > 257
    ref = _run(Engine(model, max_batch=2, context_length=512), [_seq(tok, list(range(3, 303)), 40, Collector())])
    assert out == ref


def test_a_long_prompt_is_prefilled_in_chunks_between_decode_steps(loaded):
    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=4, context_length=512, chunk_tokens=32)
    running = _seq(tok, [5, 6, 7], 300, Collector())
    long = _seq(tok, list(range(10, 410)), 2, Collector())    # 400 tokens: 13 chunks of 32
    engine.start()
    try:
        engine.submit(running)
        while len(running.output_ids) < 5:
            time.sleep(0.001)
        before_chunks, before_tokens = engine.prefill_chunks, len(running.output_ids)
        engine.submit(long)
        while not long.output_ids:
            time.sleep(0.001)
        during = len(running.output_ids) - before_tokens
        chunks = engine.prefill_chunks - before_chunks
        assert running.sink.done.wait(60) and long.sink.done.wait(60)
    finally:
        engine.stop()
    assert chunks == 13
    # the running stream got a token in (almost) every turn that prefilled a chunk, instead of
    # waiting for the whole 400-token prefill
    assert during >= chunks - 1, (during, chunks)


def test_cancelled_rows_free_their_slots(loaded):
    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=3, context_length=512, chunk_tokens=8)
    seqs = [_seq(tok, p, 200, Collector()) for p in PROMPTS[:3]]
    engine.start()
    try:
        for s in seqs:
            engine.submit(s)
        while len(engine.rows) < 2:
            time.sleep(0.001)
        seqs[0].cancel()
        assert seqs[0].sink.done.wait(30)
        late = _seq(tok, [9, 9, 9], 4, Collector())
        engine.submit(late)
        assert late.sink.done.wait(60)
        for s in seqs[1:]:
            s.cancel()
        for s in seqs[1:]:
            assert s.sink.done.wait(30)
    finally:
        engine.stop()
    assert seqs[0].finish_reason == "abort" and len(late.output_ids) == 4
    assert not engine.rows and not engine.prefilling
    solo = _run(SlotEngine(model, max_batch=1, context_length=512), [_seq(tok, [9, 9, 9], 4, Collector())])[0]
    assert late.output_ids == solo  # it ran in a reused slot, with nothing left over from the old row


def test_models_slots_cannot_serve_keep_the_dynamic_engine(loaded, monkeypatch):
    from types import SimpleNamespace

    from kaito_core.runtime.loader import ModelLoadError
    from kaito_core.runtime.options import OptionsError, ServeOptions
    from kaito_core.runtime.service import make_engine

    model, tok = loaded["llama"]
    assert "sliding window" in supports_slots(SimpleNamespace(config=SimpleNamespace(
        _attn_implementation="sdpa", sliding_window=128)), 512)
    assert "ALiBi" in supports_slots(SimpleNamespace(config=SimpleNamespace(
        _attn_implementation="sdpa", alibi=True)), 512)
    assert "flash_attention_2" in supports_slots(SimpleNamespace(config=SimpleNamespace(
        _attn_implementation="flash_attention_2")), 512)
    ld = SimpleNamespace(model=model, context_length=512)
    assert type(make_engine(ServeOptions(model="m"), ld, None, None)) is SlotEngine
    assert type(make_engine(ServeOptions(model="m", kv_cache="dynamic"), ld, None, None)) is Engine
    monkeypatch.setattr(model.config, "sliding_window", 64, raising=False)
    assert type(make_engine(ServeOptions(model="m"), ld, None, None)) is Engine
    with pytest.raises(ModelLoadError, match="--kv-cache dynamic"):
        make_engine(ServeOptions(model="m", kv_cache="slots"), ld, None, None)
    with pytest.raises(OptionsError, match="--kv-cache"):
        ServeOptions(model="m", kv_cache="paged")
