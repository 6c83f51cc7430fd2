"""Each preset plugin's copy of upstream's data (plugins/*/tests/data/reference.yaml) is current."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_core import hints

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "tests" / "data" / "reference"
SUPPORTED = {m["name"]: m for m in yaml.safe_load((REFERENCE / "supported_models.yaml").read_text())["models"]}
CATALOG = {m["name"]: m for m in yaml.safe_load((REFERENCE / "model_catalog.yaml").read_text())["models"]}


@pytest.mark.parametrize("family", [f.directory for f in hints.FAMILIES])
def test_plugin_copy_matches_the_reference(family):
    copy = yaml.safe_load((REPO / "plugins" / family / "tests" / "data" / "reference.yaml").read_text())
    entries = copy["supported_models"] + copy.get("deprecated_models", [])
    assert entries
    for entry in entries:
        assert SUPPORTED[entry["name"]] == entry
    for entry in copy["model_catalog"]:
        assert CATALOG[entry["name"]] == entry


def test_every_upstream_preset_is_in_exactly_one_plugin_copy():
    seen: dict[str, str] = {}
    for family in hints.FAMILIES:
        copy = yaml.safe_load((REPO / "plugins" / family.directory / "tests" / "data" / "reference.yaml").read_text())
        for entry in copy["supported_models"] + copy.get("deprecated_models", []):
            assert entry["name"] not in seen, (entry["name"], seen.get(entry["name"]), family.directory)
            seen[entry["name"]] = family.directory
    assert set(seen) == set(SUPPORTED) - {"base"}
