"""Errors a tuning run raises on purpose: each names what was wrong, where, and the fix."""

from __future__ import annotations

from typing import Iterable

from kaito_core.errors import FieldError, KaitoError


class TuningError(KaitoError):
    """Base class: the tuning run stopped and nothing was published."""


class TuningConfigError(TuningError, ValueError):
    """``training_config.yaml`` (or flags) has problems; all of them are listed."""

    def __init__(self, source: str, errors: Iterable[FieldError]):
        self.source = source
        self.errors = list(errors)
        lines = "\n".join(f"  - {e}" for e in self.errors)
        n = len(self.errors)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} in the tuning configuration:\n{lines}")


class DataError(TuningError, ValueError):
    """The training data cannot be used (unreadable file, wrong columns, malformed row, empty)."""


class FetchError(TuningError, OSError):
    """An input could not be downloaded or pulled (refused URL, HTTP error, too large...)."""


class OutputError(TuningError, OSError):
    """The adapter could not be written or pushed; nothing half-written is left looking complete."""


class TrainingFailed(TuningError, RuntimeError):
    """Training ran but produced no usable adapter (zero gradients, NaN loss...)."""
