"""A Kubernetes API emulator for tests and benchmarks: an HTTP server on 127.0.0.1 (aiohttp, on
a background thread) that behaves like kube-apiserver wherever kaito's operator depends on it.

No real kube-apiserver can run on our machines, so this is what the operator's tests believe.
What it models (each with a test in ``tests/emulator/``):

- one global resourceVersion; stale ``metadata.resourceVersion`` on update/patch -> 409
  Conflict; a create carrying one -> 500 (etcd3's ErrResourceVersionSetOnCreate); no-op
  writes keep the version and send no event; JSON-patch ``test`` -> 422;
- watches from a resourceVersion, 410 Gone once the history is compacted
  (:meth:`Emulator.compact`), BOOKMARK events (``allowWatchBookmarks``), ``timeoutSeconds``,
  ``sendInitialEvents``, label/field selectors (objects leaving a selection are DELETED);
- finalizers and ``deletionTimestamp``; ownerReference garbage collection: background,
  foreground (``foregroundDeletion`` + ``blockOwnerDeletion``) and orphan; namespaces that
  terminate (contents deleted first, no new objects) and must exist (``default``,
  ``kube-system``... do, and those passed as ``namespaces``);
- status subresources: writes to the main resource keep the stored status, ``/status`` writes
  change nothing else, create cannot set status, ``metadata.generation`` moves on spec changes;
- CRDs: served from the CustomResourceDefinition objects themselves (Workspace by default),
  unknown fields pruned (with a ``Warning`` header per field, or 400 under
  ``fieldValidation=Strict``), ``default`` applied, structural-schema errors -> 422 with field
  causes, then the CRD's CEL rules (``x-kubernetes-validations``, transition rules with ``oldSelf``);
- built-in defaulting as the request is decoded (StatefulSet, Service, Job with its generated
  selector, Pod templates: :mod:`~kaito_core.testing.emulator_defaults`), core/v1 Events in
  their object's namespace;
- immutable fields (Service clusterIP, StatefulSet spec but template/replicas/..., Job
  template/selector, Pod spec, immutable ConfigMaps) and object-metadata validation;
- admission webhooks from Validating/MutatingWebhookConfiguration objects, called over HTTPS
  with AdmissionReview v1, trusting ``caBundle``, honouring ``failurePolicy``;
- RBAC for the clients a test names by User-Agent (``rbac=``), and optionally the
  OwnerReferencesPermissionEnforcement admission plugin.

Not modelled: server-side apply (kaito's operator does not use it: 415), CEL's
``messageExpression`` and Kubernetes' CEL extensions other than ``find``, authentication,
pod graceful termination (pods go at once: there is no kubelet).

Writing a test against it: play other controllers as they act on a cluster, through
``/status`` (``KubeClient.patch(..., subresource="status")``; :class:`~kaito_core.testing.
emulator_controllers.FakeControllers` does Karpenter, the StatefulSet controller and the
kubelet); make the cluster misbehave with :meth:`Emulator.inject`, :meth:`Emulator.fail`,
:meth:`Emulator.hold_watches`, :meth:`Emulator.compact` and :meth:`Emulator.cut_watches`;
read :attr:`Emulator.calls` (every request by verb, resource and User-Agent),
:attr:`Emulator.refusals` (every answer other than 2xx), :attr:`Emulator.warnings` (every
``Warning`` header) and :attr:`Emulator.webhook_calls`.
There is no lenient mode: a test that writes status through the main resource sees it
ignored, as on a cluster.

The parts live in ``emulator_*.py`` beside this module.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, Callable, Iterable, Mapping

from kaito_core.testing.emulator_crds import builtin_types, crd_types, default_crds
from kaito_core.testing.emulator_http import ApiServer, Fault
from kaito_core.testing.emulator_store import Store

__all__ = ["Emulator", "SYSTEM_NAMESPACES", "start_operator", "stop_operator", "with_identity"]

# the Namespaces every cluster has (kube-apiserver's system namespaces controller keeps them)
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def with_identity(obj: dict[str, Any]) -> dict[str, Any]:
    """uid, resourceVersion, generation and creationTimestamp as a stored object has them, for
    objects handed to code directly (never to create: the server assigns its own uid and
    creationTimestamp, and refuses a create that carries a resourceVersion, as kube-apiserver
    does)."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("resourceVersion", "1")
    meta.setdefault("generation", 1)
    meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
    return obj


class Emulator:
    """``with Emulator() as emu: emu.url`` — an API server on a free 127.0.0.1 port.

    :param karpenter: serve Karpenter's NodeClaim/NodePool (schema-less CRDs); without them,
        NodeClaim requests get the 404 of a cluster without Karpenter.
    :param crds: CustomResourceDefinitions installed at start, over the defaults of the same
        name (e.g. Karpenter's real CRDs, to validate NodeClaims against their schema).
    :param history: watch events kept; a watch resuming from an older version gets 410 Gone.
    :param bookmark_interval: seconds between BOOKMARK events on watches that allow them.
    :param max_watch_seconds: end every watch after this long (the apiserver's own request
        timeout), whatever ``timeoutSeconds`` the client asked for.
    :param rbac: User-Agent prefix -> RBAC PolicyRules (a ClusterRole's ``rules``): requests of
        those clients that no rule grants are answered 403 Forbidden, as for a ServiceAccount
        bound to that role (:mod:`~kaito_core.testing.emulator_rbac`); other clients are not
        restricted. With ``owner_references_permission``, the OwnerReferencesPermissionEnforcement
        admission plugin as well (setting ``blockOwnerDeletion`` needs ``update`` on the owner's
        ``finalizers``).
    :param namespaces: Namespaces that exist from the start, besides the cluster's own
        (:data:`SYSTEM_NAMESPACES`). An object in a namespace no Namespace object names is
        refused (404 ``namespaces "x" not found``) and a Terminating namespace refuses new
        objects (403), as NamespaceLifecycle admission does; :meth:`add_namespaces` makes more.
    """

    def __init__(self, *, karpenter: bool = True, crds: list[dict[str, Any]] | None = None, history: int = 10000,
                 bookmark_interval: float = 5.0, max_watch_seconds: float | None = None,
                 namespaces: Iterable[str] = (), rbac: Mapping[str, list[dict[str, Any]]] | None = None,
                 owner_references_permission: bool = False):
        self.karpenter = karpenter
        self.crds = list(crds or [])
        self.url = ""
        self.store = Store(history=history)
        self.handler = ApiServer(self.store)
        self.handler.bookmark_interval = bookmark_interval
        self.handler.max_watch_seconds = max_watch_seconds
        self.namespaces = [*SYSTEM_NAMESPACES, *namespaces]
        if rbac is not None:
            from kaito_core.testing.emulator_rbac import Authorizer

            self.handler.authorizer = Authorizer(rbac, owner_references=owner_references_permission)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- what a test does to the "cluster" ---------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the emulator's event loop (where its state lives) and return its result."""
        if self._loop is None:
            raise RuntimeError("the emulator is not running: use `with Emulator() as emu:`")

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def add_namespaces(self, *names: str) -> None:
        """Create these Namespaces (``kubectl create namespace``); ones that exist are kept."""
        self.call(lambda: self._add_namespaces(names))

    def _add_namespaces(self, names: Iterable[str]) -> None:
        rt = self.store.types[("", "v1", "namespaces")]
        for name in names:
            if self.store.namespace_phase(name) is None:
                self.store.create(rt, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                                       "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})

    def fail(self, *plurals: str) -> None:
        """Every request for these resources answers HTTP 500 (a provider API that is down)."""
        self.call(lambda: setattr(self.handler, "failing", set(plurals)))

    def inject(self, verb: str, plural: str, code: int, *, times: int = 1, subresource: str | None = None,
               reason: str = "") -> None:
        """The next ``times`` requests ``verb`` (get/list/watch/create/update/patch/delete or
        ``*``) on ``plural`` (or ``*``), ``/subresource``, answer ``code``."""
        self.call(lambda: self.handler.faults.append(Fault(verb, plural, subresource, code, times, reason)))

    def clear_faults(self) -> int:
        """Drop injected answers not used yet (and :meth:`fail`); returns how many were left."""
        def clear() -> int:
            left = sum(f.times for f in self.handler.faults)
            self.handler.faults.clear()
            self.handler.failing = set()
            return left
        return int(self.call(clear))

    def compact(self) -> int:
        """etcd compaction: watches resuming from any version seen so far get 410 Gone."""
        return int(self.call(self.store.compact))

    def cut_watches(self) -> int:
        """End every open watch stream (an apiserver restart or a network cut); returns how many."""
        def cut() -> int:
            watchers = list(self.store.watchers)
            for w in watchers:
                w.queue.put_nowait(None)
            return len(watchers)
        return int(self.call(cut))

    def hold_watches(self) -> int:
        """A watch outage: end every open watch and leave new watch requests unanswered until
        :meth:`release_watches` (lists and writes still work). Returns the watches cut."""
        self.call(self.handler.watches_open.clear)
        return self.cut_watches()

    def release_watches(self) -> None:
        self.call(self.handler.watches_open.set)

    def watch_count(self, plural: str | None = None) -> int:
        return int(self.call(lambda: sum(1 for w in self.store.watchers if plural in (None, w.gk[1]))))

    def collect_garbage(self) -> bool:
        """Run the garbage collector now (it also runs by itself shortly after each change)."""
        return bool(self.call(self.store.collect))

    @property
    def webhook_calls(self) -> list[tuple[str, str]]:
        """(webhook name, operation) of every admission call made, in order."""
        return list(self.call(lambda: list(self.handler.webhook_calls)))

    @property
    def refusals(self) -> list[tuple[str, str, str, int, str, str]]:
        """(method, path, User-Agent, code, reason, message) of every answer other than 2xx
        (watch streams' 410 events not included), in order."""
        return list(self.call(lambda: list(self.handler.refusals)))

    @property
    def warnings(self) -> list[tuple[str, str, str, str]]:
        """(method, path, User-Agent, warning) of every ``Warning`` header answered, in order
        (``unknown field "spec.x"``: a field the CRD's schema prunes)."""
        return list(self.call(lambda: list(self.handler.warnings)))

    @property
    def calls(self) -> dict[tuple[str, str, str, str], int]:
        """(verb, API group, resource[/subresource], User-Agent) -> requests served."""
        return dict(self.call(lambda: dict(self.handler.calls)))

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> "Emulator":
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
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

    def _install(self) -> None:
        for rt in builtin_types():
            self.store.register(rt)
        given = {c["metadata"]["name"] for c in self.crds}
        crd_type = self.store.types[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
        defaults = [c for c in default_crds(karpenter=self.karpenter) if c["metadata"]["name"] not in given]
        for crd in defaults + self.crds:
            stored = self.store.create(crd_type, {**crd, "metadata": dict(crd["metadata"])})
            for rt in crd_types(stored):
                self.store.register(rt)
        self._add_namespaces(self.namespaces)
        self.store.history.clear()

    async def _serve(self) -> None:
        import aiohttp
        from aiohttp import web

        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.store.schedule = lambda delay, fn: loop.call_later(delay, fn)
        self.handler.watches_open = asyncio.Event()
        self.handler.watches_open.set()
        self._install()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handler.handle)
        # handler_cancellation: a client that hangs up ends its watch at once, as the apiserver's request
        # context does (aiohttp keeps such handlers running by default)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            self.handler.session = session
            self._ready.set()
            await self._stop.wait()
            for w in list(self.store.watchers):
                w.queue.put_nowait(None)
            await runner.cleanup()


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

