"""Operator at scale: N Workspaces against kmock, time to steady state and operator memory,
vs a bare client making the same API calls in the same run.

    python bench/operator_scale.py            # 200 Workspaces
    python bench/operator_scale.py --quick    # 40

Both runs face the same emulated cluster (tests/chaos's FakeCluster plays Karpenter and the
kubelet): NodeClaims become Ready nodes, StatefulSets get Ready pods. "Steady state" = every
Workspace reports state Ready. The bare client is a minimal hand-written controller (threads,
the same REST client, no kopf, no plugins, no validation): create NodeClaim + ConfigMap + 2
Services, wait for the node, create the StatefulSet, wait for it, patch the status.
Goals (issue 6): operator rate >= 0.5 x bare rate, operator RSS <= 150 MiB, torch never imported.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kaito_core.operator.emulator import Emulator, start_operator, stop_operator, with_identity  # noqa: E402
from kaito_core.operator.kube import ApiError, KubeClient  # noqa: E402
from kaito_core.reconcile import names  # noqa: E402
from tests.chaos.chaos import NS, FakeCluster, workspace  # noqa: E402

WS_API = "kaito.sh/v1beta1"


def all_ready(kube: KubeClient, n: int) -> int:
    items = kube.list(api_version=WS_API, kind="Workspace", namespace=NS)
    return sum(1 for w in items if (w.get("status") or {}).get("state") == "Ready")


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) // 1024
    return out


def torch_loaded(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as fh:
        return any("/torch/" in line or "libtorch" in line for line in fh)


def run_operator(n: int, timeout: float) -> dict:
    with Emulator() as emu:
        kube = KubeClient(emu.url)
        fake = FakeCluster(kube)
        fake.start()
        for i in range(n):
            kube.create(workspace(i))
        log = os.path.join(tempfile.mkdtemp(prefix="kaito-scale-"), "operator.log")
        t0 = time.monotonic()
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "30",
                                            "KAITO_LOG_LEVEL": "WARNING"}, log_path=log)
        peak = 0
        ready = 0
        torch = False
        try:
            while time.monotonic() - t0 < timeout:
                time.sleep(0.25)
                st = proc_status(proc.pid)
                peak = max(peak, st.get("VmHWM", 0))
                ready = all_ready(kube, n)
                if ready == n:
                    break
            elapsed = time.monotonic() - t0
            time.sleep(2)  # a few resync passes at steady state
            st = proc_status(proc.pid)
            peak = max(peak, st.get("VmHWM", 0))
            torch = torch_loaded(proc.pid)
        finally:
            stop_operator(proc)
            fake.stop.set()
        requests = summarize(emu.handler.counts)
    return {"seconds": elapsed, "ready": ready, "rss_peak_mib": peak, "rss_steady_mib": st.get("VmRSS", 0),
            "torch": torch, "log": log, "requests": requests}


def bare_one(kube: KubeClient, ws: dict) -> None:
    meta = ws["metadata"]
    name, uid = meta["name"], meta["uid"]
    labels = {names.LABEL_WORKSPACE: name, names.LABEL_UID: uid}
    claim = "ws" + uid.replace("-", "")[:9]
    kube.create({"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
                 "metadata": {"name": claim, "labels": dict(labels)}, "spec": {}})
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-cfg", "namespace": NS,
                                                                      "labels": labels}, "data": {}})
    for svc in (name, f"{name}-headless"):
        kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "namespace": NS,
                                                                        "labels": labels}, "spec": {}})
    while True:
        c = kube.get(api_version="karpenter.sh/v1", kind="NodeClaim", name=claim)
        node = (c.get("status") or {}).get("nodeName") if c else None
        if node and kube.get(api_version="v1", kind="Node", name=node):
            break
        time.sleep(0.25)
    kube.create({"apiVersion": "apps/v1", "kind": "StatefulSet",
                 "metadata": {"name": name, "namespace": NS, "labels": labels},
                 "spec": {"replicas": 1, "template": {"metadata": {"labels": labels}}}})
    while True:
        s = kube.get(api_version="apps/v1", kind="StatefulSet", name=name, namespace=NS)
        kube.list(api_version="v1", kind="Pod", namespace=NS, labels=labels)
        if ((s or {}).get("status") or {}).get("readyReplicas"):
            break
        time.sleep(0.25)
    kube.patch(api_version=WS_API, kind="Workspace", name=name, namespace=NS, patch={"status": {"state": "Ready"}})


def run_bare(n: int, timeout: float, workers: int = 8) -> dict:
    with Emulator() as emu:
        kube = KubeClient(emu.url)
        fake = FakeCluster(kube)
        fake.start()
        wss = [kube.create(workspace(i)) for i in range(n)]
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda w: bare_one(kube, w), wss))
        elapsed = time.monotonic() - t0
        ready = all_ready(kube, n)
        fake.stop.set()
        requests = summarize(emu.handler.counts)
    return {"seconds": elapsed, "ready": ready, "requests": requests}


def summarize(counts: dict) -> dict[str, int]:
    """API requests the emulator served, by verb (all clients: the fake cluster and the bench's
    own polling too, the same for both runs)."""
    out: dict[str, int] = {}
    for (action, _plural), n in counts.items():
        out[action] = out.get(action, 0) + n
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="operator at scale vs a bare client")
    p.add_argument("--workspaces", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="40 Workspaces")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    n = 40 if args.quick else args.workspaces
    try:
        bare = run_bare(n, args.timeout)
    except ApiError as exc:
        print(f"bare client failed: {exc}")
        return 1
    op = run_operator(n, args.timeout)
    op_rate = op["ready"] / op["seconds"]
    bare_rate = bare["ready"] / bare["seconds"]
    ratio = op_rate / bare_rate if bare_rate else 0.0
    print(f"workspaces: {n}")
    print(f"bare client: {bare['ready']}/{n} Ready in {bare['seconds']:.1f}s ({bare_rate:.1f}/s)")
    print(f"operator:    {op['ready']}/{n} Ready in {op['seconds']:.1f}s ({op_rate:.1f}/s), including kopf start")
    print(f"rate ratio operator/bare: {ratio:.2f} (goal >= 0.5)")
    print(f"operator RSS: peak {op['rss_peak_mib']} MiB, steady {op['rss_steady_mib']} MiB (goal <= 150)")
    print(f"torch imported by the operator: {op['torch']}")
    print(f"API requests served (incl. fake cluster + polling): bare {sum(bare['requests'].values())} "
          f"{bare['requests']}, operator {sum(op['requests'].values())} {op['requests']}")
    ok = op["ready"] == n and ratio >= 0.5 and op["rss_peak_mib"] <= 150 and not op["torch"]
    print("OK" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
