"""Token ids -> text, one token at a time, with stop strings held back until they can't match.

The detokenizer decodes a small window (TGI's prefix/read offsets) instead of the whole
output each step, and waits while the text ends in U+FFFD (a multi-byte character split
across tokens). The stop matcher never emits text that could still turn out to be the start
of a stop string, so a streamed answer never shows a stop sequence, even in pieces.
"""

from __future__ import annotations

from typing import Any, Sequence


class Detokenizer:
    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        """Append one token; return the text it completes (maybe empty)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            delta = full[len(prefix):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return delta
        return ""

    def flush(self) -> str:
        """Text of tokens still held back (an incomplete character at the very end)."""
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""


class StopMatcher:
    """Cuts the output at the first stop string; holds back a possible partial match."""

    def __init__(self, stops: Sequence[str], include: bool = False):
        self.stops = [s for s in stops if s]
        self.include = include  # vLLM's include_stop_str_in_output: the stop string ends the text
        self.emitted = ""      # text already handed out
        self.pending = ""      # text held back: it may be the start of a stop string
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add text; return what is safe to emit now. Sets ``stopped`` when a stop string appears."""
        if self.stopped or not delta:
            return ""
        if not self.stops:
            self.emitted += delta
            return delta
        full = self.pending + delta
        # Emitted text never ends with the start of a stop string (that part is held in
        # ``pending``), so a match can only begin inside ``full``.
        found = [(i, s) for i, s in ((full.find(s), s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            at, stop = min(found, key=lambda f: f[0])  # the earliest; on a tie, the first listed
            out = full[:at + len(stop) if self.include else at]
            self.pending = ""
            self.emitted += out
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(full)), 0, -1):
                if full.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = full[:len(full) - hold]
        self.pending = full[len(full) - hold:]
        self.emitted += out
        return out

    def finish(self) -> str:
        """The generation ended without a stop string: release what was held back."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        self.emitted += out
        return out
