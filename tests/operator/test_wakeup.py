"""Which watch events wake a Workspace, and the watch cache's reads (pure, no kopf)."""

from __future__ import annotations

import asyncio

from kaito_core.operator.cache import CachedKube, WatchCache
from kaito_core.operator.kube import KubeClient
from kaito_core.operator.wakeup import Wakeups, owner_key

LABELS = {"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "team"}


def obj(status=None, labels=LABELS, namespace=None, deleting=False):
    meta = {"name": "x", "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": status or {}}


def test_owner_key_from_labels_or_namespace():
    assert owner_key(LABELS) == "team/ws"
    assert owner_key({"kaito.sh/workspace": "ws"}, "team") == "team/ws"
    assert owner_key({"kaito.sh/workspace": "ws"}) is None
    assert owner_key({}) is None


def test_only_status_changes_and_deletions_wake():
    w = Wakeups()
    assert w.observe("nodeclaims", None, obj({"phase": "x"})) is None  # initial listing: resume handles it
    assert w.observe("nodeclaims", "MODIFIED", obj({"phase": "x"})) is None  # same status (e.g. labels patched)
    assert w.observe("nodeclaims", "MODIFIED", obj({"phase": "y"})) == "team/ws"
    assert w.observe("pods", "ADDED", obj()) is None  # our own create, no status yet
    assert w.observe("pods", "MODIFIED", obj({"phase": "Running"})) == "team/ws"
    assert w.observe("statefulsets", "ADDED", obj({"readyReplicas": 1}, namespace="other")) == "team/ws"
    assert w.observe("statefulsets", "MODIFIED", obj({"readyReplicas": 1}, namespace="other", deleting=True)) == \
        "team/ws"
    assert w.observe("statefulsets", "DELETED", obj({"readyReplicas": 1}, namespace="other")) == "team/ws"
    assert w.observe("nodeclaims", "MODIFIED", obj({"phase": "z"}, labels={"app": "other"})) is None


def test_node_heartbeats_do_not_wake_but_readiness_does():
    w = Wakeups()

    def node(ready, beat):
        return {"metadata": {"name": "n", "labels": LABELS}, "status": {
            "capacity": {"nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": beat}]}}
    assert w.observe("nodes", "ADDED", node("False", "t0")) == "team/ws"
    assert w.observe("nodes", "MODIFIED", node("False", "t1")) is None  # kubelet heartbeat only
    assert w.observe("nodes", "MODIFIED", node("True", "t2")) == "team/ws"


def test_byo_selectors_match_unlabelled_nodes():
    w = Wakeups()
    w.selectors["team/a"] = {"matchLabels": {"pool": "gpu"}}
    w.selectors["team/b"] = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu", "big"]}]}
    w.selectors["team/c"] = {"matchLabels": {"pool": "cpu"}}
    assert sorted(w.byo_keys({"pool": "gpu"})) == ["team/a", "team/b"]
    assert w.byo_keys({"other": "x"}) == []


def test_wake_sets_the_daemons_event():
    async def main():
        w = Wakeups()
        assert w.wake("team/ws") is False  # nobody waits yet: kept for the daemon to come
        ev = w.event_for("team/ws")
        assert ev.is_set()  # the daemon's first wait returns at once (not at the first resync)
        ev.clear()
        assert w.wake("team/ws") is True and ev.is_set()
        w.drop("team/ws", asyncio.Event())  # someone else's event: ours stays
        assert w.wake("team/ws") is True
        w.drop("team/ws", ev)
        assert w.wake("team/ws") is False
    asyncio.run(main())


def test_wake_ups_nobody_claims_are_dropped(monkeypatch):
    """Children of a deleted Workspace keep sending events: their kept wake-ups expire."""
    import time as time_mod

    async def main():
        w = Wakeups()
        clock = [1000.0]
        monkeypatch.setattr(time_mod, "monotonic", lambda: clock[0])
        w.wake("team/gone")
        w.wake("team/other")
        assert set(w._events) == {"team/gone", "team/other"}
        clock[0] += Wakeups.KEEP_SECONDS + 1
        w.wake("team/new")
        assert set(w._events) == {"team/new"}  # the two unclaimed ones expired; the new one is kept
        assert w.event_for("team/new").is_set()
        clock[0] += Wakeups.KEEP_SECONDS + 1
        w.wake("team/later")
        assert "team/new" in w._events  # claimed by its daemon: never expires
    asyncio.run(main())


def test_cached_kube_serves_watched_kinds_and_falls_back(emulator):
    kube = KubeClient(emulator.url)
    cache = WatchCache({("apps/v1", "StatefulSet")})
    ck = CachedKube(kube, cache)
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "c", "namespace": "cache"}, "spec": {}}
    assert ck.get(api_version="apps/v1", kind="StatefulSet", name="c", namespace="cache") is None  # miss -> GET
    ck.create(sts)
    before = kube.calls
    got = ck.get(api_version="apps/v1", kind="StatefulSet", name="c", namespace="cache")
    assert got["metadata"]["name"] == "c" and kube.calls == before  # served from memory
    got["spec"]["mutated"] = True
    assert "mutated" not in ck.get(api_version="apps/v1", kind="StatefulSet", name="c", namespace="cache")["spec"]
    ck.delete(api_version="apps/v1", kind="StatefulSet", name="c", namespace="cache")
    assert ck.get(api_version="apps/v1", kind="StatefulSet", name="c", namespace="cache") is None
    assert kube.calls > before  # the miss after the delete asked the API server
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "cache"}}
    ck.create(cm)
    before = kube.calls
    assert ck.get(api_version="v1", kind="ConfigMap", name="c", namespace="cache") is not None
    assert kube.calls == before + 1  # not a watched kind: always the API server


def _claim(name: str, ws: str, namespace: str = "team") -> dict:
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name, "labels": {"kaito.sh/workspace": ws, "kaito.sh/workspacenamespace": namespace}},
            # what Karpenter's CRD requires of a NodeClaim
            "spec": {"nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass", "name": "default"},
                     "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                       "values": ["Standard_NC24ads_A100_v4"]}]}}


def test_cached_kube_lists_by_kaito_labels_only_once_synced(emulator):
    """Labelled lists come from memory after a full LIST synced the kind (an empty cache at
    start must not hide upstream's NodeClaims); other lists always ask the API server."""
    from kaito_core.operator.relist import list_labelled

    kube = KubeClient(emulator.url)
    kube.create(_claim("upstream-abc12", "w1"))  # made before the operator started
    cache = WatchCache({("karpenter.sh/v1", "NodeClaim")})
    ck = CachedKube(kube, cache)
    labels = {"kaito.sh/workspace": "w1", "kaito.sh/workspacenamespace": "team"}
    before = kube.calls
    assert [c["metadata"]["name"] for c in ck.list(api_version="karpenter.sh/v1", kind="NodeClaim",
                                                    labels=labels)] == ["upstream-abc12"]
    assert kube.calls == before + 1  # not synced yet: the API server answered
    cache.replace("karpenter.sh/v1", "NodeClaim", list_labelled(kube, "karpenter.sh/v1", "NodeClaim"))
    ck.create(_claim("ws-ours", "w1"))
    ck.create(_claim("ws-other", "w2"))
    before = kube.calls
    got = ck.list(api_version="karpenter.sh/v1", kind="NodeClaim", labels=labels)
    assert sorted(c["metadata"]["name"] for c in got) == ["upstream-abc12", "ws-ours"] and kube.calls == before
    got[0]["metadata"]["labels"]["mutated"] = "yes"  # copies: the cache is not changed through them
    assert all("mutated" not in c["metadata"]["labels"]
               for c in ck.list(api_version="karpenter.sh/v1", kind="NodeClaim", labels=labels))
    ck.list(api_version="karpenter.sh/v1", kind="NodeClaim", labels={"team": "x"})  # not kaito's selector
    assert kube.calls == before + 1
    assert ck.uncached is kube


def test_probably_absent_lets_a_new_child_be_created_without_a_get(emulator):
    from kaito_core.operator.apply import apply_object

    kube = KubeClient(emulator.url)
    ck = CachedKube(kube, WatchCache({("v1", "Service")}))
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fresh", "namespace": "cache",
                                                             "labels": {"kaito.sh/workspace-uid": "u1"}},
           "spec": {"ports": [{"port": 80}]}}
    assert ck.probably_absent(api_version="v1", kind="Service", name="fresh", namespace="cache")
    before = kube.calls
    assert apply_object(ck, svc, "u1") == "created" and kube.calls == before + 1  # one POST, no GET
    assert not ck.probably_absent(api_version="v1", kind="Service", name="fresh", namespace="cache")
    # an object the cache has not seen but the server has: the 409 leads to a read, not an error
    other = CachedKube(kube, WatchCache({("v1", "Service")}))
    assert apply_object(other, svc, "u1") == "unchanged"
    assert not ck.probably_absent(api_version="v1", kind="ConfigMap", name="fresh", namespace="cache")  # not watched


def test_our_own_write_does_not_overwrite_a_newer_watched_version():
    """A controller can write a NodeClaim's status between our create and the create's answer
    arriving: the watch delivered resourceVersion 2 (Ready), then our response (1) comes. The
    cache must keep 2, or the Workspace waits for a node that is Ready until the next re-list."""
    from kaito_core.operator.cache import WatchCache

    cache = WatchCache({("karpenter.sh/v1", "NodeClaim")})

    def claim(rv, ready):
        return {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
                "metadata": {"name": "c", "resourceVersion": str(rv)},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]} if ready else {}}

    cache.put(claim(2, True))  # the watch event
    cache.put(claim(1, False), response=True)  # our create's late answer
    assert cache.lookup("karpenter.sh/v1", "NodeClaim", None, "c")["metadata"]["resourceVersion"] == "2"
    cache.put(claim(3, False), response=True)  # our patch's answer, newer than what the watch showed
    assert cache.lookup("karpenter.sh/v1", "NodeClaim", None, "c")["metadata"]["resourceVersion"] == "3"
    cache.put(claim(2, True))  # a watch event always wins (the watch catches up in order)
    assert cache.lookup("karpenter.sh/v1", "NodeClaim", None, "c")["metadata"]["resourceVersion"] == "2"
    odd = {**claim(9, False), "metadata": {"name": "c", "resourceVersion": "abc"}}
    cache.put(odd, response=True)  # not comparable: the watch's version stays
    assert cache.lookup("karpenter.sh/v1", "NodeClaim", None, "c")["metadata"]["resourceVersion"] == "2"
