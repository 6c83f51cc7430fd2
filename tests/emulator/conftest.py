"""The API emulator (kaito_core.testing.emulator) over plain HTTP (httpx), the official
kubernetes client, and the real operator (kopf) run as tests/operator runs it."""

from __future__ import annotations

from typing import Any, Callable

import httpx
import pytest

from kaito_core.testing.emulator import Emulator
from kaito_core.testing.waiting import wait_for as _wait_for

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
CM = "/api/v1/namespaces/{ns}/configmaps"
WS = "/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    return _wait_for(what, fn, timeout, interval)


def workspace(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name, "namespace": namespace},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"ws": name}}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}, **extra}


# The namespaces the tests here work in exist from the start: the emulator refuses objects in a
# namespace that does not exist, as a cluster does ("doomed" and "op11" are made by their tests,
# "nowhere" is missed on purpose).
NAMESPACES = (
    "a1", "a2", "a3", "a4", "a5", "a6", "a7", "crd1", "crd2", "crd3", "crd4", "elsewhere", "f1", "g1", "g2",
    "g3", "g4", "g5", "g6", "g7", "g8", "kc", "kc1", "kc2", "kc3", "kc4", "op1", "op2", "op3", "op4",
    "op5", "op6", "op7", "op8", "op9", "op10", "op12", "rv", "s1", "s2", "s3", "s4", "s5", "s6",
    "s7", "s8", "s9", "s10", "s11", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "wh1", "wh2",
    "wh3", "wh4",
)


@pytest.fixture(scope="module")
def emu():
    with Emulator(bookmark_interval=0.3, namespaces=NAMESPACES) as e:
        yield e


@pytest.fixture(scope="module")
def api(emu):
    with httpx.Client(base_url=emu.url, timeout=10) as client:
        yield client


def ok(resp: httpx.Response, code: int = 200) -> dict[str, Any]:
    assert resp.status_code == code, (resp.status_code, resp.text)
    return resp.json()
