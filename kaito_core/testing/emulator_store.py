"""The API emulator's state: objects, one global resourceVersion (as etcd's revision), a
bounded event history for watches (older versions answer 410 Gone), finalizers and deletion,
and the garbage collector's passes (its ownerReference rules: emulator_gc). Runs on the emulator's
event loop only.

Stored objects are never changed in place: every write stores a new dict, so an event or a
response can share them without copying. Every write goes through ``_put``/``_pop``, which keep
the indexes (emulator_index) and the garbage collector's work list in step with ``objects``.
"""

from __future__ import annotations

import collections
import copy
import datetime
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from kaito_core.testing import emulator_gc
from kaito_core.testing.emulator_index import Index
from kaito_core.testing.emulator_rules import ApiStatus
from kaito_core.testing.emulator_schema import CrdSchema

GK = tuple[str, str]  # (group, plural): the storage key of a resource (all versions share it)
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name
NO_GENERATION = {"ConfigMap", "Secret", "Event", "Namespace", "Node", "Lease"}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool = False  # has a status subresource
    schema: CrdSchema | None = None  # custom resources: pruning, defaulting, validation
    shortnames: tuple[str, ...] = ()
    crd: str = ""  # the CustomResourceDefinition serving it ("" = built in)
    versions: tuple[str, ...] = ()  # every served version (custom resources)

    @property
    def gk(self) -> GK:
        return self.group, self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(eq=False)
class Watcher:
    gk: GK
    namespace: str | None
    match: Callable[[dict[str, Any]], bool]
    queue: Any  # asyncio.Queue of (type, object) or None (closed by the server)
    api_version: str = ""
    kind: str = ""


@dataclass
class Event:
    rv: int
    gk: GK
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


def not_found(rt: ResourceType, name: str) -> ApiStatus:
    qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiStatus(404, "NotFound", f'{qualified} "{name}" not found',
                     {"name": name, "group": rt.group, "kind": rt.plural})


def conflict(rt: ResourceType, name: str, why: str) -> ApiStatus:
    qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
    return ApiStatus(409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
                     {"name": name, "group": rt.group, "kind": rt.plural})


class Store:
    def __init__(self, *, history: int = 10000, schedule: Callable[[float, Callable[[], None]], Any] | None = None):
        self.rv = 1
        self.objects: dict[Key, dict[str, Any]] = {}  # read freely; written only by _put and _pop
        self.index = Index()
        # dependents whose owners may have changed: the garbage collector looks at these only
        # (as upstream's GC processes the dependents of the owners its graph saw change)
        self.dirty: set[Key] = set()
        self.types: dict[tuple[str, str, str], ResourceType] = {}  # (group, version, plural)
        self._kinds: dict[tuple[str, str], ResourceType] = {}
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self.compacted = 0  # watches from a resourceVersion below this answer 410 Gone
        self.watchers: set[Watcher] = set()  # hashed by identity (eq=False)
        self.schedule = schedule
        self.gc_delay = 0.05
        self._gc_pending = False
        self.ip = 0

    # -- resources --------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self._types_changed()

    def drop_types(self, crd_name: str) -> list[ResourceType]:
        """Stop serving what a CRD declared; returns those types."""
        self._types_changed()
        return [self.types.pop(k) for k in [k for k, rt in self.types.items() if rt.crd == crd_name]]

    def _types_changed(self) -> None:
        self._kinds.clear()
        for keys in self.index.dependents.values():  # an owner's kind may (no longer) resolve
            self.dirty.update(keys)

    def unregister_crd(self, crd_name: str) -> None:
        """A deleted CRD takes its custom resources with it."""
        for rt in self.drop_types(crd_name):
            for key, _ in self.index.items(rt.gk):
                self._remove(key, rt)

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        if not self._kinds:  # (apiVersion, kind) and (group, plural) -> type, rebuilt after (un)register
            for rt in self.types.values():
                self._kinds[(rt.api_version, rt.kind)] = rt
                self._kinds.setdefault(rt.gk, rt)
        return self._kinds.get((api_version, kind))

    def type_of(self, gk: GK) -> ResourceType | None:
        self.by_kind("", "")
        return self._kinds.get(gk)

    # -- reads ------------------------------------------------------------------------------

    @staticmethod
    def key(rt: ResourceType, namespace: str | None, name: str) -> Key:
        return rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects.get(self.key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def list(self, rt: ResourceType, namespace: str | None, match: Callable[[dict], bool]) -> list[dict[str, Any]]:
        return [o for _, o in self.index.items(rt.gk, namespace) if match(o)]  # etcd's key order

    def items(self, gk: GK, namespace: str | None = None) -> list[tuple[Key, dict[str, Any]]]:
        """(key, object) of one resource (in one namespace), in etcd's key order."""
        return self.index.items(gk, namespace)

    # -- writes -----------------------------------------------------------------------------

    def _put(self, key: Key, obj: dict[str, Any]) -> None:
        old = self.objects.get(key)
        self.objects[key] = obj
        self.index.put(key, obj, old)
        meta = obj["metadata"]
        if meta.get("ownerReferences") and (old is None or old["metadata"].get("ownerReferences")
                                            != meta.get("ownerReferences")):
            self.dirty.add(key)
        # an owner being deleted (foreground/orphan deletion acts on its dependents), or one
        # that appears under a uid references already named
        if meta.get("deletionTimestamp") or old is None:
            dependents = self.index.dependents.get(meta.get("uid"), ())
            self.dirty.update(dependents)
            if dependents or key in self.index.finalizing:
                self.schedule_gc()

    def _pop(self, key: Key) -> dict[str, Any]:
        obj = self.objects.pop(key)
        self.index.pop(key, obj)
        self.dirty.discard(key)
        self.dirty.update(self.index.dependents.get(obj["metadata"].get("uid"), ()))
        return obj

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _publish(self, rt: ResourceType, type_: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        ev = Event(self.rv, rt.gk, type_, obj, old)
        if len(self.history) == self.history.maxlen:
            self.compacted = self.history[0].rv
        self.history.append(ev)
        for w in list(self.watchers):
            offer(w, ev)

    def create(self, rt: ResourceType, obj: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
        meta = obj["metadata"]
        key = self.key(rt, meta.get("namespace"), meta["name"])
        if key in self.objects:
            qualified = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
            raise ApiStatus(409, "AlreadyExists", f'{qualified} "{meta["name"]}" already exists',
                            {"name": meta["name"], "group": rt.group, "kind": rt.plural})
        meta = dict(meta, uid=uid or str(uuid.uuid4()), resourceVersion=self._next_rv(), creationTimestamp=now_rfc3339())
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        if not rt.namespaced:
            meta.pop("namespace", None)
        if rt.kind not in NO_GENERATION:
            meta["generation"] = 1
        if rt.kind == "Service":
            spec = obj.setdefault("spec", {})
            if not spec.get("clusterIP"):
                self.ip += 1
                spec["clusterIP"] = f"10.96.{self.ip // 250}.{self.ip % 250 + 1}"
        stored = {**obj, "metadata": meta}
        self._put(key, stored)
        self._publish(rt, "ADDED", stored, None)
        if meta.get("ownerReferences"):
            self.schedule_gc()  # a dependent of an owner that is already gone
        return stored

    def replace(self, rt: ResourceType, current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Store ``new`` over ``current`` (the caller checked preconditions). An object being
        deleted whose last finalizer went is removed."""
        meta = dict(new["metadata"], resourceVersion=self._next_rv())
        stored = {**new, "metadata": meta}
        key = self.key(rt, meta.get("namespace"), meta["name"])
        # (a Namespace also waits for its contents: spec.finalizers ["kubernetes"], _finish_namespaces)
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and rt.kind != "Namespace":
            self._pop(key)
            self._publish(rt, "DELETED", stored, current)
            self.schedule_gc()
            return stored
        self._put(key, stored)
        self._publish(rt, "MODIFIED", stored, current)
        if meta.get("ownerReferences") != (current.get("metadata") or {}).get("ownerReferences"):
            self.schedule_gc()
        return stored

    def _remove(self, key: Key, rt: ResourceType) -> dict[str, Any]:
        current = self._pop(key)
        stored = {**current, "metadata": dict(current["metadata"], resourceVersion=self._next_rv())}
        self._publish(rt, "DELETED", stored, current)
        self.schedule_gc()
        return stored

    def delete(self, rt: ResourceType, namespace: str | None, name: str, options: dict[str, Any]) -> dict[str, Any]:
        """DELETE with DeleteOptions: preconditions, propagationPolicy, finalizers."""
        current = self.get(rt, namespace, name)
        meta = current["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(rt, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                     f"UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise conflict(rt, name, f"Precondition failed: ResourceVersion in precondition: "
                                     f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                     f"{meta.get('resourceVersion')}")
        policy = options.get("propagationPolicy") or ("Orphan" if options.get("orphanDependents") else "Background")
        if policy not in ("Background", "Foreground", "Orphan"):
            raise ApiStatus(422, "Invalid", f"DeleteOptions.propagationPolicy: Unsupported value: {policy!r}: "
                                            f'supported values: "Foreground", "Background", "Orphan"')
        finalizers = list(meta.get("finalizers") or [])
        extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
        if extra and extra not in finalizers:
            finalizers.append(extra)
        if meta.get("deletionTimestamp"):
            if finalizers == list(meta.get("finalizers") or []):
                return current
            return self.replace(rt, current, {**current, "metadata": dict(meta, finalizers=finalizers)})
        if rt.kind == "Namespace":
            return self._delete_namespace(rt, current)
        if not finalizers:
            return self._remove(self.key(rt, namespace, name), rt)
        new_meta = dict(meta, deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0, finalizers=finalizers)
        if "generation" in meta:
            new_meta["generation"] = meta["generation"] + 1  # rest.BeforeDelete bumps it
        self.schedule_gc()
        return self.replace(rt, current, {**current, "metadata": new_meta})

    def _delete_namespace(self, rt: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        """The namespace controller: Terminating (no new objects: 403), everything in it is
        deleted, and the Namespace goes once nothing is left (finalizers of its objects hold it)."""
        name = current["metadata"]["name"]
        marked = self.replace(rt, current, {**current, "status": {"phase": "Terminating"}, "metadata": dict(
            current["metadata"], deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)})
        for key in self.index.keys_in(name):
            inner = self.type_of(key[:2])
            if inner is not None and key in self.objects and not self.objects[key]["metadata"].get("deletionTimestamp"):
                self.delete(inner, name, key[3], {})
        self._finish_namespaces()
        return self.objects.get(self.key(rt, None, name), marked)

    def _finish_namespaces(self) -> bool:
        done = False
        for key, ns in self.index.items(("", "namespaces")):
            if ns["metadata"].get("deletionTimestamp") and not ns["metadata"].get("finalizers") \
                    and not self.index.in_namespace.get(key[3]):
                self._remove(key, self.type_of(key[:2]))  # type: ignore[arg-type]
                done = True
        return done

    def namespace_phase(self, name: str) -> str | None:
        """"Active", "Terminating", or None when no Namespace object has that name."""
        ns = self.objects.get(("", "namespaces", "", name))
        if ns is None:
            return None
        return "Terminating" if ns["metadata"].get("deletionTimestamp") else "Active"

    # -- watches ----------------------------------------------------------------------------

    def since(self, gk: GK, rv: int) -> list[Event]:
        """Events after ``rv`` for a resource; 410 Gone when the history no longer has them."""
        if rv < self.compacted:
            raise ApiStatus(410, "Expired", f"too old resource version: {rv} ({self.compacted})")
        return [e for e in self.history if e.rv > rv and e.gk == gk]

    def compact(self) -> int:
        """Forget every event so far (etcd compaction): watches resuming from any earlier
        resourceVersion answer 410 Gone. Returns the compacted revision."""
        self.rv += 1
        self.compacted = self.rv
        self.history.clear()
        return self.rv

    # -- the garbage collector (pkg/controller/garbagecollector) ---------------------------

    def schedule_gc(self) -> None:
        if self._gc_pending or self.schedule is None:
            return
        self._gc_pending = True
        self.schedule(self.gc_delay, self._gc_pass)

    def _gc_pass(self) -> None:
        self._gc_pending = False
        if self.collect():
            self.schedule_gc()  # cascades: dependents of what was just deleted

    def collect(self) -> bool:
        """One pass of the garbage collector (and the namespace controller); True if it changed
        anything."""
        changed = self._finish_namespaces()
        return emulator_gc.collect(self) or changed


def offer(w: Watcher, ev: Event) -> None:
    """Deliver ``ev`` to one watch, translating label-selector transitions as the watch cache
    does: an object leaving the selection is DELETED for that watch, one entering is ADDED."""
    if w.queue is None or ev.gk != w.gk:
        return
    ns = ev.obj["metadata"].get("namespace") or ""
    if w.namespace is not None and ns != w.namespace:
        return
    now = w.match(ev.obj)
    before = ev.old is not None and w.match(ev.old)
    if ev.type == "MODIFIED":
        if now and not before:
            w.queue.put_nowait(("ADDED", ev.obj))
        elif before and not now:
            w.queue.put_nowait(("DELETED", ev.obj))
        elif now:
            w.queue.put_nowait(("MODIFIED", ev.obj))
    elif now or (ev.type == "DELETED" and before):
        w.queue.put_nowait((ev.type, ev.obj))


def deep(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)
