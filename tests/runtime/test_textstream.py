"""Incremental detokenizing and stop strings (pure parts of the engine)."""

from __future__ import annotations

import pytest

from kaito_core.runtime.textstream import Detokenizer, StopMatcher


def feed_all(stops, pieces):
    m = StopMatcher(stops)
    out = [m.feed(p) for p in pieces]
    if not m.stopped:
        out.append(m.finish())
    return out, m.stopped


@pytest.mark.parametrize("stops,pieces,expected,stopped", [
    ([], ["ab", "cd"], "abcd", False),
    (["END"], ["hello E", "N", "D more"], "hello ", True),
    (["END"], ["hello E", "N", "x"], "hello ENx", False),
    (["\n\n", "###"], ["a\n", "\nb"], "a", True),
    (["stop"], ["sto", "p"], "", True),
    (["ab", "b"], ["xab"], "x", True),              # the earliest match wins
    (["END"], ["...EN"], "...EN", False),            # a held-back prefix is released at the end
])
def test_stop_matcher(stops, pieces, expected, stopped):
    out, did_stop = feed_all(stops, pieces)
    assert "".join(out) == expected
    assert did_stop is stopped


def test_stop_text_is_never_emitted_even_in_pieces():
    m = StopMatcher(["<|end|>"])
    emitted = [m.feed(c) for c in "answer<|end|>tail"]
    assert "".join(emitted) == "answer"
    assert all("<" not in e for e in emitted)


def test_detokenizer_waits_for_complete_characters(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    text = "naïve café 日本語 ok"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    d = Detokenizer(tok)
    pieces = [d.add(i) for i in ids] + [d.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize("stops,pieces,expected", [
    (["END"], ["hello E", "N", "D more"], "hello END"),
    (["ab", "b"], ["xab"], "xab"),                   # the earliest match, whole
    (["b", "ab"], ["xab"], "xab"),
    (["\n"], ["one\ntwo"], "one\n"),
])
def test_include_stop_str_in_output(stops, pieces, expected):
    m = StopMatcher(stops, include=True)
    assert "".join(m.feed(p) for p in pieces) == expected and m.stopped
