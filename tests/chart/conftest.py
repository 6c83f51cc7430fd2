"""Fixtures for the Helm chart tests: the helm binary and cached renders of charts/kaito."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kaito"
NAMESPACE = "kaito-system"
RELEASE = "kaito"


def find_helm() -> str:
    """helm from <repo>/bin (what `make tools` installs) or PATH; a clear failure otherwise."""
    local = ROOT / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail(f"helm not found at {local} nor on PATH: run `make tools` (installs helm and kubectl into bin/)",
                pytrace=False)


@pytest.fixture(scope="session")
def helm() -> str:
    return find_helm()


class Renderer:
    """`helm template` with values given as a (nested) dict; each distinct dict is rendered once."""

    def __init__(self, helm: str):
        self.helm = helm
        self._cache: dict[str, list[dict]] = {}

    def run(self, values: dict | None = None, *extra: str) -> subprocess.CompletedProcess:
        cmd = [self.helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", "-", *extra]
        return subprocess.run(cmd, input=yaml.safe_dump(values or {}), capture_output=True, text=True,
                              timeout=60)

    def __call__(self, values: dict | None = None) -> list[dict]:
        key = json.dumps(values or {}, sort_keys=True)
        if key not in self._cache:
            proc = self.run(values, "--include-crds")
            assert proc.returncode == 0, f"helm template with {values} failed:\n{proc.stderr}"
            self._cache[key] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return self._cache[key]


@pytest.fixture(scope="session")
def render(helm: str) -> Renderer:
    return Renderer(helm)


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


# Values that make the aks provisioner renderable (it needs the cluster's coordinates).
AKS = {"provisioner": "aks", "azure": {"subscriptionId": "8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8",
                                       "resourceGroup": "rg-kaito", "clusterName": "kaito-demo",
                                       "location": "eastus"}}
