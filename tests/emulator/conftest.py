"""The API emulator (kaito_core.testing.emulator) over plain HTTP (httpx), the official
kubernetes client, and the real operator (kopf) run as tests/operator runs it."""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx
import pytest

from kaito_core.testing.emulator import Emulator

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
CM = "/api/v1/namespaces/{ns}/configmaps"
WS = "/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last error
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def workspace(name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name, "namespace": namespace},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"ws": name}}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}, **extra}


@pytest.fixture(scope="module")
def emu():
    with Emulator(bookmark_interval=0.3) as e:
        yield e


@pytest.fixture(scope="module")
def api(emu):
    with httpx.Client(base_url=emu.url, timeout=10) as client:
        yield client


def ok(resp: httpx.Response, code: int = 200) -> dict[str, Any]:
    assert resp.status_code == code, (resp.status_code, resp.text)
    return resp.json()
