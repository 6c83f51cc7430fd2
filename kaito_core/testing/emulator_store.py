"""The API emulator's state: objects, one global resourceVersion (as etcd's revision), a
bounded event history for watches (older versions answer 410 Gone), finalizers and deletion,
and the garbage collector's ownerReference rules. Runs on the emulator's event loop only.

Stored objects are never changed in place: every write stores a new dict, so an event or a
response can share them without copying.
"""

from __future__ import annotations

import collections
import copy
import datetime
import uuid
from dataclasses import dataclass
from typing import Any, Callable

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
        self.objects: dict[Key, dict[str, Any]] = {}
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
        self._kinds.clear()

    def drop_types(self, crd_name: str) -> list[ResourceType]:
        """Stop serving what a CRD declared; returns those types."""
        self._kinds.clear()
        return [self.types.pop(k) for k in [k for k, rt in self.types.items() if rt.crd == crd_name]]

    def unregister_crd(self, crd_name: str) -> None:
        """A deleted CRD takes its custom resources with it."""
        for rt in self.drop_types(crd_name):
            for key in [key for key in self.objects if key[:2] == rt.gk]:
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
        found = [(k, o) for k, o in self.objects.items()
                 if k[:2] == rt.gk and (namespace is None or k[2] == namespace) and match(o)]
        return [o for _, o in sorted(found, key=lambda ko: ko[0])]  # etcd's key order

    # -- writes -----------------------------------------------------------------------------

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
        self.objects[key] = stored
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
            del self.objects[key]
            self._publish(rt, "DELETED", stored, current)
            self.schedule_gc()
            return stored
        self.objects[key] = stored
        self._publish(rt, "MODIFIED", stored, current)
        if meta.get("ownerReferences") != (current.get("metadata") or {}).get("ownerReferences"):
            self.schedule_gc()
        return stored

    def _remove(self, key: Key, rt: ResourceType) -> dict[str, Any]:
        current = self.objects.pop(key)
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
        for key in [k for k in self.objects if k[2] == name]:
            inner = self.type_of(key[:2])
            if inner is not None and key in self.objects and not self.objects[key]["metadata"].get("deletionTimestamp"):
                self.delete(inner, name, key[3], {})
        self._finish_namespaces()
        return self.objects.get(self.key(rt, None, name), marked)

    def _finish_namespaces(self) -> bool:
        done = False
        for key, ns in list(self.objects.items()):
            if key[:2] == ("", "namespaces") and ns["metadata"].get("deletionTimestamp") \
                    and not ns["metadata"].get("finalizers") and not any(k[2] == key[3] for k in self.objects):
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

    def _owner_state(self, dep_key: Key, ref: dict[str, Any]) -> str:
        """'present', 'absent' (collect the dependent) or 'unresolvable' (never collected:
        unknown kind, or a namespaced owner named by a cluster-scoped dependent)."""
        rt = self.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if rt is None or (rt.namespaced and not dep_key[2]):
            return "unresolvable"
        owner = self.objects.get(self.key(rt, dep_key[2], ref.get("name", "")))
        return "present" if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else "absent"

    def collect(self) -> bool:
        """One pass of the garbage collector (and the namespace controller); True if it changed
        anything."""
        changed = self._finish_namespaces()
        by_uid = {o["metadata"]["uid"]: (k, o) for k, o in self.objects.items()}
        blocking: dict[str, int] = collections.Counter()
        dependents = [(k, o) for k, o in self.objects.items() if o["metadata"].get("ownerReferences")]
        for key, obj in dependents:
            refs = obj["metadata"].get("ownerReferences") or []
            if key not in self.objects:
                continue
            rt = self.type_of(key[:2])
            states = [self._owner_state(key, r) for r in refs]
            owners = [by_uid.get(r.get("uid"), (None, None))[1] for r in refs]
            if all(s == "absent" for s in states) or any(
                    s == "present" and "foregroundDeletion" in (o["metadata"].get("finalizers") or [])
                    and o["metadata"].get("deletionTimestamp") for s, o in zip(states, owners)):
                if not obj["metadata"].get("deletionTimestamp") and rt is not None:
                    self.delete(rt, key[2] or None, key[3], {"propagationPolicy": "Background"})
                    changed = True
            else:
                keep = [r for r, s, o in zip(refs, states, owners) if s != "absent" and not (
                    s == "present" and "orphan" in (o["metadata"].get("finalizers") or [])
                    and o["metadata"].get("deletionTimestamp"))]
                if keep != refs and rt is not None:
                    self.replace(rt, obj, {**obj, "metadata": dict(obj["metadata"], ownerReferences=keep)})
                    changed = True
            for r in refs if key in self.objects else []:
                if r.get("blockOwnerDeletion"):
                    blocking[r.get("uid")] += 1
        for key, obj in list(self.objects.items()):
            meta = obj["metadata"]
            fins = meta.get("finalizers") or []
            if not meta.get("deletionTimestamp") or not ({"foregroundDeletion", "orphan"} & set(fins)):
                continue
            if "foregroundDeletion" in fins and blocking.get(meta["uid"]):
                continue
            has_dependents = any(r.get("uid") == meta["uid"] for o in self.objects.values()
                                 for r in o["metadata"].get("ownerReferences") or [])
            if "orphan" in fins and has_dependents:
                continue
            rt = self.type_of(key[:2])
            if rt is not None:
                left = [f for f in fins if f not in ("foregroundDeletion", "orphan")]
                self.replace(rt, obj, {**obj, "metadata": dict(meta, finalizers=left)})
                changed = True
        return changed


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
