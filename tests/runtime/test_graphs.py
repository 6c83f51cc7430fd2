# Over 400 lines: every property of the static decode step shares this module's engines and fixtures.
"""The static decode step (graphs.py, overlap.py) on CPU, where it runs eagerly through the same
static buffers a CUDA graph would replay: answers equal the dynamic SlotEngine's and
``model.generate``, padding rows never touch live rows, the step reads only preallocated tensors
and its op trace depends only on its bucket, the host reads back one tensor (the sampled ids) per
token, and the next step is launched before the last one's tokens are delivered.
``torch.cuda.graph`` itself needs a GPU: the one test that runs it is skipped elsewhere."""

from __future__ import annotations

import threading
import time

import pytest

from kaito_core.runtime.engine import Sequence
from kaito_core.runtime.protocol import SamplingParams
from kaito_core.runtime.slots import SlotEngine
from kaito_core.runtime.textstream import Detokenizer
from tests.runtime.conftest import Collector


def _seq(tok, prompt, n, **params):
    params.setdefault("temperature", 0.0)
    eos = params.pop("eos_ids", frozenset({tok.eos_token_id}))
    return Sequence(prompt_ids=list(prompt), params=SamplingParams(**params), max_new_tokens=n,
                    eos_ids=frozenset(eos), detok=Detokenizer(tok), sink=Collector())


def _run(engine, seqs, stagger=0.0):
    """Run ``seqs`` to the end; ``stagger=None`` queues them all before the engine starts (the
    batches it forms then do not depend on timing)."""
    if stagger is None:
        for s in seqs:
            engine.submit(s)
    engine.start()
    try:
        for s in seqs if stagger is not None else ():
            engine.submit(s)
            time.sleep(stagger)
        for s in seqs:
            assert s.sink.done.wait(60)
    finally:
        engine.stop()
    assert all(s.finish_reason in ("length", "stop") for s in seqs), [s.sink.outs[-1] for s in seqs]
    return [s.output_ids for s in seqs]


# 12 requests through 8 slots: batches of 1..8 rows (buckets 1, 2, 4, 8), prompts of 2..190
# tokens plus up to 40 new ones (KV-length buckets 32, 64 and 128 of 16 .. 513)
PROMPTS = [list(range(5, 40)), [7, 8], list(range(100, 190)), [300, 301, 302, 303, 304], list(range(50, 61)),
           list(range(200, 213)), [9] * 30, list(range(20, 27)), list(range(400, 470)), [11, 12, 13],
           list(range(60, 160)), [42]]
LENGTHS = [12, 30, 6, 40, 9, 17, 25, 3, 10, 21, 8, 36]


def _greedy(tok):
    # ignore_eos with the real end token: the end token is banned, as generate's min_new_tokens does
    return [_seq(tok, p, n, ignore_eos=True) for p, n in zip(PROMPTS, LENGTHS)]


@pytest.mark.parametrize("arch", ["llama", "phi3", "falcon"])
def test_static_decode_matches_dynamic_slots_and_generate(loaded, arch):
    import torch

    model, tok = loaded[arch]
    static = SlotEngine(model, max_batch=8, context_length=512, chunk_tokens=48, cuda_graphs="on", graph_min_len=16)
    # 12 queued requests, 8 slots: 8 start together (prefilled in chunks of 48 tokens, joining the
    # decode batch as their prompts complete), the other 4 join as rows finish, and the batch
    # shrinks to 1 at the end
    ours = _run(static, _greedy(tok), stagger=None)
    dynamic = _run(SlotEngine(model, max_batch=8, context_length=512, chunk_tokens=48, cuda_graphs="off"),
                   _greedy(tok), stagger=0.003)
    with torch.inference_mode():
        reference = [model.generate(torch.tensor([p]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                    pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
                     for p, n in zip(PROMPTS, LENGTHS)]
    assert ours == dynamic == reference
    assert [len(o) for o in ours] == LENGTHS
    # every decode step ran the static step (the last one launched ahead for nothing), across
    # several batch and length buckets
    assert static.steps <= static.graphs.eager_steps <= static.steps + 1 and static.steps > 0
    batches = {b for b, _, _ in static.graphs.seen}
    lengths = {length for _, length, _ in static.graphs.seen}
    assert batches == {1, 2, 4, 8}, batches
    assert len(lengths) >= 3, lengths
    assert static.max_batch_seen == 8


def test_min_tokens_and_stop_ids_are_banned_on_the_device(loaded):
    model, tok = loaded["llama"]

    def seqs():
        # the end token and a stop id are banned until min_tokens; afterwards they may end it
        eos = tok.eos_token_id
        return [_seq(tok, p, 24, min_tokens=m, stop_token_ids=[eos + 1, 17], eos_ids={eos, 3, 4})
                for p, m in zip(PROMPTS[:6], [0, 5, 10, 24, 2, 7])]

    a = _run(SlotEngine(model, max_batch=4, context_length=512, cuda_graphs="on", graph_min_len=16), seqs(), 0.002)
    b = _run(SlotEngine(model, max_batch=4, context_length=512, cuda_graphs="off"), seqs(), 0.002)
    assert a == b


def _prime(engine, seqs):
    """Admit and prefill ``seqs`` on the test thread (no engine thread), then one decode step,
    collected and delivered: nothing is left in flight."""
    import torch

    from kaito_core.runtime.overlap import collect

    with torch.inference_mode():
        engine._step(list(seqs))
        if engine.graphs is not None:
            engine._deliver(*collect(engine))
    assert len(engine.rows) == len(seqs) and all(len(s.output_ids) == 2 for s in seqs)


def test_padding_rows_never_touch_live_rows(loaded):
    import torch

    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=8, context_length=256, cuda_graphs="on", graph_min_len=16)
    live = [_seq(tok, p, 50) for p in PROMPTS[:3]]
    _prime(engine, live)
    graphs, store = engine.graphs, engine.store
    k0 = store.keys[0]
    with torch.inference_mode():
        for t in [*store.keys.values(), *store.values.values()]:
            t[3:].normal_()                      # garbage in every spare slot, scratch column included
        before = [t.clone() for t in [*store.keys.values(), *store.values.values()]]
        picks, logits = graphs.decode(live)      # 3 rows -> bucket 4: slot 3 is a padding row
        first = logits.clone()
        after = [t.clone() for t in [*store.keys.values(), *store.values.values()]]
        for t in [*store.keys.values(), *store.values.values()]:
            t[3:].normal_()                      # other garbage: the live rows must not notice
        _, again = graphs.decode(live)
        ids = torch.tensor([[s.output_ids[-1]] for s in live])
        pos = torch.tensor([[s.pos] for s in live])
        dynamic = engine._run_pass(live, ids, pos, pos, max(s.pos for s in live) + 1).logits[:, -1, :]
    assert {b for b, _, _ in graphs.seen} == {4}
    assert torch.equal(first, again)
    torch.testing.assert_close(first, dynamic, rtol=1e-5, atol=1e-5)
    assert [p.token for p in picks] == dynamic.argmax(-1).tolist()
    # the step wrote exactly one column per live row (its position) and the padding row's scratch
    # column, nothing else
    for b, a in zip(before, after):
        changed = (b != a).any(-1).any(1).nonzero().tolist()    # [slot, column] pairs
        expected = sorted([[i, s.pos] for i, s in enumerate(live)] + [[3, store.scratch]])
        assert sorted(changed) == expected
    assert store.keys[0] is k0


class StepAudit:
    """Counts host syncs and tensors made from nothing (factories), checks that every tensor an op
    reads is static or computed in the step from static tensors, and records the step's trace: each
    op with its constants, shapes and the static addresses it reads (what a CUDA graph bakes in)."""

    SYNCS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal", "allclose", "lift_fresh"}

    def __init__(self, static: list):
        import torch

        self.allowed = {t.untyped_storage().data_ptr() for t in static}
        self.made: set[int] = set()
        self.keep: list = []                    # keep outputs alive: no address reuse during the audit
        self.strays: list[str] = []
        self.syncs: list[str] = []
        self.factories: list[str] = []
        self.trace: list[tuple] = []
        self.tolist = 0
        self.torch = torch

    def mode(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        audit = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if name in audit.SYNCS:
                    audit.syncs.append(name)
                inputs = tree_flatten((args, kwargs or {}))[0]
                if not any(isinstance(t, audit.torch.Tensor) for t in inputs):
                    audit.factories.append(name)   # a tensor made from nothing (on the host, on CUDA)
                for t in inputs:
                    if isinstance(t, audit.torch.Tensor) and t.untyped_storage().nbytes():
                        ptr = t.untyped_storage().data_ptr()
                        if ptr not in audit.allowed and ptr not in audit.made:
                            audit.strays.append(f"{name} reads a {tuple(t.shape)} {t.dtype} tensor")
                audit.trace.append((name, *map(audit.describe, inputs)))
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, audit.torch.Tensor):
                        audit.made.add(t.untyped_storage().data_ptr())
                        audit.keep.append(t)
                return out

        return Mode()

    def describe(self, value) -> object:
        if not isinstance(value, self.torch.Tensor):
            return repr(value)
        where = value.untyped_storage().data_ptr()
        static = where in self.allowed
        return (tuple(value.shape), value.stride(), value.dtype, where if static else "computed",
                value.storage_offset() if static else None)


def _static_tensors(engine) -> list:
    g, s, m = engine.graphs, engine.store, engine.model
    return [g.ints, g.temp, g.columns, g.ids, g.logits, g.host, g.host_temp, *s.keys.values(), *s.values.values(),
            *m.parameters(), *m.buffers()]


def test_the_step_reads_only_static_buffers_and_reads_back_only_the_ids(loaded, monkeypatch):
    import torch

    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=8, context_length=256, cuda_graphs="on", graph_min_len=16)
    live = [_seq(tok, p, 50) for p in PROMPTS[:3]] + [_seq(tok, PROMPTS[4], 50, temperature=0.8)]
    _prime(engine, live)          # warm-up: the static output buffers exist from here on
    audit = StepAudit(_static_tensors(engine))
    original = torch.Tensor.tolist

    def counted(self):
        audit.tolist += 1
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    ptrs = [t.data_ptr() for t in _static_tensors(engine)]
    traces = []
    with torch.inference_mode(), audit.mode():
        for _ in range(3):
            audit.trace = []
            picks, _ = engine.graphs.decode(live)
            traces.append(audit.trace)
            assert picks is not None and all(p.token is not None for p in picks)
            for s in live:
                s.output_ids.append(picks[0].token)
                s.pos += 1
    # other tokens at other positions, the same key: the same ops, constants and static addresses,
    # so a graph captured at the first step replays the next ones
    assert len({k for k in engine.graphs.seen if k[0] == 4}) == 1
    assert traces[0] == traces[1] == traces[2] and len(traces[0]) > 50
    assert audit.strays == []
    assert audit.syncs == [] and audit.factories == []
    assert audit.tolist == 3      # one read of the sampled ids per step, nothing else
    assert any(b == 4 and sampling for b, _, sampling in engine.graphs.seen)   # the temperature variant ran
    assert [t.data_ptr() for t in _static_tensors(engine)] == ptrs


def test_the_audit_catches_a_host_tensor_and_a_sync(loaded):
    """The audit above can fail: a step that builds its positions on the host is caught."""
    import torch

    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=4, context_length=256, cuda_graphs="off")
    live = [_seq(tok, p, 50) for p in PROMPTS[:2]]
    _prime(engine, live)
    audit = StepAudit([*model.parameters(), *model.buffers(), *engine.store.keys.values(),
                       *engine.store.values.values()])
    with torch.inference_mode(), audit.mode():
        engine._decode()          # the dynamic path: torch.tensor(...) of ids and positions, .tolist()
    assert audit.strays and "lift_fresh" in audit.syncs and audit.factories


def test_host_reads_per_decode_step_in_a_running_engine(loaded, monkeypatch):
    """Through the engine thread, greedy and temperature rows joining and leaving: each decode
    step is read back once (its ids); a row that needs the host sampler (a penalty) makes the
    engine run the synchronous step and sample on the host instead."""
    import torch

    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=4, context_length=512, cuda_graphs="on", graph_min_len=16)
    graphs = engine.graphs
    counts = {"tolist": 0, "collect": 0, "host": 0}
    original_tolist, original_collect, original_decode = torch.Tensor.tolist, graphs.collect, graphs.decode
    inside = threading.local()

    def tolist(self):
        if getattr(inside, "on", False):
            counts["tolist"] += 1
        return original_tolist(self)

    def collect(n):
        counts["collect"] += 1
        return original_collect(n)

    def decode(rows):
        picks, logits = original_decode(rows)
        counts["host"] += picks is None
        return picks, logits

    original_step = engine._decode

    def decode_turn():   # the whole decode part of a turn, delivery included
        inside.on = True
        try:
            original_step()
        finally:
            inside.on = False

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    graphs.collect, graphs.decode, engine._decode = collect, decode, decode_turn
    seqs = [_seq(tok, p, n, temperature=t, ignore_eos=True)
            for p, n, t in zip(PROMPTS[:6], [20, 8, 30, 5, 12, 16], [0.0, 0.7, 0.0, 1.3, 0.0, 0.9])]
    _run(engine, seqs, stagger=0.004)
    assert counts["collect"] == engine.steps > 0 and counts["host"] == 0
    assert counts["tolist"] == counts["collect"]
    engine.stopping = False       # the same engine again, with a row that needs the host sampler
    _run(engine, [_seq(tok, PROMPTS[0], 6, repetition_penalty=1.3), _seq(tok, PROMPTS[1], 6)])
    assert counts["host"] == 5    # 6 tokens: the first from prefill, 5 decode steps on host sampling


def test_the_next_step_is_launched_before_this_one_is_delivered(loaded):
    """The overlap: from the second decode turn on, each turn launches the next step and only
    then delivers the tokens it read, and the answer is still the synchronous path's."""
    import torch

    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=2, context_length=128, cuda_graphs="on", graph_min_len=16)
    events = []
    launch, deliver = engine.graphs.launch, engine._deliver
    engine.graphs.launch = lambda rows, inputs=None: events.append("launch") or launch(rows, inputs)
    engine._deliver = lambda rows, picks: (events.append(f"deliver {len(rows)}") if rows else None,
                                           deliver(rows, picks))
    seq = _seq(tok, PROMPTS[0], 6, ignore_eos=True)
    with torch.inference_mode():
        engine._step([seq])                  # prefill (first token) + the first step launched
        while engine.rows or engine.in_flight is not None:
            engine._step([])
    # 6 tokens: the first from prefill, 5 from decode steps; the step launched with the 6th
    # token's delivery is the one computed for nothing (the row ends in that delivery)
    assert events == ["launch"] + ["launch", "deliver 1"] * 5
    assert engine.steps == 6 and engine.graphs.eager_steps == 6
    assert seq.finish_reason == "length"
    assert [seq.output_ids] == _run(SlotEngine(model, max_batch=2, context_length=128, cuda_graphs="off"),
                                    [_seq(tok, PROMPTS[0], 6, ignore_eos=True)])


def test_sample_on_device_draws_from_the_softmax_and_flags_bad_rows():
    import torch

    from kaito_core.runtime.graphs import sample_on_device

    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n = 4000
    logits = probs.log().repeat(n + 4, 1)
    logits[-1, 0] = float("nan")
    temperature = torch.cat([torch.full((n // 2,), 1.0), torch.full((n // 2,), 0.5), torch.zeros(4)])
    banned = torch.full((n + 4, 2), 4)            # 4 = the dummy column: nothing banned
    banned[-3, 0] = 3                              # greedy with its argmax banned -> the next best
    banned[-2] = torch.tensor([0, 1])
    logits[-2, 2:] = float("-inf")                 # everything else banned: nothing to sample
    out = torch.empty(n + 4, dtype=torch.long)
    sample_on_device(logits, temperature, banned, out, sampling=True)
    hot = torch.bincount(out[:n // 2], minlength=4).float() / (n // 2)
    cool = torch.bincount(out[n // 2:n], minlength=4).float() / (n // 2)
    torch.testing.assert_close(hot, probs, atol=0.03, rtol=0)
    torch.testing.assert_close(cool, probs ** 2 / (probs ** 2).sum(), atol=0.03, rtol=0)
    assert out[n:].tolist() == [3, 2, -1, -1]
    greedy = torch.empty(n + 4, dtype=torch.long)
    sample_on_device(logits, temperature, banned, greedy, sampling=False)
    assert set(greedy[:n].tolist()) == {3}


def test_which_rows_sample_on_the_device(loaded):
    from kaito_core.runtime.graphs import MAX_BANNED, samples_on_device

    _, tok = loaded["llama"]
    yes = [{}, {"temperature": 0.7}, {"temperature": 0.0, "top_p": 0.5}, {"top_k": 1, "temperature": 1.0},
           {"ignore_eos": True}, {"min_tokens": 3, "stop_token_ids": [5, 6]}]
    no = [{"repetition_penalty": 1.1}, {"presence_penalty": 0.5}, {"logit_bias": {3: 1.0}}, {"seed": 7},
          {"temperature": 0.7, "top_p": 0.9}, {"temperature": 0.7, "min_p": 0.1}, {"logprobs": 2},
          {"min_tokens": 3, "stop_token_ids": list(range(10, 10 + MAX_BANNED))}]
    assert all(samples_on_device(_seq(tok, [1], 4, **p), 512) for p in yes)
    assert not any(samples_on_device(_seq(tok, [1], 4, **p), 512) for p in no)


def test_modes_and_bad_values(loaded, monkeypatch):
    import torch

    from kaito_core.runtime.graphs import DecodeGraphs, buckets, static_decode_wanted
    from kaito_core.runtime.options import OptionsError

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert static_decode_wanted("auto", gpu) and not static_decode_wanted("auto", cpu)
    assert static_decode_wanted("on", cpu) and not static_decode_wanted("off", gpu)
    monkeypatch.setenv("KAITO_CUDA_GRAPHS", "ON")
    assert static_decode_wanted(None, cpu)
    model, _ = loaded["llama"]
    monkeypatch.setenv("KAITO_CUDA_GRAPHS", "maybe")
    with pytest.raises(OptionsError, match=r"\$KAITO_CUDA_GRAPHS is 'maybe', expected one of \['auto', 'on', 'off'\]"):
        SlotEngine(model, max_batch=2, context_length=64)
    with pytest.raises(OptionsError, match="--cuda-graphs is 'yes'"):
        SlotEngine(model, max_batch=2, context_length=64, cuda_graphs="yes")
    monkeypatch.delenv("KAITO_CUDA_GRAPHS")
    assert SlotEngine(model, max_batch=2, context_length=64).graphs is None    # auto on CPU: off
    engine = SlotEngine(model, max_batch=2, context_length=64, cuda_graphs="on")
    assert engine.store.capacity == 65                  # the whole context, preallocated
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        DecodeGraphs(model, engine.store, engine.slot_cache, max_batch=2, mask_dtype=None, capture=True)
    assert buckets(12) == [1, 2, 4, 8, 12] and buckets(513, floor=64) == [64, 128, 256, 512, 513]


def test_another_model_object_or_adapter_rows_take_the_dynamic_path(loaded):
    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=2, context_length=64, cuda_graphs="on")
    g = engine.graphs
    g.graphs[(1, 64, False)] = "a captured graph"
    assert g.usable(model, {}) and g.graphs
    assert not g.usable(model, {"adapter_names": ["__base__"]})
    assert not g.usable(object(), {})                   # e.g. the PeftModel after an adapter load
    assert g.usable(model, {}) and not g.graphs         # back to the base model: graphs re-captured


def test_warm_up_runs_every_bucket_with_padding_rows_only(loaded):
    """What the engine does first on CUDA (there it captures): allocate the KV buffers, then run
    every bucket's step with padding rows only; only scratch columns are written, and the answers
    that follow are unchanged."""
    import torch

    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=4, context_length=128, cuda_graphs="on", graph_min_len=32)
    with torch.inference_mode():
        engine._capture_graphs()
    store, graphs = engine.store, engine.graphs
    assert graphs.seen == {(b, length, False) for b in (1, 2, 4) for length in (32, 64, 128, 129)}
    for t in [*store.keys.values(), *store.values.values()]:
        assert t.shape[2] == 129 and not t[:, :, :store.scratch].any() and t[:, :, store.scratch].any()
    seqs = [_seq(tok, p, n, ignore_eos=True) for p, n in zip(PROMPTS[:5], [12, 20, 6, 15, 9])]
    ours = _run(engine, seqs, stagger=0.002)
    dynamic = _run(SlotEngine(model, max_batch=4, context_length=128, cuda_graphs="off"),
                   [_seq(tok, p, n, ignore_eos=True) for p, n in zip(PROMPTS[:5], [12, 20, 6, 15, 9])], 0.002)
    assert ours == dynamic


def test_a_failed_preparation_falls_back_to_growing_buffers(loaded, monkeypatch):
    """On CUDA the engine prepares the static step first; if that fails (out of memory for the whole
    context in every slot), it serves with the dynamic decode and growing buffers."""
    import torch

    model, tok = loaded["llama"]
    engine = SlotEngine(model, max_batch=2, context_length=512, cuda_graphs="on")
    assert engine.store.capacity == 513

    def no_memory():
        raise MemoryError("the KV buffers for the whole context do not fit")

    monkeypatch.setattr(engine.graphs, "warm_up", no_memory)
    with torch.inference_mode():
        engine._capture_graphs()
    assert engine.graphs is None and engine.store.capacity == 257 and not engine.store.keys
    ours = _run(engine, [_seq(tok, PROMPTS[2], 9, ignore_eos=True)])
    assert ours == _run(SlotEngine(model, max_batch=2, context_length=512, cuda_graphs="off"),
                        [_seq(tok, PROMPTS[2], 9, ignore_eos=True)])
    # started with an adapter already loaded: the engine's model is another object (a PeftModel)
    wrapped = SlotEngine(model, max_batch=2, context_length=512, cuda_graphs="on")
    wrapped.model = loaded["phi3"][0]
    with torch.inference_mode():
        wrapped._capture_graphs()
    assert wrapped.graphs is None and wrapped.store.capacity == 257


def test_served_over_http_with_the_static_step(make_server, tiny_models, adapters, monkeypatch):
    """``kaito serve`` with ``KAITO_CUDA_GRAPHS=on``, driven by the OpenAI client: the same greedy
    answers as the dynamic decode; once a LoRA adapter is loaded (the engine's model becomes a
    PeftModel) steps take the dynamic path, adapter and base rows alike."""
    import concurrent.futures as cf

    import httpx
    from openai import OpenAI

    def start(mode):
        monkeypatch.setenv("KAITO_CUDA_GRAPHS", mode)
        return make_server(model=str(tiny_models["llama"]), served_model_name="tiny-llama", max_batch=4,
                           api_key="k")

    static, dynamic = start("on"), start("off")
    graphs = static.service.engine.graphs
    assert graphs is not None and dynamic.service.engine.graphs is None
    prompts = ["The quick brown fox", "def add(a, b):", "Hello! How can I", "Kubernetes schedules pods",
               "LoRA adapters add", "Numbers: 1 2 3"]

    def answers(url, model, temperature=0.0):
        client = OpenAI(base_url=url + "/v1", api_key="k")

        def one(prompt):
            r = client.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=temperature,
                                          extra_body={"ignore_eos": True})
            assert r.usage.completion_tokens == 12
            return r.choices[0].text

        with cf.ThreadPoolExecutor(len(prompts)) as pool:
            return list(pool.map(one, prompts))

    base = answers(static.url, "tiny-llama")
    assert base == answers(dynamic.url, "tiny-llama")
    answers(static.url, "tiny-llama", temperature=0.8)       # sampled on the device, 12 tokens each
    steps = static.service.engine.steps
    assert steps <= graphs.eager_steps <= steps + 1 and steps > 0     # + the one launched ahead, if unread
    assert any(sampling for _, _, sampling in graphs.seen)
    for srv in (static, dynamic):
        r = httpx.post(srv.url + "/admin/adapters", json={"name": "sql", "source": str(adapters["sql"])},
                       headers={"Authorization": "Bearer k"})
        assert r.status_code == 201, r.text
    before = graphs.eager_steps
    sql = answers(static.url, "sql")
    assert sql == answers(dynamic.url, "sql") and sql != base
    assert answers(static.url, "tiny-llama") == base
    assert graphs.eager_steps == before


def test_on_a_gpu_captured_graphs_replay_every_decode_step(tiny_models):
    """Needs a CUDA GPU (skipped elsewhere, and then nothing above proves the capture itself): the
    captured graphs give the dynamic path's answers, every decode step is a replay, and the step
    launches with CUDA's sync debugging set to fail on any host sync."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: torch.cuda.graph capture and replay")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).to("cuda").eval()
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    engine = SlotEngine(model, max_batch=8, context_length=512, chunk_tokens=48, graph_min_len=16)  # auto: graphs
    assert engine.graphs is not None and engine.graphs.capture
    ours = _run(engine, _greedy(tok), stagger=None)
    dynamic = _run(SlotEngine(model, max_batch=8, context_length=512, chunk_tokens=48, cuda_graphs="off"),
                   _greedy(tok), stagger=None)
    graphs = engine.graphs
    assert ours == dynamic
    assert graphs.captures >= len(graphs.batch_sizes) * len(graphs.lengths) and graphs.eager_steps == 0
    assert engine.steps <= graphs.replays <= engine.steps + 1 and engine.steps > 0
    live = [_seq(tok, p, 50) for p in PROMPTS[:3]]
    engine.stopping = False
    _prime(engine, live)     # slots 0..2 hold three fresh rows
    with torch.inference_mode():
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            assert graphs.launch(live)     # filling the pinned buffers, the copies, the replay
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert graphs.ids[:3].tolist() == graphs.logits[:3].argmax(-1).tolist()


def test_the_cuda_graphs_flag_reaches_the_engine(loaded, tmp_path, monkeypatch):
    """`kaito serve --cuda-graphs` (and the config key) chooses the decode path the engine runs;
    a bad value is refused naming the flag."""
    from types import SimpleNamespace

    from kaito_core.runtime.options import OptionsError, ServeOptions, build_parser, options_from_args
    from kaito_core.runtime.service import make_engine

    monkeypatch.delenv("KAITO_CUDA_GRAPHS", raising=False)
    model, _ = loaded["llama"]
    ld = SimpleNamespace(model=model, context_length=256)
    on = make_engine(ServeOptions(model="m", max_batch=2, cuda_graphs="on"), ld, None, None)
    off = make_engine(ServeOptions(model="m", max_batch=2, cuda_graphs="off"), ld, None, None)
    auto = make_engine(ServeOptions(model="m", max_batch=2), ld, None, None)
    assert on.graphs is not None and off.graphs is None and auto.graphs is None  # auto on CPU: eager
    with pytest.raises(OptionsError, match="--cuda-graphs is 'yes'"):
        ServeOptions(model="m", cuda_graphs="yes")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "m", "--cuda-graphs", "yes"])
    assert options_from_args(build_parser().parse_args(["--model", "m", "--cuda-graphs", "on"])).cuda_graphs == "on"
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text("transformers:\n  cuda_graphs: 'off'\n")
    args = build_parser().parse_args(["--model", "m", "--config", str(cfg)])
    assert options_from_args(args).cuda_graphs == "off"
