"""kaito presets for Meta's Llama 3.x family (facts from upstream KAITO v0.12's catalog).

Llama weights are gated: a Workspace must name ``presetOptions.modelAccessSecret`` (a Secret
with key ``HF_TOKEN``), and the weights are downloaded at run time, as upstream does. The
presets live in :mod:`kaito_preset_llama.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_llama.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
