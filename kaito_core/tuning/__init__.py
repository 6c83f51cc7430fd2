"""LoRA/QLoRA tuning: what runs inside a tuning Job, behind ``kaito tune`` and in local mode.

    from kaito_core.tuning import run
    result = run(model_dir="weights/", method="qlora", data=["train.jsonl"], output="adapter/")
    result.summary["final_loss"]

Importing this package is cheap: torch, transformers, peft and bitsandbytes are imported
when a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaito_core.api.training.errors import (DataError, FetchError, OutputError, TrainingFailed, TuningConfigError,
                                      TuningError)

if TYPE_CHECKING:  # pragma: no cover
    from kaito_core.tuning.recipe import TuneRequest, TuneResult

__all__ = ["run", "TuneRequest", "TuneResult", "TuningError", "TuningConfigError", "DataError", "FetchError",
           "OutputError", "TrainingFailed", "parse_training_config"]


def run(request: "TuneRequest | None" = None, **kwargs: Any) -> "TuneResult":
    """Run one tuning job; see :class:`kaito_core.tuning.recipe.TuneRequest` for the arguments."""
    from kaito_core.tuning.recipe import run as _run

    return _run(request, **kwargs)


def parse_training_config(doc: Any, source: str = "training_config.yaml") -> dict:
    """Check a ``training_config.yaml`` (text, mapping or ConfigMap); raises TuningConfigError."""
    from kaito_core.api.training.config import parse_training_config as _parse

    return _parse(doc, source)


def __getattr__(name: str) -> Any:
    if name in ("TuneRequest", "TuneResult"):
        from kaito_core.tuning import recipe

        return getattr(recipe, name)
    raise AttributeError(name)
