"""kaito presets for Mistral AI's Mistral 7B v0.3 (base and instruct), Ministral 3 (3B, 8B, 14B instruct) and Mistral Large 3 (675B instruct).

Facts (pinned commits, tags, shapes, sizes, engine arguments) come from upstream KAITO v0.12's
``supported_models.yaml`` and ``model_catalog.yaml``; the presets live in
:mod:`kaito_preset_mistral.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_mistral.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
