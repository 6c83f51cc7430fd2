"""Reads from the operator's watches instead of the API server (controller-runtime's informer
cache, in small): NodeClaims, Nodes, StatefulSets and Jobs that carry kaito's labels are kept
as the watch streams last showed them (Services and ConfigMaps too), and :class:`CachedKube`
answers ``get`` for those from memory, and ``list`` by kaito's labels once a full LIST of the
kind has filled the cache (controller-runtime's client reads Get and List from its informers
the same way). A pass of a karpenter Workspace listed its NodeClaims twice over HTTP.

Safe by construction for what the reconciler decides with it:

- ``list`` is answered from memory only for a selector that includes ``kaito.sh/workspace``
  (what the watches select, so nothing matching can be missing from a synced cache) and only
  after the kind was synced by a full LIST (:meth:`WatchCache.replace`, the operator's re-list,
  which runs once at start): before that, an empty cache would hide upstream's NodeClaims that
  should be adopted;
- a miss (not seen yet: the watch lags a create, or the object is not labelled, such as a BYO
  node) falls back to a real GET;
- a stale hit (the object changed or went away and the event is still on its way) only delays
  a decision: that event wakes the Workspace again. Creates stay idempotent (deterministic
  names; 409 means "already there").

Writes go to the API server and update the cache with the answer. No kopf import.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any, Mapping

from kaito_core.operator.kube import matches

SELECTED_BY = "kaito.sh/workspace"  # the label every cached kind's watch selects on

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace ("" when cluster-scoped), name


def _copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a JSON-like object: callers get their own, the cache stays as the watch
    showed it. A pickle round trip takes a quarter of ``copy.deepcopy``'s time on a StatefulSet
    (deep copies were the largest part of a resync pass)."""
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


def _newer(obj: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """Is ``obj`` a later version than ``than``? resourceVersions are etcd revisions (decimal
    integers) on every API server we know; one that is not an integer is not compared, and
    the watch's version is kept."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion")) > int(
            (than.get("metadata") or {}).get("resourceVersion"))
    except (TypeError, ValueError):
        return False


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion") or "", obj.get("kind") or "", meta.get("namespace") or "", meta.get("name") or ""


class WatchCache:
    """Objects by (apiVersion, kind, namespace, name), fed by watch events (any thread)."""

    def __init__(self, kinds: set[tuple[str, str]]):
        self.kinds = kinds  # (apiVersion, kind) served from here
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._synced: set[tuple[str, str]] = set()  # kinds a full LIST has filled
        self.hits = 0
        self.misses = 0

    def put(self, obj: Mapping[str, Any], *, response: bool = False) -> None:
        """Store ``obj``. A watch event always wins (a watch delivers each object's versions in
        order). ``response``: the answer to our own create or patch, which can arrive after the
        watch already delivered a newer version (a controller wrote the object's status in
        between); it replaces only an older version, or the cache would hold the stale one
        until the next re-list (a node Ready for a minute, its Workspace still waiting)."""
        key = key_of(obj)
        with self._lock:
            held = self._objects.get(key)
            if response and held is not None and not _newer(obj, held):
                return
            self._objects[key] = dict(obj)

    def remove(self, obj: Mapping[str, Any]) -> None:
        with self._lock:
            self._objects.pop(key_of(obj), None)

    def replace(self, api_version: str, kind: str, items: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """A fresh LIST of one kind: it becomes the truth. Returns the objects the cache held
        that the list no longer has (deleted while a watch was down: kopf's re-list after a
        watch outage sends no DELETED for them), so their Workspaces can be woken."""
        fresh = {key_of({**i, "apiVersion": api_version, "kind": kind}): {**i, "apiVersion": api_version, "kind": kind}
                 for i in items}
        with self._lock:
            gone = [k for k in self._objects if k[:2] == (api_version, kind) and k not in fresh]
            removed = [self._objects.pop(k) for k in gone]
            self._objects.update(fresh)
            self._synced.add((api_version, kind))
        return removed

    def synced(self, api_version: str, kind: str) -> bool:
        with self._lock:
            return (api_version, kind) in self._synced

    def select(self, api_version: str, kind: str, namespace: str | None,
               labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Copies of the cached objects of one kind (in ``namespace``, if given) with ``labels``."""
        with self._lock:
            return [_copy(o) for k, o in self._objects.items()
                    if k[:2] == (api_version, kind) and (namespace is None or k[2] == namespace)
                    and matches((o.get("metadata") or {}).get("labels"), labels)]

    def objects(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        """Copies of every cached object of one kind."""
        with self._lock:
            return [_copy(o) for k, o in self._objects.items() if k[:2] == (api_version, kind)]

    def holds(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        with self._lock:
            return (api_version, kind, namespace or "", name) in self._objects

    def lookup(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((api_version, kind, namespace or "", name))
            if obj is None:
                self.misses += 1
                return None
            self.hits += 1
            return _copy(obj)

    def __len__(self) -> int:
        return len(self._objects)


class CachedKube:
    """The operator's client with ``get`` served from a :class:`WatchCache` for watched kinds
    (the rest of the :class:`~kaito_core.types.KubeAPI` passes through)."""

    def __init__(self, kube: Any, cache: WatchCache):
        self.kube = kube
        self.cache = cache

    def get(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        if (api_version, kind) in self.cache.kinds:
            hit = self.cache.lookup(api_version, kind, namespace, name)
            if hit is not None:
                return hit
        return self.kube.get(api_version=api_version, kind=kind, name=name, namespace=namespace)

    @property
    def uncached(self) -> Any:
        """The API client underneath (reads that must see the server's truth)."""
        return self.kube

    def list(self, *, api_version: str, kind: str, namespace: str | None = None,
             labels: Mapping[str, str] | None = None) -> list[dict]:
        if labels and SELECTED_BY in labels and (api_version, kind) in self.cache.kinds \
                and self.cache.synced(api_version, kind):
            return self.cache.select(api_version, kind, namespace, labels)
        return self.kube.list(api_version=api_version, kind=kind, namespace=namespace, labels=labels)

    def probably_absent(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """True when a watched kind's cache has no such object: a writer may try to create it
        first (a 409 then means it exists after all: read it and go on), saving a GET per new
        child. False for kinds not watched here (nothing is known)."""
        if (api_version, kind) not in self.cache.kinds:
            return False
        return not self.cache.holds(api_version, kind, namespace, name)

    def absent(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """True when a full LIST synced this kind and no watch event has shown such an object
        since: for objects only kaito creates (its labelled children, through this client, which
        caches what it creates), a miss is an answer, as controller-runtime's cached client
        answers Get with NotFound from its informer's store. Saves a GET per pass while a
        Workspace waits for its nodes (its StatefulSet does not exist yet)."""
        return self.cache.synced(api_version, kind) and not self.cache.holds(api_version, kind, namespace, name)

    def create(self, obj: dict) -> dict:
        out = self.kube.create(obj)
        if (obj.get("apiVersion"), obj.get("kind")) in self.cache.kinds and isinstance(out, dict) and out.get("metadata"):
            self.cache.put({**out, "apiVersion": obj["apiVersion"], "kind": obj["kind"]}, response=True)
        return out

    def delete(self, *, api_version: str, kind: str, name: str, namespace: str | None = None, **kw: Any) -> bool:
        self.cache.remove({"apiVersion": api_version, "kind": kind, "metadata": {"namespace": namespace, "name": name}})
        return self.kube.delete(api_version=api_version, kind=kind, name=name, namespace=namespace, **kw)

    def patch(self, *, api_version: str, kind: str, name: str, namespace: str | None = None, **kw: Any) -> dict:
        out = self.kube.patch(api_version=api_version, kind=kind, name=name, namespace=namespace, **kw)
        if (api_version, kind) in self.cache.kinds and isinstance(out, dict) and out.get("metadata"):
            self.cache.put({**out, "apiVersion": api_version, "kind": kind}, response=True)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)  # list, request, close, calls...
