"""Level-triggered truth for the watch cache (issue 16, finding 3).

A watch stream that was down long enough for the API server to compact its history gets 410
Gone, and kopf re-lists: objects deleted meanwhile simply are not in the new list, and no
DELETED event is ever sent for them. The cache (:mod:`kaito_core.operator.cache`) would keep
them, and a Workspace whose NodeClaim and Node are gone would stay Ready until a restart.
controller-runtime's informers re-list for the same reason; here the operator LISTs the cached
kinds every ``KAITO_RELIST_SECONDS`` and makes the lists the cache's truth: what is gone leaves
the cache and wakes its Workspace, which then requests the node again (same name: never a
second one). No kopf import.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from kaito_core.operator import metrics
from kaito_core.operator.kube import ApiError, resource_path
from kaito_core.reconcile import names

log = logging.getLogger("kaito.operator")
PLURALS = {"Node": "nodes", "NodeClaim": "nodeclaims", "StatefulSet": "statefulsets", "Job": "jobs"}


async def relist(reconciler: Any, cache: Any, wakeups: Any,
                 in_thread: Callable[..., Awaitable[Any]]) -> int:
    """One round: returns the number of stale objects dropped from ``cache``."""
    dropped = 0
    for api_version, kind in sorted(cache.kinds):
        try:
            items = await in_thread(list_labelled, reconciler.kube, api_version, kind)
        except ApiError as exc:
            if exc.status == 404:
                continue  # the kind is not served here (Karpenter's CRDs not installed)
            raise
        for gone in cache.replace(api_version, kind, items):
            dropped += 1
            meta = gone.get("metadata") or {}
            log.info("relist: %s %s is gone (its DELETED event was missed)", kind, meta.get("name"))
            plural = PLURALS.get(kind, kind.lower() + "s")
            key = wakeups.observe(plural, "DELETED", gone)
            uid = (meta.get("labels") or {}).get(names.LABEL_UID)
            if uid and kind in ("StatefulSet", "Job", "Service", "ConfigMap"):
                reconciler.forget_object(uid, kind, meta.get("name") or "")  # apply it again
            if key is not None and wakeups.wake(key):
                metrics.woke(plural)
    return dropped


async def relist_pods(reconciler: Any, known: set[tuple[str, str]], gone: set[tuple[str, str]], wakeups: Any,
                      in_thread: Callable[..., Awaitable[Any]]) -> int:
    """The same for pods, which the operator reads from kopf's index (kopf never drops an
    indexed object its re-list no longer shows): ``known`` holds the (namespace, name) of the
    pods the watch showed; those the list lacks move to ``gone``, which the pass filters out of
    the index, and their Workspaces are woken. A pod of that name seen again leaves ``gone``."""
    items = await in_thread(list_labelled, reconciler.kube, "v1", "Pod")
    listed = {((i.get("metadata") or {}).get("namespace") or "", (i.get("metadata") or {}).get("name") or "")
              for i in items}
    stale = known - listed
    for ns, name in stale:
        known.discard((ns, name))
        gone.add((ns, name))
        log.info("relist: Pod %s/%s is gone (its DELETED event was missed)", ns, name)
    for ns in {ns for ns, _ in stale}:
        # the pods' labels are gone with them: wake every Workspace of the namespace (rare)
        for key in wakeups.keys_in(ns):
            wakeups.wake(key)
    return len(stale)


def sweep_orphans(reconciler: Any, cache: Any, suspects: set[tuple[str, str]]) -> list[str]:
    """Node requests whose Workspace is gone for good (its release was abandoned, its finalizer
    removed by hand, or upstream left them): released through the provisioner, so a GPU node
    never outlives its Workspace unnoticed (issue 16, finding 4). A Workspace must be missing
    from its namespace's list on two rounds in a row before its nodes go. ``suspects`` carries the first sightings
    between rounds. Synchronous (run it in a worker thread); returns the Workspaces swept."""
    from kaito_core.api import parse_workspace

    owners = set()
    for obj in cache.objects("karpenter.sh/v1", "NodeClaim"):
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(names.LABEL_WORKSPACE) and labels.get(names.LABEL_NAMESPACE) \
                and not (obj.get("metadata") or {}).get("deletionTimestamp"):
            owners.add((labels[names.LABEL_NAMESPACE], labels[names.LABEL_WORKSPACE]))
    swept: list[str] = []
    live: dict[str, set[str]] = {}
    for ns in sorted({ns for ns, _ in owners}):
        try:
            # a LIST per namespace and round (a GET per owner was 40 requests at every start
            # with 40 Workspaces); per namespace, as a namespaced Role allows
            live[ns] = {(w.get("metadata") or {}).get("name") or "" for w in
                        reconciler.kube.list(api_version="kaito.sh/v1beta1", kind="Workspace", namespace=ns)}
        except ApiError:
            continue  # not allowed to look, or the API is down: never guess
    for ns, name in sorted(owners):
        if ns not in live:
            continue
        if name in live[ns]:
            suspects.discard((ns, name))
            continue
        if (ns, name) not in suspects:
            suspects.add((ns, name))  # first sighting: the Workspace may be on its way
            continue
        ws = parse_workspace({"metadata": {"name": name, "namespace": ns}})
        # said before the release: once the claim is gone, anyone may look for the reason
        log.info("orphan sweep: %s/%s is gone; releasing its node requests", ns, name)
        try:
            prov = reconciler.provisioner_for(ws, releasing=True)
            prov.release(workspace=ws, ctx=reconciler.context_for(ws, uncached=True))
        except Exception as exc:  # noqa: BLE001 - retried next round
            log.warning("orphaned node requests of deleted Workspace %s/%s: cannot release yet: %s", ns, name, exc)
            continue
        suspects.discard((ns, name))
        swept.append(f"{ns}/{name}")
        log.warning("released the node requests of Workspace %s/%s, which no longer exists", ns, name)
    return swept


def list_labelled(kube: Any, api_version: str, kind: str) -> list[dict]:
    """Every object of a kind that carries ``kaito.sh/workspace`` (what the watches select)."""
    out = kube.request("GET", resource_path(api_version, kind, None), query={"labelSelector": names.LABEL_WORKSPACE})
    items = out.get("items") or [] if isinstance(out, dict) else []
    return [i for i in items if names.LABEL_WORKSPACE in ((i.get("metadata") or {}).get("labels") or {})]
