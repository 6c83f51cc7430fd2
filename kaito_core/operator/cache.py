"""Reads from the operator's watches instead of the API server (controller-runtime's informer
cache, in small): NodeClaims, Nodes, StatefulSets and Jobs that carry kaito's labels are kept
as the watch streams last showed them, and :class:`CachedKube` answers ``get`` for those from
memory.

Safe by construction for what the reconciler decides with it:

- a miss (not seen yet: the watch lags a create, or the object is not labelled, such as a BYO
  node) falls back to a real GET;
- a stale hit (the object changed or went away and the event is still on its way) only delays
  a decision: that event wakes the Workspace again. Creates stay idempotent (deterministic
  names; 409 means "already there").

Writes go to the API server and update the cache with the answer. No kopf import.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Mapping

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace ("" when cluster-scoped), name


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion") or "", obj.get("kind") or "", meta.get("namespace") or "", meta.get("name") or ""


class WatchCache:
    """Objects by (apiVersion, kind, namespace, name), fed by watch events (any thread)."""

    def __init__(self, kinds: set[tuple[str, str]]):
        self.kinds = kinds  # (apiVersion, kind) served from here
        self._objects: dict[Key, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def put(self, obj: Mapping[str, Any]) -> None:
        with self._lock:
            self._objects[key_of(obj)] = dict(obj)

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
        return removed

    def objects(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        """Copies of every cached object of one kind."""
        with self._lock:
            return [copy.deepcopy(o) for k, o in self._objects.items() if k[:2] == (api_version, kind)]

    def lookup(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((api_version, kind, namespace or "", name))
            if obj is None:
                self.misses += 1
                return None
            self.hits += 1
            return copy.deepcopy(obj)

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

    def create(self, obj: dict) -> dict:
        out = self.kube.create(obj)
        if (obj.get("apiVersion"), obj.get("kind")) in self.cache.kinds and isinstance(out, dict) and out.get("metadata"):
            self.cache.put({**out, "apiVersion": obj["apiVersion"], "kind": obj["kind"]})
        return out

    def delete(self, *, api_version: str, kind: str, name: str, namespace: str | None = None, **kw: Any) -> bool:
        self.cache.remove({"apiVersion": api_version, "kind": kind, "metadata": {"namespace": namespace, "name": name}})
        return self.kube.delete(api_version=api_version, kind=kind, name=name, namespace=namespace, **kw)

    def patch(self, *, api_version: str, kind: str, name: str, namespace: str | None = None, **kw: Any) -> dict:
        out = self.kube.patch(api_version=api_version, kind=kind, name=name, namespace=namespace, **kw)
        if (api_version, kind) in self.cache.kinds and isinstance(out, dict) and out.get("metadata"):
            self.cache.put({**out, "apiVersion": api_version, "kind": kind})
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)  # list, request, close, calls...
