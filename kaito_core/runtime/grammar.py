"""JSON mode (and vLLM's regex, choice and grammar constraints) for the transformers engine: a
request's output constraint as a token mask per step.

The grammar library is llguidance (the one vLLM uses for ``--structured-outputs-config.backend
guidance``): a JSON Schema (or a regex, a list of choices, a Lark/GBNF grammar) compiles into an
``LLMatcher`` that, at every step, says which tokens may come next (a bitmask over the
vocabulary) and is advanced with the token actually sampled.

- :class:`Grammars` (one per loaded model) compiles constraints on a worker thread, never on the
  event loop nor the engine thread: building the tokenizer's trie (about a second for a 128k
  vocabulary) and a large schema's grammar can take that long. Compiled matchers are cached by
  schema (LRU) and deep-copied per choice, as each choice advances its own state.
- :func:`constrain` (engine thread, once per step and only when a row has a matcher) fills the
  bitmasks of the constrained rows in one GIL-free llguidance call and sets the logits of every
  forbidden token to -inf before sampling, as vLLM applies its grammar bitmask to the logits
  before its sampler (so log-probabilities, too, are those of the masked logits).
- :meth:`RowGrammar.advance` feeds the sampled token; a row whose grammar is complete (no token
  but the end token could follow) finishes with ``stop`` at once.

A schema llguidance rejects is a 400 naming the field it came from; a matcher that breaks
mid-generation fails its own row only (the engine's per-row isolation).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from typing import Any

import torch

from kaito_core.runtime.constraints import Constraint
from kaito_core.runtime.errors import APIError

MAX_CACHED = 128            # compiled grammars kept (each holds its lexer tables)
# ... and at most this much schema text among them: a compiled grammar's tables grow with its
# spec (measured: a 600 KB enum of 60,000 values holds 22 MB), so 128 hostile schemas near the
# body limit would have kept gigabytes; typical schemas of a few KB still fill all 128 places
MAX_CACHED_SPEC_BYTES = 4 * 2**20
# vLLM's default (disable_any_whitespace False): whitespace between JSON tokens is allowed, so a
# model that writes pretty-printed JSON is not pushed off its usual distribution.
# ``disable_any_whitespace`` (per request here; server-wide in vLLM too) makes the JSON compact.
_FLEXIBLE = {"whitespace_flexible": True}
_COMPACT = {"whitespace_flexible": False}
_ANY_OBJECT = {"type": "object"}
_WHAT = {"regex": "a regular expression this server can follow", "choice": "a list of choices this server can follow",
         "grammar": "a grammar this server can follow"}
_HELP = {"json_schema": "https://json-schema.org/", "json_object": "https://json-schema.org/",
         "regex": "Rust regex syntax, https://docs.rs/regex", "choice": "non-empty strings",
         "grammar": "Lark or GBNF, https://github.com/guidance-ai/llguidance/blob/main/docs/syntax.md"}


def _llguidance(constraint: Constraint) -> Any:
    try:
        import llguidance
        import llguidance.hf  # noqa: F401 - from_tokenizer
    except ImportError as exc:
        raise APIError(400, f"'{constraint.param}': constrained output (JSON mode) needs the llguidance package, "
                            f"which this server cannot import ({exc}); install the runtime extra "
                            "(pip install 'kaito-core[runtime]') or leave the constraint out", param=constraint.param,
                       code="unsupported_parameter") from None
    return llguidance


def _short(error: str, limit: int = 300) -> str:
    """llguidance's parser errors end with the whole grammar: keep the part a person reads."""
    error = (error or "unknown error").split("<grammar>")[0].split("<state>")[0].strip()
    return error if len(error) <= limit else error[:limit - 3] + "..."


class RowGrammar:
    """One sequence's matcher (engine thread only, once created)."""

    __slots__ = ("matcher", "words")

    def __init__(self, matcher: Any, words: int):
        self.matcher = matcher
        self.words = words          # int32 words of its bitmask: ceil(vocab / 32)

    def advance(self, token: int) -> str | None:
        """Feed the sampled token: None while generation goes on, "stop" once the grammar is
        complete, or an error message (this row alone fails)."""
        if not self.matcher.consume_token(token):
            return f"grammar failed: token {token} was refused: {_short(self.matcher.get_error())}"
        if self.matcher.is_error():  # stopped by an error (llguidance's InternalError), not complete
            return f"grammar failed: {_short(self.matcher.get_error())}"
        return "stop" if self.matcher.is_stopped() else None


class Grammars:
    """Compiles constraints for one tokenizer; safe to call from several worker threads."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: frozenset[int], compact: bool = False):
        self.tokenizer = tokenizer
        self.compact = compact      # --disable-any-whitespace: compact JSON whatever the request says
        self.vocab_size = vocab_size
        self.eos_ids = sorted(eos_ids)
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._cache: OrderedDict[str, Any] = OrderedDict()   # key -> compiled matcher, or why not (str)
        self._cached_bytes = 0      # total length of the cache's keys

    def _ll(self, llg: Any, constraint: Constraint) -> Any:
        with self._lock:
            if self._ll_tokenizer is None:
                try:
                    # the logits may be wider than the tokenizer (padded vocabularies): the mask
                    # covers both, and ids the tokenizer lacks are never allowed
                    self._ll_tokenizer = llg.hf.from_tokenizer(
                        self.tokenizer, n_vocab=max(self.vocab_size, len(self.tokenizer)),
                        eos_token=self.eos_ids or None)
                except Exception as exc:  # noqa: BLE001 - e.g. a slow (Python) tokenizer
                    raise APIError(400, f"'{constraint.param}': constrained output is not available for this "
                                        f"model's tokenizer ({type(exc).__name__}: {exc}); leave it out",
                                   param=constraint.param, code="unsupported_parameter") from None
            return self._ll_tokenizer

    def compile(self, constraint: Constraint) -> Any:
        """The constraint's compiled matcher in its start state (cached); an :class:`APIError`
        (400, naming ``constraint.param``) when it cannot be compiled."""
        llg = _llguidance(constraint)
        ll_tok = self._ll(llg, constraint)
        spec = constraint.spec if constraint.kind != "json_object" else _ANY_OBJECT
        if self.compact and not constraint.compact:
            constraint = dataclasses.replace(constraint, compact=True)
        try:
            key = json.dumps([constraint.kind, constraint.compact, spec], sort_keys=True, separators=(",", ":"))
        except (RecursionError, ValueError) as exc:  # nested past the interpreter's limit (or a cycle)
            raise APIError(400, f"'{constraint.param}' nests too deeply to be compiled ({type(exc).__name__}); "
                                "flatten the schema or use $defs and $ref", param=constraint.param,
                           code="invalid_schema") from None
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
        if hit is None:
            hit = self._build(llg, ll_tok, constraint.kind, spec, _COMPACT if constraint.compact else _FLEXIBLE)
            if not isinstance(hit, str):
                hit = _rehearse(hit, self.eos_ids) or hit
            self._keep(key, hit)
        if isinstance(hit, str):  # a refused constraint is cached too: resending it costs no compile
            what = _WHAT.get(constraint.kind, "a JSON Schema this server can follow")
            raise APIError(400, f"'{constraint.param}' is not {what}: {hit}; fix it ({_HELP[constraint.kind]})",
                           param=constraint.param, code="invalid_schema" if "json" in constraint.kind
                           else "invalid_grammar")
        return hit

    def _keep(self, key: str, compiled: Any) -> None:
        """Cache ``compiled`` under ``key``, evicting the least recently used entries beyond
        :data:`MAX_CACHED` entries or :data:`MAX_CACHED_SPEC_BYTES` of keys."""
        with self._lock:
            if key not in self._cache:
                self._cached_bytes += len(key)
            self._cache[key] = compiled
            while self._cache and (len(self._cache) > MAX_CACHED or self._cached_bytes > MAX_CACHED_SPEC_BYTES):
                old, _ = self._cache.popitem(last=False)
                self._cached_bytes -= len(old)

    @staticmethod
    def _build(llg: Any, ll_tok: Any, kind: str, spec: Any, options: dict) -> Any:
        """A matcher, or why the spec cannot become one (a string)."""
        try:
            if kind in ("json_schema", "json_object"):
                grammar = llg.LLMatcher.grammar_from_json_schema(spec, defaults=options)
            elif kind == "regex":
                grammar = llg.LLMatcher.grammar_from_regex(spec)
            elif kind == "choice":
                # one lexeme (a terminal) of alternatives: as a rule of alternatives, more than
                # 2000 choices overflowed the parser's row limit ("Current row has 4097 items;
                # consider making your grammar left-recursive"), though 4096 are allowed
                grammar = llg.LLMatcher.grammar_from_lark("start: CHOICE\nCHOICE: "
                                                          + " | ".join(json.dumps(c) for c in spec))
            else:
                grammar = llg.grammar_from("grammar", spec)  # Lark, or GBNF converted to Lark
            error = llg.LLMatcher.validate_grammar(grammar, ll_tok)
        except Exception as exc:  # noqa: BLE001 - whatever the spec makes llguidance raise, it is a 400
            error = f"{type(exc).__name__}: {exc}"
        if not error:
            matcher = llg.LLMatcher(ll_tok, grammar, log_level=0)  # drops the GIL while it builds
            error = matcher.get_error() if matcher.is_error() else ""
            if not error:
                return matcher
        return _short(error)

    def rows(self, constraint: Constraint | None, n: int) -> list[RowGrammar | None]:
        """``n`` independent matchers (one per choice), or ``n`` Nones without a constraint."""
        if constraint is None:
            return [None] * n
        template = self.compile(constraint)
        words = (int(self._ll_tokenizer.vocab_size) + 31) // 32
        return [RowGrammar(template.deep_copy(), words) for _ in range(n)]


def _rehearse(template: Any, eos_ids: list[int]) -> str | None:
    """Why ``template`` breaks at its first steps (a string), or None. llguidance builds its
    lexer lazily, in the first mask computations, on whichever thread asks: for ``a{1000000}``
    that took 0.4-1.4 s and then failed at the first token, stalling every stream of the batch
    on the engine thread. Done here, on the compiling worker (llguidance drops the GIL), the
    build is shared by every copy of the template, and a constraint that cannot be followed
    is a 400 before it reaches the batch."""
    mask = template.compute_bitmask()
    if template.is_error():
        return _short(template.get_error())
    allowed = int.from_bytes(mask, "little")
    for eos in eos_ids:
        allowed &= ~(1 << eos)
    if not allowed:
        return None
    trial = template.deep_copy()
    first = (allowed & -allowed).bit_length() - 1   # the lowest token id the grammar allows
    if trial.consume_token(first) and not trial.is_error():
        trial.compute_bitmask()
    return _short(trial.get_error()) if trial.is_error() else None


_EXECUTOR: list[Any] = []
_BITS: dict[Any, torch.Tensor] = {}


def _bits(device: Any) -> torch.Tensor:
    """0..31 on ``device`` (kept, so a GPU step uploads only the bitmask)."""
    if device not in _BITS:
        _BITS[device] = torch.arange(32, dtype=torch.int32, device=device)
    return _BITS[device]


def _executor() -> Any:
    """llguidance's thread pool for computing a batch of masks in one call (engine thread)."""
    if not _EXECUTOR:
        import llguidance

        _EXECUTOR.append(llguidance.LLExecutor())
    return _EXECUTOR[0]


def constrain(logits: torch.Tensor, rows: list[Any]) -> tuple[torch.Tensor, dict[int, str]]:
    """``logits`` ([rows, vocab]) with every token the rows' grammars forbid set to -inf (a new
    tensor; unconstrained rows untouched), and {row index: error} for rows whose matcher is
    broken. Call only when some row has a ``grammar``."""
    index = [i for i, r in enumerate(rows) if r.grammar is not None]
    failed: dict[int, str] = {}
    for i in index:
        m = rows[i].grammar.matcher
        if m.is_error():
            failed[i] = f"grammar failed: {_short(m.get_error())}"
    index = [i for i in index if i not in failed]
    if not index:
        return logits, failed
    words = rows[index[0]].grammar.words
    bitmask = torch.full((len(index), words), -1, dtype=torch.int32)
    _executor().unsafe_compute_mask_ptr([(rows[i].grammar.matcher, k) for k, i in enumerate(index)],
                                        bitmask.data_ptr(), words * 4, len(index))
    # a matcher can break while computing its mask (its lexer over llguidance's limits: every
    # copy of a template shares the lexer, so one row's failure reaches the others here); its
    # mask is then empty, and sampling from it would end the row as if the grammar were complete
    for i in index:
        if rows[i].grammar.matcher.is_error():
            failed[i] = f"grammar failed: {_short(rows[i].grammar.matcher.get_error())}"
    vocab = logits.shape[-1]
    bits = bitmask.to(logits.device, non_blocking=True).unsqueeze(-1) >> _bits(logits.device)
    allowed = (bits & 1).bool().reshape(len(index), words * 32)
    if allowed.shape[1] < vocab:   # logits wider than the grammar's vocabulary: the rest is banned
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]), value=False)
    allowed = allowed[:, :vocab]
    out = logits.clone()
    rows_t = torch.tensor(index, dtype=torch.long, device=logits.device)
    out[rows_t] = out[rows_t].masked_fill(~allowed, float("-inf"))
    return out, failed
