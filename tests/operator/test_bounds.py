"""Finding 1 (issue 16): one namespaced user cannot take the operator down with a big number.

``resource.count: 1000000`` used to build a million node requests in one pass (40 s, 2 GiB).
Now counts are bounded (CRD schema and validation, kaito_core.api.limits) and a pass costs the
same memory at the bound as at 1: measured with tracemalloc around real reconcile passes
against the API emulator (byo provisioner, no matching nodes: nothing per count on the server)."""

from __future__ import annotations

import tracemalloc

from kaito_core.api.limits import MAX_NODES
from kaito_core.operator.apply import Reconciler
from kaito_core.operator.kube import KubeClient
from kaito_core.operator.settings import Settings
from kaito_core.plugins import get_registry
from kaito_core.testing.emulator import Emulator, with_identity


def _ws(name: str, count: int) -> dict:
    # a template Workspace: its node count is resource.count (a preset's comes from sizing)
    return with_identity({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                          "metadata": {"name": name, "namespace": "bounds"},
                          "resource": {"instanceType": "Standard_NC24ads_A100_v4", "count": count,
                                       "labelSelector": {"matchLabels": {"apps": name}}},
                          "inference": {"template": {"spec": {"containers": [
                              {"name": "server", "image": "registry.example.com/server:1"}]}}}})


def _peak(rec: Reconciler, body: dict) -> tuple[int, dict]:
    rec.reconcile(body)  # warm: imports, plugin registry, connection
    tracemalloc.start()
    try:
        outcome = rec.reconcile(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, outcome.status


def test_count_at_the_bound_keeps_memory_flat_and_over_it_is_refused():
    with Emulator(namespaces=("bounds",)) as emu:
        rec = Reconciler(KubeClient(emu.url), get_registry(), Settings(provisioner="byo", allow_templates=True))
        one, status_one = _peak(rec, _ws("one", 1))
        bound, status_bound = _peak(rec, _ws("bound", MAX_NODES))
        huge, status_huge = _peak(rec, _ws("huge", 1_000_000))
    print("peak bytes: count=1", one, "count=bound", bound, "count=1e6", huge)
    assert status_bound["targetNodeCount"] == MAX_NODES and status_one["targetNodeCount"] == 1
    # flat: the pass at the bound needs at most 2 MiB more than the pass for one node
    assert bound - one < 2 * 2**20, (one, bound)
    assert huge - one < 2 * 2**20, (one, huge)
    messages = " ".join(c.get("message", "") for c in status_huge["conditions"])
    assert status_huge["state"] == "Failed" and "resource.count" in messages and f"at most {MAX_NODES}" in messages
