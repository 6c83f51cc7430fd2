"""kaito presets for Alibaba's Qwen2.5-Coder 7B and 32B Instruct.

Facts (pinned commits, tags, shapes, sizes, engine arguments) come from upstream KAITO v0.12's
``supported_models.yaml`` and ``model_catalog.yaml``; the presets live in
:mod:`kaito_preset_qwen.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_qwen.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
