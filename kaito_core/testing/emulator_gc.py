"""The emulator's garbage collector (pkg/controller/garbagecollector): ownerReference rules for
background, foreground and orphan deletion, run by the Store shortly after each change.

Like upstream's GC, which works from a dependency graph fed by its informers and never lists
every object, a pass looks only at the dependents whose owners changed since the last pass
(``Store.dirty``, filled on every write) and at the owners waiting on foreground or orphan
deletion (``Index.finalizing``). The dependents of what a pass deletes wait for the next pass,
as they wait in upstream's attemptToDelete queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaito_core.testing.emulator_index import Key

if TYPE_CHECKING:
    from kaito_core.testing.emulator_store import Store

NOWHERE: Key = ("", "", "", "")


def owner_state(store: Store, dep_key: Key, ref: dict[str, Any]) -> str:
    """'present', 'absent' (collect the dependent) or 'unresolvable' (never collected:
    unknown kind, or a namespaced owner named by a cluster-scoped dependent)."""
    rt = store.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
    if rt is None or (rt.namespaced and not dep_key[2]):
        return "unresolvable"
    owner = store.objects.get(store.key(rt, dep_key[2], ref.get("name", "")))
    return "present" if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else "absent"


def collect(store: Store) -> bool:
    """One pass of the garbage collector; True if it changed anything."""
    changed = False
    todo, store.dirty = sorted(store.dirty), set()
    for key in todo:
        obj = store.objects.get(key)
        if obj is not None and obj["metadata"].get("ownerReferences"):
            changed = collect_dependent(store, key, obj) or changed
    for key in sorted(store.index.finalizing):
        obj = store.objects.get(key)
        if obj is not None and key in store.index.finalizing:
            changed = release_owner(store, key, obj) or changed
    return changed


def _deleting(obj: dict[str, Any] | None, finalizer: str) -> bool:
    meta = (obj or {}).get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and finalizer in (meta.get("finalizers") or [])


def collect_dependent(store: Store, key: Key, obj: dict[str, Any]) -> bool:
    """Delete a dependent whose owners are all gone (or one of them is being deleted in the
    foreground); otherwise drop its references to owners gone or orphaning it."""
    refs = obj["metadata"].get("ownerReferences") or []
    rt = store.type_of(key[:2])
    states = [owner_state(store, key, r) for r in refs]
    owners = [store.objects.get(store.index.by_uid.get(r.get("uid"), NOWHERE)) for r in refs]
    if all(s == "absent" for s in states) or any(
            s == "present" and _deleting(o, "foregroundDeletion") for s, o in zip(states, owners)):
        if not obj["metadata"].get("deletionTimestamp") and rt is not None:
            store.delete(rt, key[2] or None, key[3], {"propagationPolicy": "Background"})
            return True
        return False
    keep = [r for r, s, o in zip(refs, states, owners)
            if s != "absent" and not (s == "present" and _deleting(o, "orphan"))]
    if keep != refs and rt is not None:
        store.replace(rt, obj, {**obj, "metadata": dict(obj["metadata"], ownerReferences=keep)})
        return True
    return False


def release_owner(store: Store, key: Key, obj: dict[str, Any]) -> bool:
    """Drop foregroundDeletion once no dependent blocks the owner (blockOwnerDeletion), and
    orphan once no dependent names it any more."""
    meta = obj["metadata"]
    fins = meta.get("finalizers") or []
    dependents = [store.objects[k] for k in store.index.dependents.get(meta["uid"], ())]
    if "foregroundDeletion" in fins and any(
            r.get("blockOwnerDeletion") and r.get("uid") == meta["uid"]
            for d in dependents for r in d["metadata"].get("ownerReferences") or []):
        return False
    if "orphan" in fins and dependents:
        return False
    rt = store.type_of(key[:2])
    if rt is None:
        return False
    left = [f for f in fins if f not in ("foregroundDeletion", "orphan")]
    store.replace(rt, obj, {**obj, "metadata": dict(meta, finalizers=left)})
    return True
