"""Examples -> token ids and labels: chat template applied, loss only on assistant tokens.

The assistant spans are found by rendering the conversation turn by turn: the text the
template adds for assistant turn *i* is ``render(messages[:i+1])`` minus
``render(messages[:i], add_generation_prompt=True)``. Tokens whose characters fall in those
spans get labels; every other token (system, user, the template's headers) gets -100, so the
model learns to answer, not to write the user's questions. Plain texts learn every token.
"""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from kaito_core.tuning.data import Example
from kaito_core.api.training.errors import DataError

IGNORE = -100


def resolve_chat_template(configured: str | None, tokenizer: Any, preset_template: str | None) -> tuple[str | None, str]:
    """The template to use and where it came from: ModelConfig.chat_template (inline or a file,
    as upstream), else the tokenizer's own, else the preset's."""
    if configured:
        if any(c in configured for c in "{}\n"):
            # "\n" written as two characters in a one-line YAML string: decode the escapes only
            # (codecs' unicode_escape alone reads the text as Latin-1 and turns "café" or
            # DeepSeek's "<｜User｜>" into mojibake, which would then never match a token).
            text = configured.encode("latin-1", "backslashreplace").decode("unicode_escape") \
                if "\\n" in configured else configured
            return text, "ModelConfig.chat_template"
        path = Path(configured)
        if not path.is_file():
            raise DataError(f"ModelConfig.chat_template {configured!r}: neither a template nor a readable file")
        return path.read_text(encoding="utf-8"), f"ModelConfig.chat_template file {configured}"
    if getattr(tokenizer, "chat_template", None):
        return None, "the tokenizer"
    if preset_template:
        return preset_template, "the preset"
    return None, ""


def _render(tokenizer: Any, messages: Sequence[dict], *, gen: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=gen)


def assistant_spans(tokenizer: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    full = _render(tokenizer, messages, gen=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], gen=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], gen=False)
        if i and upto.startswith(before) and full.startswith(upto):
            spans.append((len(before), len(upto)))
            cursor = len(upto)
            continue
        # A template that is not prefix-stable (it rewrites earlier turns): find the content.
        at = full.find(m["content"], cursor)
        if at < 0:
            continue
        end = at + len(m["content"])
        spans.append((at, end))
        cursor = end
    return full, spans


def _template_problem(exc: Exception, ex: Example) -> str | None:
    """What a chat template's error says (None: not a template error). A template that is not
    valid Jinja stops the run whatever the rows; one that refuses a conversation
    (``raise_exception('Conversation roles must alternate ...')``, as Llama 2 and Mistral
    templates do for a system or tool turn) is that row's problem."""
    from jinja2 import TemplateError, TemplateSyntaxError

    if isinstance(exc, TemplateSyntaxError):
        raise DataError(f"the chat template is not valid Jinja (line {exc.lineno}: {exc.message}); fix "
                        "ModelConfig.chat_template") from None
    if not isinstance(exc, TemplateError):
        return None
    roles = ",".join(m["role"] for m in ex.messages or ())
    return f"the chat template refused this conversation (roles {roles}): {exc}"


def _call_name(call: Any) -> str | None:
    fn = call.get("function") if isinstance(call, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) and name else None


def _check_tool_calls(ex: Example, text: str) -> None:
    """A template that ignores ``tool_calls`` renders the turn empty: training on it would teach
    the model to answer nothing where it should call a tool."""
    for k, m in enumerate(ex.messages or ()):
        for call in m.get("tool_calls") or ():
            name = _call_name(call)
            if name is None:
                raise DataError(f"{ex.source}: message {k} has a tool call without function.name; expected "
                                "{type: function, function: {name, arguments}}")
            if name not in text:
                raise DataError(f"{ex.source}: the chat template does not render tool_calls (message {k} calls "
                                f"{name!r}, which the rendered conversation never mentions); set "
                                "ModelConfig.chat_template to a template that renders tool calls, or remove "
                                "tool-call turns from the data")


class Encoder:
    def __init__(self, tokenizer: Any, max_length: int, *, skip_malformed: bool = False):
        self.tok = tokenizer
        self.max_length = max_length
        self.skip_malformed = skip_malformed
        self.skipped: Counter = Counter()
        self.first_skipped: list[str] = []
        self.truncated = 0

    def _skip(self, ex: Example, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.first_skipped) < 5:
            self.first_skipped.append(f"{ex.source}: {reason}")

    def encode(self, ex: Example) -> dict[str, list[int]] | None:
        if ex.messages is not None:
            if not getattr(self.tok, "chat_template", None):
                raise DataError(f"{ex.source}: chat records need a chat template, and the tokenizer has none; "
                                "set ModelConfig.chat_template")
            try:
                text, spans = assistant_spans(self.tok, ex.messages)
            except Exception as exc:  # noqa: BLE001 - jinja2's errors, raised from the user's template
                reason = _template_problem(exc, ex)
                if reason is None:
                    raise
                if not self.skip_malformed:
                    raise DataError(f"{ex.source}: {reason}. Fix the template (ModelConfig.chat_template) or "
                                    "the record, or set DatasetConfig.skip_malformed_rows: true to skip such "
                                    "rows") from None
                self._skip(ex, reason)
                return None
            _check_tool_calls(ex, text)
        else:
            eos = self.tok.eos_token or ""
            text = ex.text + (eos if eos and not ex.text.endswith(eos) else "")
            spans = [(0, len(text))]
        ids, labels = self._tokenize(text, spans)
        if len(ids) > self.max_length:
            self.truncated += 1
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        if not any(label != IGNORE for label in labels):
            self._skip(ex, "no assistant tokens within max_seq_length" if ex.messages is not None
                       else "no tokens")
            return None
        # int32 arrays: 4 bytes a token instead of a list's 8-byte pointer to a 28-byte int
        return {"input_ids": array("i", ids), "labels": array("i", labels)}

    def _tokenize(self, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        if getattr(self.tok, "is_fast", False):
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(enc["input_ids"])
            labels = []
            for tid, (s, e) in zip(ids, enc["offset_mapping"]):
                inside = any(s < b and e > a for a, b in spans) if e > s else False
                labels.append(tid if inside else IGNORE)
            return ids, labels
        # Slow tokenizers have no offsets: tokenize the pieces one by one.
        ids, labels, pos = [], [], 0
        for a, b in sorted(spans):
            for piece, learn in ((text[pos:a], False), (text[a:b], True)):
                if piece:
                    t = self.tok(piece, add_special_tokens=False)["input_ids"]
                    ids.extend(t)
                    labels.extend(t if learn else [IGNORE] * len(t))
            pos = b
        if pos < len(text):
            t = self.tok(text[pos:], add_special_tokens=False)["input_ids"]
            ids.extend(t)
            labels.extend([IGNORE] * len(t))
        return ids, labels

    def encode_all(self, examples: Iterable[Example]) -> list[dict[str, Any]]:
        """Encode a list or a stream of examples (rows that end up with nothing to learn are skipped)."""
        out = []
        for ex in examples:
            item = self.encode(ex)
            if item is not None:
                out.append(item)
        return out


def keep_label_logits(batch: dict[str, Any]) -> dict[str, Any]:
    """Let the LM head run only where some row predicts a label.

    Only assistant tokens carry labels, so most positions' logits (``[tokens, vocab]``, the
    largest activation of a small model with a large vocabulary) feed nothing but a masked-out
    loss term. transformers' causal LMs take ``logits_to_keep`` (positions) and pass
    ``shift_labels`` (the targets already shifted) to ``ForCausalLMLoss``; on the kept positions
    the loss is the same sum over the same targets, divided by the same count, so what is
    learned does not change (tests/tuning/test_packing.py compares loss and gradients)."""
    import torch

    labels = batch["labels"]
    shifted = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE)
    keep = (shifted != IGNORE).any(0).nonzero().squeeze(1)
    if 0 < keep.numel() < labels.shape[1]:
        batch["logits_to_keep"] = keep
        batch["shift_labels"] = shifted[:, keep].contiguous()
    return batch


class PadCollator:
    """Pads a batch to its longest row (optionally to a multiple); padded labels are ignored.
    ``label_logits_only``: see :func:`keep_label_logits`."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None, label_logits_only: bool = False):
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of
        self.label_logits_only = label_logits_only

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        n = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            n = -(-n // self.multiple) * self.multiple
        ids = torch.full((len(rows), n), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"], dtype=torch.long)
            labels[i, :k] = torch.tensor(r["labels"], dtype=torch.long)
            mask[i, :k] = 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        return keep_label_logits(batch) if self.label_logits_only else batch
