"""kaito presets for TII's Falcon family (shapes from the models' config.json, upstream sizes).

The presets live in :mod:`kaito_preset_falcon.presets`.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_preset_falcon.presets import PRESETS

__all__ = ["PRESETS", "kaito_register_presets"]


@hookimpl
def kaito_register_presets(register):
    for preset in PRESETS:
        register(preset)
