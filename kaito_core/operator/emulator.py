"""A Kubernetes API emulator for tests and benchmarks: kmock's KubernetesEmulator served on
127.0.0.1 from a background thread, with the resources the operator uses declared.

kmock is a test dependency (the ``test`` extra); it is imported only when an emulator starts.
Traps handled here (ENVIRONMENT.md): kopf needs ``v1/namespaces`` and the CRD resource
declared or it waits forever; kmock assigns no ``uid``/``resourceVersion``, so
:func:`with_identity` adds them to the objects a test creates.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

RESOURCES: dict[str, dict[str, Any]] = {
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "v1/nodes": {"kind": "Node", "namespaced": False},
    "v1/pods": {"kind": "Pod", "namespaced": True},
    "v1/services": {"kind": "Service", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    "apps/v1/statefulsets": {"kind": "StatefulSet", "namespaced": True},
    "batch/v1/jobs": {"kind": "Job", "namespaced": True},
    "kaito.sh/v1beta1/workspaces": {"kind": "Workspace", "namespaced": True, "shortnames": {"wk", "wks"}},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {"kind": "CustomResourceDefinition", "namespaced": False},
}
KARPENTER = {
    "karpenter.sh/v1/nodeclaims": {"kind": "NodeClaim", "namespaced": False},
    "karpenter.sh/v1/nodepools": {"kind": "NodePool", "namespaced": False},
}
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def with_identity(obj: dict[str, Any]) -> dict[str, Any]:
    """Give an object the uid, resourceVersion and generation a real API server would."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("resourceVersion", "1")
    meta.setdefault("generation", 1)
    meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
    return obj


def _emulator_class() -> Any:
    """kmock's emulator + ``metadata.generateName`` (kopf posts Events with it; kmock 0.8
    would store them all under one empty name and refuse the second with 409)."""
    import kmock

    class GeneratingEmulator(kmock.KubernetesEmulator):
        # Plurals answered with HTTP 500 (a provider API that is down), and whether requests
        # for undeclared resources get a real API server's 404 (kmock would store them).
        failing: set = set()
        declared_only: bool = False
        counts: dict = {}  # (action, plural) -> requests served (benchmarks compare clients)

        async def _handle(self, request: Any) -> Any:
            res = getattr(request, "resource", None)
            plural = getattr(res, "plural", None)
            key = (str(getattr(request, "action", "")).rsplit(".", 1)[-1].lower(), plural if isinstance(plural, str) else "")
            self.counts[key] = self.counts.get(key, 0) + 1
            if res is not None and getattr(res, "plural", None) in self.failing:
                raise kmock.KubernetesError()
            if res is not None and self.declared_only and isinstance(getattr(res, "plural", None), str) and not any(
                    (r.group, r.version, r.plural) == (res.group, res.version, res.plural) for r in self.resources):
                raise kmock.KubernetesResourceNotFoundError()
            data = getattr(request, "data", None)
            if request.action == kmock.action.CREATE and isinstance(data, dict):
                meta = data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            return await super()._handle(request)

    return GeneratingEmulator


class Emulator:
    """``with Emulator() as emu: emu.url`` — an API server on a free 127.0.0.1 port.

    ``emu.fail("nodeclaims")`` makes every request for that resource answer HTTP 500.
    """

    def __init__(self, *, karpenter: bool = True):
        """:param karpenter: declare Karpenter's resources; without them, requests for
            NodeClaims get the 404 a cluster without Karpenter's CRDs answers."""
        self.karpenter = karpenter
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.handler: Any = None

    def fail(self, *plurals: str) -> None:
        self.handler.failing = set(plurals)

    def __enter__(self) -> "Emulator":
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the Kubernetes emulator did not start within 30 s")
        if self._error is not None:
            raise RuntimeError(f"the Kubernetes emulator failed to start: {self._error}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the caller of __enter__
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        import kmock

        self._stop = asyncio.Event()
        handler = _emulator_class()()
        handler.failing = set()
        handler.counts = {}
        handler.declared_only = True
        self.handler = handler
        declared = dict(RESOURCES)
        if self.karpenter:
            declared.update(KARPENTER)
        for key, info in declared.items():
            handler.resources[key] = kmock.ResourceInfo(kind=info["kind"], namespaced=info["namespaced"],
                                                        verbs=VERBS, shortnames=info.get("shortnames", set()))
        async with handler, kmock.Server(handler) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            while not self._stop.is_set():
                # kmock keeps every request and error for assertions; a long benchmark does not
                # need them, and scanning them slows every later request down.
                for attr in ("_requests", "_errors"):
                    kept = getattr(handler, attr, None)
                    if isinstance(kept, list):
                        if attr == "_errors":
                            for bucket in kept:
                                if isinstance(bucket, list):
                                    bucket.clear()
                        else:
                            kept.clear()
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=2.0)
                except asyncio.TimeoutError:
                    pass


def start_operator(server: str, *, env: dict[str, str] | None = None, log_path: str | None = None,
                   args: list[str] | None = None) -> Any:
    """``kaito operator --server URL`` as a subprocess (the real kopf), logging to ``log_path``."""
    import os
    import subprocess
    import sys

    full = dict(os.environ)
    full.update({"KAITO_KUBE_SERVER": server, "KAITO_RESYNC_SECONDS": "30", "KAITO_LOG_LEVEL": "INFO",
                 "KAITO_METRICS_PORT": "0"})
    full.update(env or {})
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    cmd = [sys.executable, "-m", "kaito_core", "operator", *(args or [])]
    return subprocess.Popen(cmd, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_operator(proc: Any, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it does not stop in ``timeout`` seconds (by pid only)."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
