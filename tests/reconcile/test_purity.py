"""reconcile/ is pure: importing it (and planning) loads neither kopf, kubernetes nor torch."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import kaito_core.reconcile, kaito_core.reconcile.inputs
from kaito_core.api import parse_workspace
from kaito_core.plugins import get_registry
from kaito_core.reconcile import plan
from kaito_core.reconcile.inputs import resolve
reg = get_registry()
ws = parse_workspace({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "p"},
    "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
    "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}})
i = resolve(ws, reg)
p = plan(ws, i.preset, i.requirement, reg.provisioners["byo"])
assert p.objects
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("kopf", "kubernetes", "torch", "transformers", "aiohttp"))
print(",".join(bad))
"""


def test_reconcile_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_reconcile_sources_do_not_import_io_libraries():
    import pathlib

    import kaito_core.reconcile as pkg

    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        for lib in ("kopf", "kubernetes", "torch", "aiohttp", "http.client", "urllib.request"):
            assert f"import {lib}" not in text and f"from {lib}" not in text, f"{path.name} imports {lib}"
