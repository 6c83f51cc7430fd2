"""docs/presets.md names every installed preset, every family plugin and every retired name."""

from __future__ import annotations

from pathlib import Path

from kaito_core import hints
from kaito_core.plugins import get_registry

DOC = (Path(__file__).resolve().parents[2] / "docs" / "presets.md").read_text()


def test_every_preset_family_and_retired_name_is_documented():
    reg = get_registry()
    for family in hints.FAMILIES:
        assert f"| `{family.entry}` |" in DOC
        for name in reg.plugins[family.entry].registered["presets"]:
            assert name in DOC, name
    for name, retired in hints.RETIRED.items():
        assert name in DOC and all(n in DOC for n in retired.instead)
