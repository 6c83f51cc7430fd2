"""The controllers a test plays beside the operator, writing through the API as the real ones
do (status only through ``/status``, pods owned by their StatefulSet), so they work against the
strict emulator and a real cluster alike:

- Karpenter: a NodeClaim gets a Ready Node carrying its labels (and its GPUs), then
  ``status.nodeName`` and the Launched/Registered/Initialized/Ready conditions;
- the StatefulSet controller and the kubelet: ``spec.replicas`` Running, Ready pods named
  ``<set>-<ordinal>``, then the set's ``readyReplicas`` and revisions;
- the Job controller and the kubelet: one pod that ran to completion (``job_outcome``
  "Complete", or "Failed"), then the Job's ``succeeded``/``failed`` and its condition.

``with FakeControllers(url, namespace="ns"):`` runs them every ``interval`` seconds on a thread
(or :meth:`FakeControllers.start` and :meth:`FakeControllers.close`); a test may also call
:meth:`~FakeControllers.launch`, :meth:`~FakeControllers.run_pods` and
:meth:`~FakeControllers.finish_job` itself, at the moment it wants.
"""

from __future__ import annotations

import threading
from typing import Any

from kaito_core.operator.kube import ApiError, KubeClient
from kaito_core.reconcile import fake_node

CLAIM_CONDITIONS = ("Launched", "Registered", "Initialized", "Ready")


def _gpus(claim: dict[str, Any]) -> int:
    requests = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
    try:
        return int(str(requests.get("nvidia.com/gpu", 1)))
    except ValueError:
        return 1


class FakeControllers:
    def __init__(self, url: str | KubeClient, *, namespace: str | None = None, interval: float = 0.2,
                 karpenter: bool = True, statefulsets: bool = True, jobs: bool = True,
                 job_outcome: str = "Complete"):
        # a client of the test's own (``url`` a KubeClient) is used as it is, and not closed here
        self._own_client = not isinstance(url, KubeClient)
        self.kube = KubeClient(url) if isinstance(url, str) else url
        if self._own_client:  # not the operator's ("kaito-operator"): Emulator.calls tells them apart
            self.kube.headers["User-Agent"] = "kaito-fake-controllers"
        self.namespace = namespace
        self.interval = interval
        self.karpenter, self.statefulsets, self.jobs = karpenter, statefulsets, jobs
        self.job_outcome = job_outcome
        self.stop = threading.Event()
        self.errors: list[str] = []  # the last API errors seen (a step retries on the next tick)
        self._thread: threading.Thread | None = None

    def start(self) -> "FakeControllers":
        """Step every ``interval`` seconds on a thread until :meth:`close` (or ``stop.set()``)."""
        self._thread = threading.Thread(target=self._run, name="fake-controllers", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._own_client:
            self.kube.close()

    def __enter__(self) -> "FakeControllers":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.step()
            except (ApiError, OSError) as exc:
                self.errors = (self.errors + [str(exc)])[-20:]
            self.stop.wait(self.interval)

    def step(self) -> None:
        if self.karpenter:
            for claim in self.kube.list(api_version="karpenter.sh/v1", kind="NodeClaim"):
                if not (claim.get("status") or {}).get("nodeName") and not claim["metadata"].get("deletionTimestamp"):
                    self.launch(claim)
        if self.statefulsets:
            for sts in self.kube.list(api_version="apps/v1", kind="StatefulSet", namespace=self.namespace):
                status = sts.get("status") or {}
                want = (sts.get("spec") or {}).get("replicas", 1)
                if status.get("readyReplicas") != want and not sts["metadata"].get("deletionTimestamp"):
                    self.run_pods(sts)
        if self.jobs:
            for job in self.kube.list(api_version="batch/v1", kind="Job", namespace=self.namespace):
                status = job.get("status") or {}
                if not (status.get("succeeded") or status.get("failed") or job["metadata"].get("deletionTimestamp")):
                    self.finish_job(job, self.job_outcome)

    def launch(self, claim: dict[str, Any], node: str | None = None) -> str:
        """Karpenter: register a Ready node for ``claim`` and report it in the claim's status."""
        node = node or f"node-{claim['metadata']['name']}"
        if self.kube.get(api_version="v1", kind="Node", name=node) is None:
            self.kube.create(fake_node(node, _gpus(claim), labels=claim["metadata"].get("labels")))
        conds = [{"type": t, "status": "True", "reason": t, "lastTransitionTime": "2026-01-01T00:00:00Z"}
                 for t in CLAIM_CONDITIONS]
        self.kube.patch(api_version="karpenter.sh/v1", kind="NodeClaim", name=claim["metadata"]["name"],
                        patch={"status": {"nodeName": node, "conditions": conds}}, subresource="status")
        return node

    def run_pods(self, sts: dict[str, Any], *, ready: bool = True) -> None:
        """The StatefulSet controller + kubelet: its pods exist, run and (``ready``) pass readiness."""
        meta, spec = sts["metadata"], sts.get("spec") or {}
        ns, replicas = meta["namespace"], spec.get("replicas", 1)
        template = spec.get("template") or {}
        owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        containers = [{"name": c.get("name", "main"), "image": c.get("image", "image")}
                      for c in (template.get("spec") or {}).get("containers") or [{}]]
        for i in range(replicas):
            pod = f"{meta['name']}-{i}"
            if self.kube.get(api_version="v1", kind="Pod", name=pod, namespace=ns) is None:
                self.kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "name": pod, "namespace": ns, "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                    "ownerReferences": [owner]}, "spec": {"containers": containers}})
            flag = "True" if ready else "False"
            self.kube.patch(api_version="v1", kind="Pod", name=pod, namespace=ns, subresource="status", patch={
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": flag}],
                           "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": ready,
                                                  "restartCount": 0, "state": {"running": {}}} for c in containers]}})
        revision = (meta.get("annotations") or {}).get("kaito.sh/revision", "r")
        self.kube.patch(api_version="apps/v1", kind="StatefulSet", name=meta["name"], namespace=ns,
                        subresource="status", patch={"status": {
                            "replicas": replicas, "readyReplicas": replicas if ready else 0,
                            "currentRevision": revision, "updateRevision": revision,
                            "observedGeneration": meta.get("generation", 1)}})

    def finish_job(self, job: dict[str, Any], outcome: str = "Complete") -> None:
        """The Job controller + kubelet: the Job's pod ran to ``outcome`` ("Complete" or "Failed")."""
        meta = job["metadata"]
        ns, pod = meta["namespace"], f"{meta['name']}-0"
        template = (job.get("spec") or {}).get("template") or {}
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        if self.kube.get(api_version="v1", kind="Pod", name=pod, namespace=ns) is None:
            containers = [{"name": c.get("name", "main"), "image": c.get("image", "image")}
                          for c in (template.get("spec") or {}).get("containers") or [{}]]
            self.kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": pod, "namespace": ns, "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "ownerReferences": [owner]}, "spec": {"containers": containers, "restartPolicy": "Never"}})
        ok = outcome == "Complete"
        self.kube.patch(api_version="v1", kind="Pod", name=pod, namespace=ns, subresource="status",
                        patch={"status": {"phase": "Succeeded" if ok else "Failed"}})
        cond = {"type": outcome, "status": "True", "reason": "Emulated" if ok else "BackoffLimitExceeded",
                "lastTransitionTime": "2026-01-01T00:00:00Z"}
        self.kube.patch(api_version="batch/v1", kind="Job", name=meta["name"], namespace=ns, subresource="status",
                        patch={"status": {"succeeded" if ok else "failed": 1, "conditions": [cond]}})
