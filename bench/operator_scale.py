# Over 400 lines: one runnable file holds the harness, both controllers under test, the observer and the profiler.
"""Operator at scale: N Workspaces against the API emulator, time to steady state and operator
memory, vs a bare client doing the same work in the same run.

    python bench/operator_scale.py            # 200 Workspaces
    python bench/operator_scale.py --quick    # 40
    python bench/operator_scale.py --profile-pass   # cProfile of reconcile passes, in process

Both runs face the same cluster: the strict API emulator (kaito_core.testing.emulator) with
FakeControllers playing Karpenter, the StatefulSet controller and the kubelet (NodeClaims become
Ready nodes, StatefulSets get Ready pods, status through /status), holding 3,000 unrelated pods
and 100 unrelated nodes (what a real cluster has; the operator's node watch sees them all).
"Steady state" = every Workspace reports state Ready, as one observer (watches on the API
server) sees it: the same observer stops both clocks. The bare client is a minimal hand-written
controller (no kopf, no plugins, no validation, no cache) working on every Workspace at once,
one thread each; it sends the very objects the operator applies (computed by the same planner
before its clock starts): create the NodeClaim, ConfigMap and 2 Services, poll until the node
is Ready, create the StatefulSet, poll until it is Ready, write the status. The operator's clock
counts from kopf's login (its process start and imports are reported apart).
Goals (issue 16): operator rate >= 0.7 x bare rate, operator RSS <= 150 MiB with the unrelated
objects present, torch never imported.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import os
import sys
import tempfile
import threading
import time
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kaito_core.operator.kube import ApiError, KubeClient  # noqa: E402
from kaito_core.reconcile import names  # noqa: E402
from kaito_core.testing.emulator import Emulator, start_operator, stop_operator  # noqa: E402
from kaito_core.testing.emulator_controllers import FakeControllers  # noqa: E402
from tests.chaos.chaos import NS, workspace  # noqa: E402

WS_API = "kaito.sh/v1beta1"


def client(url: str, agent: str) -> KubeClient:
    """A client whose requests the emulator counts under ``agent`` (the operator's are
    ``kaito-operator`` and ``kopf/...``)."""
    kube = KubeClient(url)
    kube.headers["User-Agent"] = agent
    return kube


def cluster(url: str) -> FakeControllers:
    fake = FakeControllers(url, namespace=NS, jobs=False)  # Karpenter, StatefulSets, kubelet
    fake.kube.headers["User-Agent"] = "bench-cluster"
    return fake


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def torch_loaded(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as fh:
        return any("/torch/" in line or "libtorch" in line for line in fh)


UNRELATED_PODS = 3000
UNRELATED_NODES = 100


def namespaces(kube: KubeClient, names_: list[str]) -> None:
    """Namespaces must exist before anything is created in them (NamespaceLifecycle)."""
    for ns in names_:
        try:
            kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        except ApiError as exc:
            if exc.status != 409:
                raise


def populate(kube: KubeClient, pods: int = UNRELATED_PODS, nodes: int = UNRELATED_NODES) -> None:
    """Objects no Workspace owns, in other namespaces (created concurrently, before the clock).
    The nodes carry a status (the operator's node watch sees them all); the pods never reach
    the operator (its pod watch selects kaito's label) and keep the status a create gives."""
    namespaces(kube, [NS] + [f"team-{i}" for i in range(30)])

    def pod(i: int) -> None:
        kube.create({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"app-{i}", "namespace": f"team-{i % 30}",
                                  "labels": {"app": f"app-{i % 50}"}},
                     "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}})

    def node(i: int) -> None:
        name = f"cpu-node-{i}"
        kube.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"pool": "system"}},
                     "status": {"conditions": [{"type": "Ready", "status": "True"}],  # as the kubelet registers it
                                "capacity": {"cpu": "16", "memory": "64Gi"}}})
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(pod, range(pods)))
        list(pool.map(node, range(nodes)))


class Timeline:
    """When each Workspace passed each stage, as watches on the API server report it (one
    thread per kind: Workspaces, NodeClaims, StatefulSets), timed at the event's arrival. A
    watch costs the API server one event per change, where polling re-listed every object
    many times a second (a sizeable share of the emulator's CPU, taken from whichever
    controller was under test) and rounded each stage to the polling period.

    The harness's own stages (claim -> node, StatefulSet -> ready pods) slow down with the CPU
    the controller under test takes from it; the controller's stages (node -> StatefulSet
    created, ready pods -> Workspace Ready) are its own reaction time."""

    STAGES = ("node", "sts", "stsready", "ready")
    KINDS = ((WS_API, "Workspace", NS), ("karpenter.sh/v1", "NodeClaim", None), ("apps/v1", "StatefulSet", NS))

    def __init__(self, kube: KubeClient):
        self.kube = kube
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.seen: dict[tuple[str, str], float] = {}
        self.stop = False
        self.tick_results: list[Any] = []
        self.threads = [threading.Thread(target=self._watch, args=kind, daemon=True) for kind in self.KINDS]

    def start(self) -> "Timeline":
        for t in self.threads:
            t.start()
        return self

    def _note(self, kind: str, obj: dict) -> None:
        now = time.monotonic() - self.t0
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        if kind == "Workspace" and status.get("state") == "Ready":
            self.seen.setdefault((meta.get("name", ""), "ready"), now)
        elif kind == "NodeClaim" and status.get("nodeName"):
            self.seen.setdefault(((meta.get("labels") or {}).get(names.LABEL_WORKSPACE, ""), "node"), now)
        elif kind == "StatefulSet":
            self.seen.setdefault((meta.get("name", ""), "sts"), now)
            if status.get("readyReplicas"):
                self.seen.setdefault((meta.get("name", ""), "stsready"), now)

    def _watch(self, api_version: str, kind: str, namespace: str | None) -> None:
        """List, then watch from the list's version; again after any break (a timeout: the
        watch ends every 5 s so that ``stop`` is seen)."""
        import http.client
        import json

        from kaito_core.operator.kube import resource_path

        path = resource_path(api_version, kind, namespace)
        while not self.stop:
            try:
                listed = self.kube.request("GET", path)
                for obj in listed.get("items") or []:
                    self._note(kind, obj)
                conn = http.client.HTTPConnection(self.kube.host, self.kube.port, timeout=30)
                conn.request("GET", f"{self.kube.prefix}{path}?watch=true&timeoutSeconds=5&resourceVersion="
                                    f"{(listed.get('metadata') or {}).get('resourceVersion', '')}",
                             headers=self.kube.headers)
                resp = conn.getresponse()
                while not self.stop:
                    line = resp.readline()
                    if not line:
                        break
                    event = json.loads(line)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._note(kind, event.get("object") or {})
                conn.close()
            except (ApiError, OSError, ValueError, http.client.HTTPException):
                time.sleep(0.05)

    def ready_count(self) -> int:
        return sum(1 for (_, stage) in list(self.seen) if stage == "ready")

    def wait_all_ready(self, n: int, timeout: float, on_tick: Callable[[], Any] | None = None) -> float | None:
        """Seconds from the start until the watch showed all ``n`` Workspaces Ready (the same
        observer ends both runs' clocks); None on timeout. ``on_tick`` runs every
        0.25 s meanwhile (its results are kept in ``tick_results``; None ends the wait)."""
        last_tick = 0.0
        while time.monotonic() - self.t0 < timeout:
            ready = [t for (_, stage), t in list(self.seen.items()) if stage == "ready"]
            if len(ready) >= n:
                return max(ready)
            if on_tick is not None and time.monotonic() - last_tick >= 0.25:
                last_tick = time.monotonic()
                result = on_tick()
                if result is None:
                    return None  # the controller is gone: no point waiting
                self.tick_results.append(result)
            time.sleep(0.02)
        return None

    def gaps(self) -> dict[str, float]:
        """Median seconds of the controller's own reactions."""
        import statistics

        out = {}
        for a, b in (("node", "sts"), ("stsready", "ready")):
            d = [self.seen[(w, b)] - self.seen[(w, a)] for (w, stage) in list(self.seen)
                 if stage == a and (w, b) in self.seen]
            out[f"{a}->{b}"] = statistics.median(d) if d else float("nan")
        return out


def settle_heap() -> None:
    """This process holds the API emulator and, once populated, its 3,100 unrelated objects,
    which live until the run ends: keep them out of the cyclic garbage collector's full
    collections while the clock runs (gc.freeze; without it an operator run spent 2 s in
    collections here, single pauses up to 128 ms). Done the same way for both runs; undone
    after each (gc.unfreeze), so rounds do not pile up."""
    gc.collect()
    gc.freeze()


def run_operator(n: int, timeout: float) -> dict:
    with Emulator() as emu, cluster(emu.url):
        kube = client(emu.url, "bench")
        populate(kube)
        for i in range(n):
            kube.create(workspace(i))
        settle_heap()
        log = os.path.join(tempfile.mkdtemp(prefix="kaito-scale-"), "operator.log")
        timeline = Timeline(client(emu.url, "bench")).start()
        proc = start_operator(emu.url, env={"KAITO_PROVISIONER": "karpenter", "KAITO_RESYNC_SECONDS": "30",
                                            "KAITO_WORKERS": os.environ.get("KAITO_BENCH_WORKERS", "8"),
                                            "KAITO_LOG_LEVEL": os.environ.get("KAITO_BENCH_LOG_LEVEL", "INFO")}, log_path=log)
        peak = 0
        torch = False
        try:
            done = timeline.wait_all_ready(n, timeout, on_tick=lambda: None if proc.poll() is not None
                                           else proc_status(proc.pid).get("VmHWM", 0))
            if proc.poll() is not None:
                raise RuntimeError(f"the operator exited with code {proc.returncode}; its log: {log}")
            peak = max(timeline.tick_results or [0])
            cpu = cpu_seconds(proc.pid)
            time.sleep(2)  # a few resync passes at steady state
            st = proc_status(proc.pid)
            peak = max(peak, st.get("VmHWM", 0))
            torch = torch_loaded(proc.pid)
        finally:
            stop_operator(proc)
            timeline.stop = True
            gc.unfreeze()
        requests = summarize(emu.handler.calls, ("kaito-operator", "kopf/"))
        # the slowest Workspace's stages: a straggler (a missed change, waiting for a resync or
        # re-list) shows as a long gap between two of them
        last = max(((t, k[0]) for k, t in timeline.seen.items() if k[1] == "ready"), default=None)
        if last is not None:
            print(f"slowest Workspace {last[1]}: " + ", ".join(
                f"{st} {timeline.seen[(last[1], st)]:.2f}s" for st in Timeline.STAGES if (last[1], st) in timeline.seen))
    started = _logged_at(log, "Activity 'login' succeeded")
    elapsed = done if done is not None else timeout
    done_wall = timeline.wall0 + elapsed
    working = done_wall - started if started else elapsed
    return {"seconds": elapsed, "working_seconds": working,
            "startup_seconds": (started or timeline.wall0) - timeline.wall0,
            "ready": timeline.ready_count(), "cpu_seconds": cpu, "rss_peak_mib": peak,
            "rss_steady_mib": st.get("VmRSS", 0), "torch": torch, "log": log, "requests": requests,
            "gaps": timeline.gaps()}


def _logged_at(log: str, text: str) -> float | None:
    """Wall-clock time of the first log line containing ``text`` (kopf is ready after login)."""
    import datetime

    with open(log, errors="replace") as fh:
        for line in fh:
            if text in line:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
    return None


def bare_objects(kube: KubeClient, ws: dict) -> dict[str, Any]:
    """What the operator would apply for ``ws`` (the same planner and provisioner, computed
    before the clock starts): its NodeClaims, its first children (ConfigMap, Services), the
    StatefulSet once nodes are ready, and a Ready status. The bare client sends these very
    objects, so the API server does the same work for both runs."""
    from kaito_core.operator.apply import Reconciler
    from kaito_core.operator.settings import Settings
    from kaito_core.plugins import get_registry
    from kaito_core.reconcile import Observed

    rec = Reconciler(kube, get_registry(), Settings(provisioner="karpenter"))
    parsed = Reconciler.parse(ws)
    prov = rec.provisioner_for(parsed)
    first = rec.plan_for(parsed, prov, {}, Observed(now="2026-01-01T00:00:00Z"))
    final = rec.plan_for(parsed, prov, {}, Observed.nodes_ready(first.node_requests, first.gpus_per_node,
                                                                 now="2026-01-01T00:00:00Z"))
    children = [o for o in final.objects if o["kind"] != "StatefulSet"]
    status = dict(final.status, state="Ready")
    return {"claims": first.node_objects, "children": children,
            "statefulset": next(o for o in final.objects if o["kind"] == "StatefulSet"), "status": status,
            "labels": {names.LABEL_UID: final.uid}}


def bare_one(kube: KubeClient, ws: dict, objs: dict[str, Any]) -> None:
    """A minimal controller for one Workspace: no kopf, no cache, no validation, no status diff."""
    meta = ws["metadata"]
    for obj in objs["claims"] + objs["children"]:
        kube.create(obj)
    claims = [c["metadata"]["name"] for c in objs["claims"]]
    while True:
        seen = [kube.get(api_version="karpenter.sh/v1", kind="NodeClaim", name=c) for c in claims]
        nodes = [(c.get("status") or {}).get("nodeName") if c else None for c in seen]
        if all(nodes) and all(kube.get(api_version="v1", kind="Node", name=node) for node in nodes):
            break
        time.sleep(0.25)
    kube.create(objs["statefulset"])
    while True:
        s = kube.get(api_version="apps/v1", kind="StatefulSet", name=meta["name"], namespace=NS)
        kube.list(api_version="v1", kind="Pod", namespace=NS, labels=objs["labels"])
        if ((s or {}).get("status") or {}).get("readyReplicas"):
            break
        time.sleep(0.25)
    kube.patch(api_version=WS_API, kind="Workspace", name=meta["name"], namespace=NS,
               patch={"status": objs["status"]}, subresource="status")


def run_bare(n: int, timeout: float) -> dict:
    with Emulator() as emu, cluster(emu.url):
        setup = client(emu.url, "bench")
        populate(setup)
        wss = [setup.create(workspace(i)) for i in range(n)]
        objs = [bare_objects(setup, w) for w in wss]
        kube = client(emu.url, "bare")
        settle_heap()
        timeline = Timeline(client(emu.url, "bench")).start()
        try:
            # every Workspace at once (a thread each), as a controller with one worker per object
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                list(pool.map(lambda wo: bare_one(kube, *wo), zip(wss, objs)))
            done = timeline.wait_all_ready(n, timeout)
        finally:
            timeline.stop = True
            gc.unfreeze()
        requests = summarize(emu.handler.calls, ("bare",))
    return {"seconds": done if done is not None else timeout, "ready": timeline.ready_count(),
            "requests": requests, "gaps": timeline.gaps()}


def profile_pass(n: int = 10, rounds: int = 5, top: int = 25) -> int:
    """Reconcile passes of ``n`` Ready Workspaces in this process (the operator's Reconciler
    over a CachedKube whose cache a full LIST synced, as after the operator's first re-list),
    under cProfile: ms per pass (verify=True: a resync; False: a pass woken by an event) and
    the functions that take the time."""
    import cProfile
    import pstats

    from kaito_core.operator.apply import Reconciler
    from kaito_core.operator.cache import CachedKube, WatchCache
    from kaito_core.operator.relist import list_labelled
    from kaito_core.operator.settings import Settings
    from kaito_core.plugins import get_registry

    with Emulator() as emu, FakeControllers(emu.url, namespace=NS, jobs=False):
        kube = KubeClient(emu.url)
        namespaces(kube, [NS])
        wss = [kube.create(workspace(i)) for i in range(n)]
        cache = WatchCache({("apps/v1", "StatefulSet"), ("v1", "Node"), ("karpenter.sh/v1", "NodeClaim"),
                            ("v1", "Service"), ("v1", "ConfigMap")})
        rec = Reconciler(CachedKube(kube, cache), get_registry(), Settings(provisioner="karpenter"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and all_ready(kube, n) < n:
            for api_version, kind in cache.kinds:  # what the watches would have shown by now
                cache.replace(api_version, kind, list_labelled(kube, api_version, kind))
            for w in kube.list(api_version=WS_API, kind="Workspace", namespace=NS):
                out = rec.reconcile(w)
                kube.patch(api_version=WS_API, kind="Workspace", name=w["metadata"]["name"], namespace=NS,
                           patch={"status": out.status}, subresource="status")
            time.sleep(0.3)
        wss = kube.list(api_version=WS_API, kind="Workspace", namespace=NS)
        for verify in (True, False):
            prof = cProfile.Profile()
            calls = kube.calls
            t0 = time.perf_counter()
            prof.enable()
            for _ in range(rounds):
                for w in wss:
                    rec.reconcile(w, verify=verify)
            prof.disable()
            ms = (time.perf_counter() - t0) / (rounds * len(wss)) * 1000
            print(f"reconcile pass (verify={verify}), {len(wss)} Ready Workspaces: {ms:.1f} ms under cProfile, "
                  f"{(kube.calls - calls) / (rounds * len(wss)):.1f} API requests per pass")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(top)
    return 0


def summarize(calls: dict, agents: tuple[str, ...]) -> dict[str, int]:
    """API requests the controller under test made (User-Agent starting with one of ``agents``),
    by verb: Events, status writes and kopf's own patches included; the cluster's controllers
    and the bench's sampling are counted apart."""
    out: dict[str, int] = {}
    for (verb, _group, resource, agent), n in calls.items():
        if agent.startswith(agents):
            key = f"{verb} {resource}"
            out[key] = out.get(key, 0) + n
    return dict(sorted(out.items()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="operator at scale vs a bare client")
    p.add_argument("--workspaces", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="40 Workspaces")
    p.add_argument("--rounds", type=int, default=1,
                   help="bare/operator pairs, alternated (the median ratio: a shared machine is noisy)")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--profile-pass", action="store_true", help="profile reconcile passes in this process and exit")
    args = p.parse_args(argv)
    if args.profile_pass:
        return profile_pass()
    n = 40 if args.quick else args.workspaces
    ratios, ops = [], []
    for r in range(max(1, args.rounds)):
        try:
            bare = run_bare(n, args.timeout)
        except ApiError as exc:
            print(f"bare client failed: {exc}")
            return 1
        try:
            op = run_operator(n, args.timeout)
        except RuntimeError as exc:
            print(f"operator failed: {exc}")
            return 1
        ratios.append(report(n, bare, op, f"round {r + 1}: " if args.rounds > 1 else ""))
        ops.append(op)
    import statistics

    ratio = statistics.median(ratios)
    if len(ratios) > 1:
        print(f"median rate ratio over {len(ratios)} rounds: {ratio:.2f} ({', '.join(f'{x:.2f}' for x in ratios)})")
    peak = max(op["rss_peak_mib"] for op in ops)
    ok = all(op["ready"] == n for op in ops) and ratio >= 0.7 and peak <= 150 and not any(op["torch"] for op in ops)
    print("OK" if ok else "GOAL MISSED")
    return 0 if ok else 1


def report(n: int, bare: dict, op: dict, prefix: str = "") -> float:
    """Print one bare/operator pair; returns the rate ratio once the operator is started."""
    op_rate = op["ready"] / op["seconds"]
    work_rate = op["ready"] / op["working_seconds"]
    bare_rate = bare["ready"] / bare["seconds"]
    ratio = work_rate / bare_rate if bare_rate else 0.0
    cold = op_rate / bare_rate if bare_rate else 0.0
    print(f"{prefix}workspaces: {n}")
    print(f"bare client: {bare['ready']}/{n} Ready in {bare['seconds']:.1f}s ({bare_rate:.1f}/s)")
    print(f"operator:    {op['ready']}/{n} Ready in {op['working_seconds']:.1f}s ({work_rate:.1f}/s) once started "
          f"(process start to kopf logged in: {op['startup_seconds']:.1f}s; {op['seconds']:.1f}s in all, "
          f"{op_rate:.1f}/s)")
    print(f"rate ratio operator/bare: {ratio:.2f} once started (goal >= 0.7); {cold:.2f} counting the start")
    gaps = ", ".join(f"{k} {op['gaps'][k]:.2f}s (bare {bare['gaps'][k]:.2f}s)" for k in op["gaps"])
    print(f"controller reaction, median: {gaps}")
    print(f"operator CPU until all Ready: {op['cpu_seconds']:.1f}s ({op['cpu_seconds'] / n * 1000:.0f} ms per "
          "Workspace, start included)")
    print(f"operator RSS with {UNRELATED_PODS} unrelated pods and {UNRELATED_NODES} nodes: "
          f"peak {op['rss_peak_mib']} MiB, steady {op['rss_steady_mib']} MiB (goal <= 150)")
    print(f"torch imported by the operator: {op['torch']}")
    for who, res in (("bare client", bare), ("operator", op)):
        total = sum(res["requests"].values())
        print(f"API requests by the {who}: {total} ({total / n:.1f} per Workspace) {res['requests']}")
    return ratio


if __name__ == "__main__":
    sys.exit(main())
