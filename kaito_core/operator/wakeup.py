"""Watch events on children, pods, nodes and node claims -> a wake-up for the owning Workspace.

The operator does not poll: each Workspace has a kopf daemon that sleeps until one of the
objects it depends on changes (or the slow resync is due). Objects name their Workspace by
the labels every child, pod, NodeClaim and Karpenter-made Node carries
(``kaito.sh/workspacenamespace`` + ``kaito.sh/workspace``). Only changes that can change the
Workspace's status wake it: a different ``status`` (or deletion mark) than the last one seen,
or a deletion. The operator's own creates (no status yet) and kopf's initial listing (the
resume handlers reconcile everything at start) wake nothing. No kopf import: unit-testable.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping

from kaito_core.reconcile import names
from kaito_core.reconcile.observed import node_gpus, node_is_ready


def owner_key(labels: Mapping[str, str] | None, namespace: str | None = None) -> str | None:
    """``namespace/name`` of the Workspace an object belongs to, from its labels (a namespaced
    child without the namespace label lives in its Workspace's namespace)."""
    labels = labels or {}
    name, namespace = labels.get(names.LABEL_WORKSPACE), labels.get(names.LABEL_NAMESPACE) or namespace
    if not name or not namespace:
        return None
    return f"{namespace}/{name}"


def status_digest(body: Mapping[str, Any], kind: str = "") -> str:
    """What of an object can change its Workspace's status. For Nodes: readiness, GPUs, labels
    and cordoning (not the kubelet's heartbeats, which rewrite the status every few minutes)."""
    meta = body.get("metadata") or {}
    deleting = bool(meta.get("deletionTimestamp"))
    if kind == "nodes":
        if not body.get("status"):
            return EMPTY
        return names.stable_hash({"ready": node_is_ready(body), "gpus": node_gpus(body), "labels": meta.get("labels"),
                                  "unschedulable": bool((body.get("spec") or {}).get("unschedulable")),
                                  "deleting": deleting})
    if kind in OWNED:
        # A hand edit of what we applied (spec, data) wakes the Workspace: drift is undone at
        # once, not at the next resync (kaito_core.operator.drift).
        return names.stable_hash({"status": body.get("status") or {}, "deleting": deleting,
                                  "spec": body.get("spec"), "data": body.get("data")})
    return names.stable_hash({"status": body.get("status") or {}, "deleting": deleting})


OWNED = ("statefulsets", "jobs", "services", "configmaps")
EMPTY = names.stable_hash({"status": {}, "deleting": False})


class Wakeups:
    """Per-Workspace wake-up events and the last status seen of each watched object.

    Used from the event loop thread only (kopf handlers and daemons), so no locks.
    """

    # A wake-up for a Workspace whose daemon has not started is kept this long (kopf starts a
    # daemon after the create handler; a node that turns Ready in between must not wait for the
    # first resync). Unclaimed ones (children of a deleted Workspace) are dropped after it.
    KEEP_SECONDS = 300.0

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._unclaimed: dict[str, float] = {}  # key -> when a wake-up was kept for a daemon to come
        self._seen: dict[tuple[str, str, str], str] = {}
        # BYO Workspaces ("ns/name" -> label selector): their nodes carry no kaito labels, so
        # a change on any node matching the selector wakes them.
        self.selectors: dict[str, Mapping[str, Any]] = {}

    def event_for(self, key: str) -> asyncio.Event:
        """The daemon's event for ``key``; already set when a wake-up came before the daemon."""
        self._unclaimed.pop(key, None)
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
        return ev

    def drop(self, key: str, ev: asyncio.Event | None = None) -> None:
        if ev is None or self._events.get(key) is ev:
            self._events.pop(key, None)
            self._unclaimed.pop(key, None)

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> str | None:
        """Record a watch event; return the Workspace key to wake, or None."""
        meta = body.get("metadata") or {}
        key = owner_key(meta.get("labels"), meta.get("namespace"))
        if key is None:
            return None
        return key if self.changed(kind, event_type, body) else None

    def changed(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Whether this event changes what a Workspace would report (and remember it)."""
        meta = body.get("metadata") or {}
        obj = (kind, meta.get("namespace") or "", meta.get("name") or "")
        if event_type == "DELETED":
            self._seen.pop(obj, None)
            return True
        digest = status_digest(body, kind)
        before = self._seen.get(obj)
        self._seen[obj] = digest
        if event_type is None:  # kopf's initial listing: resume handlers look at everything anyway
            return False
        if before is None:  # first sight (our own create): only a status is news
            return status_digest(body) != EMPTY
        return digest != before

    def byo_keys(self, labels: Mapping[str, str]) -> list[str]:
        """BYO Workspaces whose selector matches a node with ``labels``."""
        from kaito_core.builtins.byo import selector_matches

        return [key for key, selector in self.selectors.items() if selector_matches(labels, selector)]

    def keys_in(self, namespace: str) -> list[str]:
        """The Workspaces of ``namespace`` whose daemons wait for a wake-up."""
        return [k for k in self._events if k.startswith(f"{namespace}/")]

    def wake(self, key: str) -> bool:
        """Set ``key``'s event; False when no daemon waits for that Workspace yet (the wake-up is
        then kept for :data:`KEEP_SECONDS`: the daemon's first wait returns at once)."""
        ev = self._events.get(key)
        if ev is not None and key not in self._unclaimed:
            ev.set()
            return True
        now = time.monotonic()
        for stale in [k for k, t in self._unclaimed.items() if now - t > self.KEEP_SECONDS]:
            self._unclaimed.pop(stale, None)
            self._events.pop(stale, None)
        ev = self._events.get(key)
        if ev is None:
            ev = self._events[key] = asyncio.Event()
            self._unclaimed[key] = now
        ev.set()
        return False

    def __len__(self) -> int:
        return len(self._seen)
