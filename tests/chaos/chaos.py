"""Chaos: SIGKILL the operator at random moments while Workspaces reconcile, restart it, and
check that every Workspace ends with exactly its desired children and node requests.

Run the full version (50 Workspaces, 20 kills) with ``python -m tests.chaos.chaos``; the test
suite runs a small one. The cluster is the strict API emulator; Karpenter, the StatefulSet
controller and the kubelet are :class:`~kaito_core.testing.emulator_controllers.FakeControllers`
(NodeClaims become Ready nodes, StatefulSets get Ready pods they own, all status through
``/status``). A fifth of the Workspaces are deleted midway, so the count covers deletes
interrupted by kills too.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from typing import Any

from kaito_core.operator.kube import KubeClient
from kaito_core.reconcile import names
from kaito_core.testing.emulator import Emulator, start_operator
from kaito_core.testing.emulator_controllers import FakeControllers
from tests.operator.conftest import cluster_emulator, operator_refusals

NS = "chaos"
WS_API = "kaito.sh/v1beta1"
CHILD_KINDS = (("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "StatefulSet"))
EXPECTED = {"ConfigMap": 1, "Service": 2, "StatefulSet": 1, "NodeClaim": 1}


def workspace(i: int) -> dict[str, Any]:
    return {
        "apiVersion": WS_API, "kind": "Workspace", "metadata": {"name": f"ws-{i:03d}", "namespace": NS},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"ws": str(i)}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


def count(kube: KubeClient, live: dict[str, str]) -> dict[str, int]:
    """Duplicates (more than desired per Workspace), missing, and orphans (no live owner)."""
    per: dict[tuple[str, str], int] = {}
    orphans = 0
    objects = [("NodeClaim", o) for o in kube.list(api_version="karpenter.sh/v1", kind="NodeClaim")]
    for api, kind in CHILD_KINDS:
        objects += [(kind, o) for o in kube.list(api_version=api, kind=kind, namespace=NS)]
    for kind, obj in objects:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        ws = labels.get(names.LABEL_WORKSPACE)
        if ws is None:
            continue
        uid = labels.get(names.LABEL_UID)
        if ws not in live or (uid is not None and uid != live[ws]):
            orphans += 1
            continue
        per[(ws, kind)] = per.get((ws, kind), 0) + 1
    duplicates = sum(max(0, n - EXPECTED[k]) for (_, k), n in per.items())
    missing = sum(max(0, EXPECTED[k] - per.get((ws, k), 0)) for ws in live for k in EXPECTED)
    return {"workspaces": len(live), "duplicates": duplicates, "orphans": orphans, "missing": missing}


def ready_count(kube: KubeClient) -> int:
    items = kube.list(api_version=WS_API, kind="Workspace", namespace=NS)
    return sum(1 for w in items if (w.get("status") or {}).get("state") == "Ready")


def cut_and_delete(emu: Emulator, kube: KubeClient, rng: random.Random, live: dict[str, str], cuts: int) -> int:
    """Watch outages (watches held, history compacted: kopf gets 410 Gone and re-lists) during
    which a few live Workspaces lose their NodeClaim, Node and StatefulSet. Returns how many
    objects were deleted behind the operator's back."""
    deleted = 0
    for _ in range(cuts):
        emu.hold_watches()
        for name in rng.sample(sorted(live), k=min(2, len(live))):
            for claim in kube.list(api_version="karpenter.sh/v1", kind="NodeClaim",
                                   labels={names.LABEL_WORKSPACE: name}):
                node = (claim.get("status") or {}).get("nodeName")
                deleted += kube.delete(api_version="karpenter.sh/v1", kind="NodeClaim", name=claim["metadata"]["name"])
                if node:
                    deleted += kube.delete(api_version="v1", kind="Node", name=node)
            deleted += kube.delete(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS)
        emu.compact()
        emu.release_watches()
        time.sleep(rng.uniform(0.5, 1.5))
    return deleted


def run(workspaces: int, kills: int, seed: int = 1, log_dir: str | None = None, settle: float = 60.0,
        resync: float = 30.0, cuts: int = 0) -> dict[str, Any]:
    """``cuts``: after the kills, once everything is Ready, that many watch outages with
    deletions (:func:`cut_and_delete`); the operator must converge again without a restart."""
    rng = random.Random(seed)
    log_dir = log_dir or tempfile.mkdtemp(prefix="kaito-chaos-")
    log = os.path.join(log_dir, "operator.log")
    env = {"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": str(resync),
           "KAITO_DELETE_GRACE_SECONDS": "5", "KAITO_RELIST_SECONDS": "2"}
    with cluster_emulator(namespaces=(NS,)) as emu:  # Karpenter's real CRDs check every NodeClaim
        kube = KubeClient(emu.url)
        kube.headers["User-Agent"] = "kaito-tests"  # the users' requests are not the operator's
        with FakeControllers(emu.url, namespace=NS, jobs=False):  # Karpenter, StatefulSets, kubelet
            created = [kube.create(workspace(i)) for i in range(workspaces)]
            doomed = set(rng.sample(range(workspaces), workspaces // 5))
            killed = 0
            for k in range(kills):
                proc = start_operator(emu.url, env=env, log_path=log)
                time.sleep(rng.uniform(0.3, 2.0))  # kopf starts in ~1 s: some kills land before, most during work
                if k == kills // 2:
                    for i in doomed:
                        kube.delete(api_version=WS_API, kind="Workspace", name=f"ws-{i:03d}", namespace=NS)
                proc.kill()  # SIGKILL: no cleanup, no finalizer handling, mid-request
                proc.wait()
                killed += 1
            proc = start_operator(emu.url, env=env, log_path=log)
            live = {w["metadata"]["name"]: w["metadata"]["uid"] for i, w in enumerate(created) if i not in doomed}
            cut_deleted = 0
            if cuts:
                first = time.monotonic() + settle
                while ready_count(kube) < len(live) and time.monotonic() < first:
                    time.sleep(0.5)
                cut_deleted = cut_and_delete(emu, kube, rng, live, cuts)
            deadline = time.monotonic() + settle
            ready = 0
            while time.monotonic() < deadline and proc.poll() is None:  # a crashed operator ends the wait
                items = kube.list(api_version=WS_API, kind="Workspace", namespace=NS)
                ready = sum(1 for w in items if (w.get("status") or {}).get("state") == "Ready")
                gone = {f"ws-{i:03d}" for i in doomed}.isdisjoint({w["metadata"]["name"] for w in items})
                counts = count(kube, live)
                if ready == len(live) and gone and counts["missing"] == 0 and counts["orphans"] == 0:
                    break
                time.sleep(0.5)
            exited = proc.poll()  # None: the last operator was still running
            proc.kill()
            proc.wait()
        counts = count(kube, live)
        remaining = {w["metadata"]["name"] for w in kube.list(api_version=WS_API, kind="Workspace", namespace=NS)}
        refused = operator_refusals(emu)
    counts.update({"refused": len(refused), "refusals": refused[:5], "operator_exit": exited, "kills": killed,
                   "ready": ready, "deleted": len(doomed), "cut_deleted": cut_deleted,
                   "deleted_still_present": len({f"ws-{i:03d}" for i in doomed} & remaining), "log": log})
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workspaces", type=int, default=50)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--resync", type=float, default=30.0, help="operator resync seconds (default 30)")
    p.add_argument("--cuts", type=int, default=5, help="watch outages with deletions after the kills (default 5)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    c = run(args.workspaces, args.kills, args.seed, settle=180, resync=args.resync, cuts=args.cuts)
    print(f"chaos: {c['workspaces']} live Workspaces ({c['deleted']} deleted midway), {c['kills']} SIGKILLs, "
          f"{args.cuts} watch outages deleting {c['cut_deleted']} objects, {time.monotonic() - t0:.1f}s")
    print(f"  ready={c['ready']}/{c['workspaces']} duplicates={c['duplicates']} orphans={c['orphans']} "
          f"missing={c['missing']} deleted_still_present={c['deleted_still_present']} refused={c['refused']}"
          f"{'' if c['operator_exit'] is None else ' operator exited with ' + str(c['operator_exit'])}")
    for refusal in c["refusals"]:
        print(f"  refused: {refusal}")
    ok = c["duplicates"] == 0 and c["orphans"] == 0 and c["missing"] == 0 and c["deleted_still_present"] == 0 \
        and c["refused"] == 0 and c["operator_exit"] is None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
