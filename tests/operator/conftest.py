"""System tests: the real ``kaito operator`` (kopf) as a subprocess against the strict API
emulator (:mod:`kaito_core.testing.emulator`) on 127.0.0.1. The test plays the rest of the
cluster (Karpenter, the kubelet, the StatefulSet controller) as those controllers do on a real
cluster: objects they own are created through the API and their status is written through the
``status`` subresource (:class:`~kaito_core.testing.emulator_controllers.FakeControllers`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_core.operator.kube import KubeClient
from kaito_core.operator.rbac import RULES
from kaito_core.testing.emulator import Emulator, start_operator, stop_operator
from kaito_core.testing.emulator_controllers import FakeControllers
from kaito_core.testing.waiting import wait_for

WS_API = "kaito.sh/v1beta1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a working operator is answered in the normal course on a cluster: a GET or DELETE of an
# object not made yet or gone (404), a create of one made meanwhile (409 AlreadyExists, then read
# back), a write or a delete whose precondition (resourceVersion, uid) no longer holds (409
# Conflict, then re-read). Anything else -- 422 from the CRD schema or a field rule, 400, 415, a
# 500 not injected by the test -- is a request a real kube-apiserver refuses as well: an
# operator bug.
NORMAL_REFUSALS = {("GET", 404), ("DELETE", 404), ("DELETE", 409), ("POST", 409), ("PATCH", 409), ("PUT", 409)}
OPERATOR_AGENTS = ("kopf/", "kaito-operator")


def operator_refusals(emu: Emulator) -> list[tuple[str, str, str, int, str, str]]:
    """The answers other than 2xx the operator got that a working operator does not get, and
    the warnings it was answered with (299: a field the CRD's schema prunes, lost on a cluster)."""
    refused = [r for r in emu.refusals if r[2].startswith(OPERATOR_AGENTS) and (r[0], r[3]) not in NORMAL_REFUSALS
               and "injected" not in r[5]]  # Emulator.fail() and .inject() say so in their message
    return refused + [(m, p, agent, 299, "Warning", text) for m, p, agent, text in emu.warnings
                      if agent.startswith(OPERATOR_AGENTS)]


class Cluster:
    def __init__(self, url: str):
        self.url = url
        self.kube = KubeClient(url)
        # the test plays users and controllers: its calls must not count as the operator's (RBAC test)
        self.kube.headers["User-Agent"] = "kaito-tests"
        # Karpenter, the StatefulSet controller and the kubelet, stepped by hand (not on their thread)
        self.controllers = FakeControllers(url)

    def workspace(self, name: str, namespace: str) -> dict | None:
        return self.kube.get(api_version=WS_API, kind="Workspace", name=name, namespace=namespace)

    def create_workspace(self, raw: dict) -> dict:
        # no uid/resourceVersion of our own: the API server assigns them on create
        return self.kube.create(raw)

    def conditions(self, name: str, namespace: str) -> dict[str, dict]:
        ws = self.workspace(name, namespace) or {}
        return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}

    def nodeclaims(self, workspace: str) -> list[dict]:
        return self.kube.list(api_version="karpenter.sh/v1", kind="NodeClaim", labels={"kaito.sh/workspace": workspace})

    def events(self, namespace: str) -> list[dict]:
        return self.kube.list(api_version="v1", kind="Event", namespace=namespace)

    def statefulset(self, name: str, namespace: str) -> dict | None:
        return self.kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=namespace)

    def ready_claim(self, claim: dict, node: str) -> None:
        """Karpenter: a Ready node with the claim's labels joins; the claim's ``/status`` says so."""
        self.controllers.launch(claim, node)

    def run_pods(self, name: str, namespace: str, *, ready: bool = True) -> dict:
        """The StatefulSet controller and the kubelet: the set's pods (owned by it, with its
        template's labels) run, and the set's ``/status`` counts them. Returns the set."""
        sts = self.statefulset(name, namespace)
        assert sts is not None, f"no StatefulSet {namespace}/{name} to run pods for"
        self.controllers.run_pods(sts, ready=ready)
        return sts

    def set_pod_status(self, pod: str, namespace: str, status: dict) -> dict:
        """The kubelet reports a pod's state (``/status``: a write to the pod itself keeps it)."""
        return self.kube.patch(api_version="v1", kind="Pod", name=pod, namespace=namespace,
                               patch={"status": status}, subresource="status")


# The namespaces these tests put objects in exist from the start (``kubectl create namespace``):
# the emulator refuses objects in a namespace that does not exist, as a cluster does.
NAMESPACES = ("flow", "hooks", "cache", "memo", "rbac", "rf", "u")


# Karpenter's own CRDs (tests/data/reference/crds): every NodeClaim the operator writes, and every
# status the test writes as Karpenter, passes their structural schema and CEL rules.
KARPENTER_CRDS = Path(__file__).resolve().parents[1] / "data" / "reference" / "crds"


def cluster_emulator(*, namespaces: tuple[str, ...] = NAMESPACES, **kwargs: Any) -> Emulator:
    """The emulated cluster of the system tests: their namespaces, Karpenter's real CRDs, and the
    operator's requests (kopf's and its client's User-Agents) held to the chart's ClusterRole
    (kaito_core.operator.rbac.RULES), as its ServiceAccount is on a cluster."""
    crds = [yaml.safe_load((KARPENTER_CRDS / f"karpenter.sh_{n}.yaml").read_text()) for n in ("nodeclaims", "nodepools")]
    kwargs.setdefault("rbac", {agent: RULES for agent in OPERATOR_AGENTS})
    return Emulator(crds=crds, namespaces=namespaces, **kwargs)


@pytest.fixture(scope="module")
def emulator():
    # unrestricted: the unit tests here drive a KubeClient (the operator's User-Agent) as fixtures;
    # the system tests use cluster_emulator() itself (test_flow overrides this fixture)
    with cluster_emulator(rbac=None) as emu:
        yield emu


@pytest.fixture(scope="module")
def cluster(emulator):
    return Cluster(emulator.url)


@pytest.fixture(scope="module")
def operator_factory(emulator, tmp_path_factory):
    procs: list[tuple[Any, Path]] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> tuple[Any, Path]:
        log = tmp_path_factory.mktemp("operator") / "operator.log"
        base = {"KAITO_PROVISIONER": "karpenter", "KAITO_DELETE_GRACE_SECONDS": "3", "KAITO_RESYNC_SECONDS": "30"}
        if os.environ.get("KAITO_DEBUG_OPERATOR"):  # with KAITO_SHOW_OPERATOR_LOG: kopf's own lines too
            base["KAITO_LOG_LEVEL"] = "DEBUG"
        proc = start_operator(emulator.url, env={**base, **(env or {})}, log_path=str(log), args=args)
        procs.append((proc, log))
        wait_for("the operator to start", lambda: proc.poll() is None and "kaito operator: provisioner="
                 in log.read_text(errors="replace"), timeout=30)
        return proc, log

    yield start
    for proc, log in procs:
        stop_operator(proc)
        if os.environ.get("KAITO_SHOW_OPERATOR_LOG"):
            print(log.read_text(errors="replace")[-5000:])


