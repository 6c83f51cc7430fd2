"""kaito presets for DeepSeek-R1-0528 and DeepSeek-V3-0324 (671B mixture-of-experts) and the R1 distills of Llama 8B and Qwen 14B.

Facts (pinned commits, tags, shapes, sizes, engine arguments) come from upstream KAITO v0.12's
``supported_models.yaml`` and ``model_catalog.yaml``; the presets live in
:mod:`kaito_preset_deepseek.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_deepseek.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
