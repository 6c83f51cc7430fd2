"""kaito presets for Microsoft's Phi-3, Phi-3.5 and Phi-4 families.

Facts (pinned commits, tags, shapes, sizes) come from upstream KAITO v0.12's catalog; the
presets themselves live in :mod:`kaito_preset_phi3.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_phi3.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
