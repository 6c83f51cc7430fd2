"""Running the real operator (kopf, as tests/operator does) against the strict emulator, with
Karpenter, the kubelet and the StatefulSet controller played by
:class:`~kaito_core.testing.emulator_controllers.FakeControllers` (``/status`` writes, as those
controllers do on a real cluster)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kaito_core.operator.kube import KubeClient
from kaito_core.testing.emulator import start_operator, stop_operator
from kaito_core.testing.emulator_controllers import FakeControllers
from tests.emulator.conftest import wait_for

WS_API = "kaito.sh/v1beta1"


class Operator:
    def __init__(self, url: str, log: Path, env: dict[str, str] | None = None):
        base = {"KAITO_PROVISIONER": "karpenter", "KAITO_DELETE_GRACE_SECONDS": "3", "KAITO_RESYNC_SECONDS": "30"}
        self.log = log
        self.proc = start_operator(url, env={**base, **(env or {})}, log_path=str(log))
        wait_for("the operator to start", lambda: self.proc.poll() is None and "kaito operator: provisioner="
                 in log.read_text(errors="replace"), timeout=30)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        stop_operator(self.proc)
        if os.environ.get("KAITO_SHOW_OPERATOR_LOG"):
            print(self.text()[-5000:])


class Cluster:
    def __init__(self, url: str):
        self.kube = KubeClient(url)
        self.controllers = FakeControllers(url)  # stepped by hand here, not on its thread

    def workspace(self, name: str, ns: str) -> dict | None:
        return self.kube.get(api_version=WS_API, kind="Workspace", name=name, namespace=ns)

    def status(self, name: str, ns: str) -> dict:
        return (self.workspace(name, ns) or {}).get("status") or {}

    def claims(self, name: str) -> list[dict]:
        return self.kube.list(api_version="karpenter.sh/v1", kind="NodeClaim", labels={"kaito.sh/workspace": name})

    def get(self, api: str, kind: str, name: str, ns: str | None = None) -> dict | None:
        return self.kube.get(api_version=api, kind=kind, name=name, namespace=ns)

    def make_ready(self, name: str, ns: str) -> dict:
        claim = wait_for(f"{name}'s NodeClaim", lambda: self.claims(name))[0]
        self.controllers.launch(claim, f"node-{name}")
        sts = wait_for(f"{name}'s StatefulSet", lambda: self.get("apps/v1", "StatefulSet", name, ns))
        self.controllers.run_pods(sts)
        return wait_for(f"{name} Ready", lambda: (lambda s: s if s.get("state") == "Ready" else None)(
            self.status(name, ns)))

    def delete(self, name: str, ns: str, propagation: str | None = "Background") -> None:
        self.kube.delete(api_version=WS_API, kind="Workspace", name=name, namespace=ns, propagation=propagation)


def workspace_body(name: str, ns: str) -> dict[str, Any]:
    from tests.emulator.conftest import workspace

    return workspace(name, ns)
