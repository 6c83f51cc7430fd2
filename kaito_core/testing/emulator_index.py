"""Secondary indexes over the emulator's stored objects, kept on every write so that no request
scans every object: a cluster holds thousands of pods the operator never touches, and before
these indexes one write cost ~2 ms with 3,100 unrelated objects stored against 0.2 ms without.

kube-apiserver answers the same questions from its watch cache (per-resource stores with a
namespace index, ``storage/cacher``) and the garbage collector from its dependency graph
(``garbagecollector/graph.go``: owner uid -> dependents), never by scanning etcd.
"""

from __future__ import annotations

from typing import Any

GK = tuple[str, str]
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name
CASCADE = frozenset({"foregroundDeletion", "orphan"})  # the finalizers the garbage collector owns


def owner_uids(obj: dict[str, Any]) -> set[Any]:
    return {r.get("uid") for r in obj["metadata"].get("ownerReferences") or []}


def finalizing(obj: dict[str, Any]) -> bool:
    """Being deleted and waiting on the garbage collector (foreground or orphan deletion)."""
    meta = obj["metadata"]
    return bool(meta.get("deletionTimestamp")) and bool(CASCADE & set(meta.get("finalizers") or []))


class Index:
    def __init__(self) -> None:
        self.by_kind: dict[GK, dict[str, dict[Key, dict[str, Any]]]] = {}  # gk -> namespace -> key -> object
        self.in_namespace: dict[str, set[Key]] = {}  # namespaced objects only
        self.by_uid: dict[Any, Key] = {}
        self.dependents: dict[Any, set[Key]] = {}  # owner uid (as the reference names it) -> dependents
        self.finalizing: set[Key] = set()
        self._sorted: dict[tuple[GK, str], list[Key]] = {}  # etcd key order, dropped when keys come or go

    @classmethod
    def build(cls, objects: dict[Key, dict[str, Any]]) -> "Index":
        index = cls()
        for key, obj in objects.items():
            index.put(key, obj, None)
        return index

    def snapshot(self) -> dict[str, Any]:
        """Everything the index holds, in a comparable form (the consistency test compares a
        maintained index with one built by a full scan)."""
        return {"by_kind": {gk: {ns: dict(objs) for ns, objs in by_ns.items() if objs}
                            for gk, by_ns in self.by_kind.items() if any(by_ns.values())},
                "in_namespace": {ns: set(keys) for ns, keys in self.in_namespace.items() if keys},
                "by_uid": dict(self.by_uid),
                "dependents": {uid: set(keys) for uid, keys in self.dependents.items() if keys},
                "finalizing": set(self.finalizing),
                "sorted": {gkns: list(keys) for gkns, keys in self._sorted.items()
                           if keys != sorted(self.by_kind.get(gkns[0], {}).get(gkns[1], {}))}}

    def put(self, key: Key, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """``obj`` is now stored at ``key`` (over ``old``, None when new)."""
        by_ns = self.by_kind.setdefault(key[:2], {})
        if old is None:
            by_ns.setdefault(key[2], {})[key] = obj
            self._sorted.pop((key[:2], key[2]), None)
            if key[2]:
                self.in_namespace.setdefault(key[2], set()).add(key)
        else:
            by_ns[key[2]][key] = obj
            self.by_uid.pop(old["metadata"].get("uid"), None)
            self._unlink(key, old)
        self.by_uid[obj["metadata"].get("uid")] = key
        for uid in owner_uids(obj):
            self.dependents.setdefault(uid, set()).add(key)
        if finalizing(obj):
            self.finalizing.add(key)

    def pop(self, key: Key, obj: dict[str, Any]) -> None:
        """``obj`` (stored at ``key``) is gone."""
        by_ns = self.by_kind[key[:2]]
        del by_ns[key[2]][key]
        if not by_ns[key[2]]:
            del by_ns[key[2]]
        self._sorted.pop((key[:2], key[2]), None)
        if key[2]:
            self.in_namespace[key[2]].discard(key)
            if not self.in_namespace[key[2]]:
                del self.in_namespace[key[2]]
        if self.by_uid.get(obj["metadata"].get("uid")) == key:
            del self.by_uid[obj["metadata"].get("uid")]
        self._unlink(key, obj)

    def _unlink(self, key: Key, obj: dict[str, Any]) -> None:
        for uid in owner_uids(obj):
            keys = self.dependents.get(uid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.dependents[uid]
        self.finalizing.discard(key)

    def items(self, gk: GK, namespace: str | None = None) -> list[tuple[Key, dict[str, Any]]]:
        """The objects of one resource (in one namespace), in etcd's key order."""
        by_ns = self.by_kind.get(gk) or {}
        out: list[tuple[Key, dict[str, Any]]] = []
        for ns in sorted(by_ns) if namespace is None else [namespace]:
            objs = by_ns.get(ns)
            if not objs:
                continue
            keys = self._sorted.get((gk, ns))
            if keys is None:
                keys = self._sorted[(gk, ns)] = sorted(objs)
            out.extend((key, objs[key]) for key in keys)
        return out

    def keys_in(self, namespace: str) -> list[Key]:
        return sorted(self.in_namespace.get(namespace) or ())
