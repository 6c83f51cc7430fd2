"""The emulator's indexes (emulator_index) and its garbage collector's work list stay what a scan
of every object says, through a seeded random run of creates, updates, deletes (each
propagation policy), namespace deletions, a kind that starts resolving, and GC passes."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest

from kaito_core.testing.emulator_crds import builtin_types
from kaito_core.testing.emulator_index import Index
from kaito_core.testing.emulator_store import ResourceType, Store

NAMESPACES = ("a", "b", "c")
KINDS = (("", "v1", "configmaps"), ("", "v1", "secrets"), ("", "v1", "pods"), ("", "v1", "nodes"))
WIDGET = ResourceType("example.com", "v1", "widgets", "Widget", namespaced=True)


def new_store() -> Store:
    store = Store(history=50)  # no schedule: the test runs every GC pass itself
    for rt in builtin_types():
        store.register(rt)
    for ns in NAMESPACES:
        make_namespace(store, ns)
    return store


def make_namespace(store: Store, name: str) -> None:
    store.create(store.types[("", "v1", "namespaces")], {"apiVersion": "v1", "kind": "Namespace",
                                                         "metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]}})


def full_scan_list(store: Store, gk: tuple[str, str], namespace: str | None) -> list[dict[str, Any]]:
    """Store.list as it was before the indexes: every object looked at, sorted by key."""
    found = [(k, o) for k, o in store.objects.items() if k[:2] == gk and (namespace is None or k[2] == namespace)]
    return [o for _, o in sorted(found, key=lambda ko: ko[0])]


def owner_state(store: Store, key: tuple, ref: dict[str, Any]) -> str:
    rt = store.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
    if rt is None or (rt.namespaced and not key[2]):
        return "unresolvable"
    owner = store.objects.get(store.key(rt, key[2], ref.get("name", "")))
    return "present" if owner is not None and owner["metadata"]["uid"] == ref.get("uid") else "absent"


def deleting(obj: dict[str, Any] | None, finalizer: str) -> bool:
    meta = (obj or {}).get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and finalizer in (meta.get("finalizers") or [])


def full_scan_gc_work(store: Store) -> list[tuple[str, tuple]]:
    """What a garbage collector that scans every object (the emulator's before the indexes)
    would still do; empty once the incremental one has settled."""
    by_uid = {o["metadata"]["uid"]: o for o in store.objects.values()}
    work, blocking = [], collections.Counter()
    for key, obj in store.objects.items():
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs:
            continue
        states = [owner_state(store, key, r) for r in refs]
        owners = [by_uid.get(r.get("uid")) for r in refs]
        if all(s == "absent" for s in states) or any(
                s == "present" and deleting(o, "foregroundDeletion") for s, o in zip(states, owners)):
            if not obj["metadata"].get("deletionTimestamp"):
                work.append(("delete", key))
        elif any(s == "absent" or (s == "present" and deleting(o, "orphan")) for s, o in zip(states, owners)):
            work.append(("drop references", key))
        blocking.update(r.get("uid") for r in refs if r.get("blockOwnerDeletion"))
    named = {r.get("uid") for o in store.objects.values() for r in o["metadata"].get("ownerReferences") or []}
    for key, obj in store.objects.items():
        meta = obj["metadata"]
        if (deleting(obj, "foregroundDeletion") or deleting(obj, "orphan")) \
                and not (deleting(obj, "foregroundDeletion") and blocking[meta["uid"]]) \
                and not (deleting(obj, "orphan") and meta["uid"] in named):
            work.append(("release", key))
        if key[:2] == ("", "namespaces") and meta.get("deletionTimestamp") and not meta.get("finalizers") \
                and not any(k[2] == key[3] for k in store.objects):
            work.append(("finish namespace", key))
    return work


def assert_consistent(store: Store) -> None:
    assert store.index.snapshot() == Index.build(store.objects).snapshot()
    for group, _, plural in KINDS:
        for ns in (None, *NAMESPACES, ""):
            assert store.list(store.type_of((group, plural)), ns, lambda o: True) == \
                full_scan_list(store, (group, plural), ns)


def settle(store: Store) -> None:
    for _ in range(200):
        if not store.collect():
            break
    else:
        pytest.fail("the garbage collector did not settle in 200 passes")
    assert full_scan_gc_work(store) == []
    assert_consistent(store)


def reference_to(obj: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "blockOwnerDeletion": rnd.random() < 0.5}


def random_refs(store: Store, seen: list[dict[str, Any]], ns: str, rnd: random.Random) -> list[dict[str, Any]]:
    """Owners in the same namespace, alive or long gone, plus now and then a Widget (a kind
    the store may not serve yet) or a cluster-scoped Node."""
    pool = [o for o in seen if (o["metadata"].get("namespace") or "") in (ns, "") or rnd.random() < 0.05]
    refs = [reference_to(o, rnd) for o in rnd.sample(pool, min(len(pool), rnd.choice((0, 1, 1, 2))))]
    if rnd.random() < 0.25:
        refs.append({"apiVersion": "example.com/v1", "kind": "Widget", "name": f"w{rnd.randrange(3)}",
                     "uid": f"widget-{rnd.randrange(3)}"})
    return refs


def uid_free(store: Store, uid: str) -> bool:
    return all(o["metadata"]["uid"] != uid for o in store.objects.values())


def create(store: Store, seen: list[dict[str, Any]], rnd: random.Random, n: int) -> None:
    group, version, plural = rnd.choice(KINDS + ((WIDGET.group, WIDGET.version, WIDGET.plural),))
    rt = store.types.get((group, version, plural))
    live = [ns for ns in NAMESPACES if store.namespace_phase(ns) == "Active"]
    if rt is None or not live:
        return
    ns = rnd.choice(live) if rt.namespaced else ""
    widget = rnd.randrange(3)  # Widgets are the w0..w2 (uid widget-0..2) that references may name
    uid = f"widget-{widget}" if rt is WIDGET and uid_free(store, f"widget-{widget}") else None
    meta: dict[str, Any] = {"name": f"w{widget}" if uid else f"o{n}" if rnd.random() < 0.8 else f"o{rnd.randrange(n + 1)}",
                            "labels": {"n": str(n % 3)}, "ownerReferences": random_refs(store, seen, ns, rnd)}
    if ns:
        meta["namespace"] = ns
    if rnd.random() < 0.2:
        meta["finalizers"] = ["example.com/hold"]
    if store.key(rt, ns, meta["name"]) in store.objects:
        return
    obj = store.create(rt, {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": meta}, uid=uid)
    seen.append(obj)


def update(store: Store, seen: list[dict[str, Any]], rnd: random.Random) -> None:
    if not store.objects:
        return
    key = rnd.choice(sorted(k for k in store.objects if k[:2] != ("", "namespaces")) or [None])
    if key is None:
        return
    current = store.objects[key]
    meta = dict(current["metadata"])
    what = rnd.choice(("labels", "references", "finalizers"))
    if what == "labels":
        meta["labels"] = {"n": str(rnd.randrange(3))}
    elif what == "references":
        meta["ownerReferences"] = random_refs(store, seen, key[2], rnd)
    else:
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != "example.com/hold"]
    store.replace(store.type_of(key[:2]), current, {**current, "metadata": meta})


def delete(store: Store, rnd: random.Random) -> None:
    keys = sorted(k for k in store.objects if k[:2] != ("", "namespaces"))
    if keys:
        key = rnd.choice(keys)
        policy = rnd.choice(("Background", "Foreground", "Orphan"))
        store.delete(store.type_of(key[:2]), key[2] or None, key[3], {"propagationPolicy": policy})


def delete_namespace(store: Store, rnd: random.Random) -> None:
    ns = rnd.choice(NAMESPACES)
    if store.namespace_phase(ns) == "Active":
        store.delete(store.types[("", "v1", "namespaces")], None, ns, {})
    elif store.namespace_phase(ns) is None:
        make_namespace(store, ns)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_indexes_and_gc_match_a_full_scan(seed):
    rnd = random.Random(seed)
    store, seen = new_store(), []
    for n in range(400):
        if n == 200:
            settle(store)
            assert any(r["kind"] == "Widget" for o in store.objects.values()
                       for r in o["metadata"].get("ownerReferences") or [])
            store.register(WIDGET)  # references to Widgets resolve from now on: the absent are collected
            settle(store)
        op = rnd.choices(("create", "update", "delete", "collect", "namespace", "settle"),
                         weights=(40, 25, 20, 10, 2, 3))[0]
        if op == "create":
            create(store, seen, rnd, n)
        elif op == "update":
            update(store, seen, rnd)
        elif op == "delete":
            delete(store, rnd)
        elif op == "collect":
            store.collect()
        elif op == "namespace":
            delete_namespace(store, rnd)
        else:
            settle(store)
        assert_consistent(store)
    settle(store)
    # the run exercised what it is about: dependents collected, references dropped, owners released
    kinds_seen = {o["kind"] for o in seen}
    assert {"ConfigMap", "Secret", "Pod", "Node", "Widget"} <= kinds_seen
    assert any(o["metadata"].get("ownerReferences") for o in seen)


def test_a_stale_index_is_caught():
    """The consistency check fails when the index misses a write made behind its back."""
    store = new_store()
    rt = store.types[("", "v1", "configmaps")]
    store.create(rt, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "a"}})
    store.objects[("", "configmaps", "a", "y")] = {"metadata": {"name": "y", "namespace": "a", "uid": "u"}}
    with pytest.raises(AssertionError):
        assert_consistent(store)


def test_gc_left_work_is_caught():
    """The full-scan check sees a dependent whose owner went when the work list forgot it."""
    store = new_store()
    rt = store.types[("", "v1", "configmaps")]
    owner = store.create(rt, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o", "namespace": "a"}})
    store.create(rt, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "d", "namespace": "a", "ownerReferences": [reference_to(owner, random.Random(0))]}})
    settle(store)
    store.delete(rt, "a", "o", {})
    store.dirty.clear()  # what a missed trigger would leave
    store.collect()
    assert full_scan_gc_work(store) == [("delete", ("", "configmaps", "a", "d"))]
