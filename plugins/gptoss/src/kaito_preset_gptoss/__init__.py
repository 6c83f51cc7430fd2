"""kaito presets for OpenAI's gpt-oss-20b and gpt-oss-120b (mixture-of-experts, MXFP4 weights).

Facts (pinned commits, tags, shapes, sizes, engine arguments) come from upstream KAITO v0.12's
``supported_models.yaml`` and ``model_catalog.yaml``; the presets live in
:mod:`kaito_preset_gptoss.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_gptoss.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
