"""kubectl (the binary `make tools` installs into bin/) against the emulator: client-side
apply (last-applied annotation + strategic merge), label, ``patch --subresource=status``,
delete. kubectl's own schema check needs the OpenAPI documents the emulator does not serve,
hence ``--validate=false``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.emulator.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
WORKSPACE = """apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata:
  name: phi
  namespace: kc
resource:
  instanceType: Standard_NC24ads_A100_v4
  labelSelector:
    matchLabels: {apps: phi}
inference:
  preset: {name: phi-3-mini-4k-instruct}
"""


@pytest.fixture(scope="module")
def kubectl(emu):
    binary = ROOT / "bin" / "kubectl"
    found = str(binary) if binary.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail(f"kubectl not found at {binary} nor on PATH: run `make tools`", pytrace=False)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([found, "--server", emu.url, *args], input=stdin, capture_output=True, text=True,
                              timeout=60)
    return run


def test_apply_label_status_delete(kubectl, api):
    created = kubectl("apply", "--validate=false", "-f", "-", stdin=WORKSPACE)
    assert created.returncode == 0 and "workspace.kaito.sh/phi created" in created.stdout, created.stderr
    again = kubectl("apply", "--validate=false", "-f", "-", stdin=WORKSPACE)
    assert "unchanged" in again.stdout, again.stderr
    changed = kubectl("apply", "--validate=false", "-f", "-", stdin=WORKSPACE.replace("phi-3-mini-4k-instruct",
                                                                                      "phi-3-medium-4k-instruct"))
    assert "configured" in changed.stdout, changed.stderr
    assert kubectl("label", "-n", "kc", "workspace", "phi", "team=ml").returncode == 0
    status = kubectl("patch", "-n", "kc", "workspace", "phi", "--subresource=status", "--type=merge",
                     "-p", '{"status": {"state": "Ready"}}')
    assert status.returncode == 0, status.stderr
    got = json.loads(kubectl("get", "-n", "kc", "wk", "phi", "-o", "json").stdout)
    assert got["metadata"]["labels"] == {"team": "ml"} and got["status"]["state"] == "Ready"
    assert got["inference"]["preset"]["name"] == "phi-3-medium-4k-instruct" and got["metadata"]["generation"] == 2
    refused = kubectl("patch", "-n", "kc", "workspace", "phi", "--type=merge", "-p", '{"resource": {"count": "x"}}')
    assert refused.returncode != 0 and "resource.count" in refused.stderr
    assert kubectl("delete", "-n", "kc", "workspace", "phi", "--wait=false").returncode == 0
    wait_for("the Workspace to go", lambda: api.get("/apis/kaito.sh/v1beta1/namespaces/kc/workspaces/phi")
             .status_code == 404)
