"""Shared inputs for the pure reconciler's tests: upstream's example manifests, the registry."""

from __future__ import annotations

import glob
import os

import pytest

from kaito_core.api import load_workspaces
from kaito_core.plugins import get_registry

EXAMPLES = os.environ.get("KAITO_EXAMPLES", os.path.join(os.path.dirname(__file__), "..", "data", "reference",
                                                         "kaito-examples"))


def example_workspaces():
    out = []
    for path in sorted(glob.glob(os.path.join(EXAMPLES, "kaito_workspace*.yaml"))):
        for ws in load_workspaces(path):
            out.append(pytest.param(ws, id=ws.name))
    return out


@pytest.fixture(scope="session")
def registry():
    return get_registry()
