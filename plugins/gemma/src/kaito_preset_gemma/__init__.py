"""kaito presets for Google's Gemma 3 4B and 27B instruction-tuned models.

Facts (pinned commits, tags, shapes, sizes, engine arguments) come from upstream KAITO v0.12's
``supported_models.yaml`` and ``model_catalog.yaml``; the presets live in
:mod:`kaito_preset_gemma.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_gemma.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
