"""Status from what is observed: upstream's conditions, ``state``, ``targetNodeCount`` and
``workerNodes``, with reasons a person can act on (pure).

Users complained when InferenceReady said True while the pod crash-looped (upstream #931) and
when quota errors stayed invisible (#344): every False condition here carries the reason seen
on the pods or reported by the provisioner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from kaito_core.reconcile.observed import Observed, node_gpus, node_is_ready

NODECLAIM_READY = "NodeClaimReady"
NODES_READY = "NodesReady"
RESOURCE_READY = "ResourceReady"
INFERENCE_READY = "InferenceReady"
JOB_STARTED = "JobStarted"
WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
WORKSPACE_DELETING = "WorkspaceDeleting"

# Waiting reasons that mean a person must act (vs. "still starting").
IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}
CONFIG_ERRORS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# Upstream's condition reasons (pkg/utils/consts, v0.12), kept so dashboards and alerts written
# for upstream KAITO keep matching.
R_RESOURCES_READY = "workspaceResourceStatusSuccess"
R_SUCCEEDED = "workspaceSucceeded"
R_OOM_KILLED = "ContainerOOMKilled"
# Reasons that get a Warning event when a condition turns False with them.
PROBLEMS = {"ImagePullError", "CrashLoopBackOff", "PodUnschedulable", "ContainerConfigError", "ProvisioningError",
            "ProvisioningFailed", "JobFailed", "SizingFailed", "InvalidWorkspace", "NodeNotReady",
            "InsufficientGPUs", "PodFailed", R_OOM_KILLED, "ApplyFailed"}


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the Workspace."""

    type: str  # Normal | Warning
    reason: str
    message: str


def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}


# -- pods -----------------------------------------------------------------------------------


def pod_problem(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The most actionable problem among the pods: (reason, message) or None."""
    found: list[tuple[int, str, str]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        pname = meta.get("name", "?")
        statuses = [("init container", s) for s in status.get("initContainerStatuses") or []] + \
                   [("container", s) for s in status.get("containerStatuses") or []]
        for what, cs in statuses:
            cname = cs.get("name", "?")
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            wreason = waiting.get("reason")
            wmsg = waiting.get("message") or ""
            if wreason in IMAGE_PULL:
                found.append((0, "ImagePullError",
                              f"pod {pname} {what} {cname}: {wreason}: {wmsg or 'cannot pull image ' + str(cs.get('image', ''))}"
                              .rstrip(": ")))
            elif wreason == "CrashLoopBackOff":
                last = (cs.get("lastState") or {}).get("terminated") or {}
                why = last.get("reason") or "Error"
                code = last.get("exitCode")
                tail = (last.get("message") or "").strip().splitlines()[-1:] or [""]
                reason = R_OOM_KILLED if why == "OOMKilled" else "CrashLoopBackOff"
                found.append((1, reason, f"pod {pname} {what} {cname} is crash-looping "
                                         f"(restarts {cs.get('restartCount', 0)}, last exit {why}"
                                         f"{f' code {code}' if code is not None else ''}){': ' + tail[0] if tail[0] else ''}"))
            elif wreason in CONFIG_ERRORS:
                found.append((2, "ContainerConfigError", f"pod {pname} {what} {cname}: {wreason}: {wmsg}".rstrip(": ")))
            term = state.get("terminated") or {}
            if what == "init container" and term and term.get("exitCode", 0) != 0:
                found.append((3, "PodFailed", f"pod {pname} init container {cname} failed "
                                              f"({term.get('reason', 'Error')}, exit {term.get('exitCode')})"))
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False" \
                    and cond.get("reason") == "Unschedulable":
                found.append((4, "PodUnschedulable", f"pod {pname} cannot be scheduled: {cond.get('message', '')}"
                              .rstrip(": ")))
        if status.get("phase") == "Failed" and not statuses:
            found.append((5, "PodFailed", f"pod {pname} failed: {status.get('reason', '')} {status.get('message', '')}"
                          .strip()))
    if not found:
        return None
    found.sort(key=lambda x: x[0])
    return found[0][1], found[0][2]


def pods_ready(pods: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                n += 1
    return n


# -- nodes ----------------------------------------------------------------------------------


def node_conditions(observed: Observed, target: int, gpus_per_node: int) -> tuple[list[dict], list[str], bool]:
    """NodeClaimReady, NodesReady, ResourceReady; the ready worker node names; whether failed."""
    states = list(observed.node_states)
    failed = any(s.failed for s in states)
    launched = [s for s in states if s.ready]
    if observed.provisioner_error:
        nc = condition(NODECLAIM_READY, False, "ProvisioningError", observed.provisioner_error)
    elif failed:
        bad = next(s for s in states if s.failed)
        nc = condition(NODECLAIM_READY, False, bad.reason or "ProvisioningFailed",
                       f"node request {bad.name}: {bad.message or bad.reason or 'failed'}")
    elif target and len(launched) >= target:
        nc = condition(NODECLAIM_READY, True, "NodeClaimsReady", f"{len(launched)}/{target} node requests are ready")
    else:
        waiting = next((s for s in states if not s.ready), None)
        reason = (waiting.reason if waiting is not None and waiting.reason else "NodeClaimNotReady")
        detail = f": {waiting.name}: {waiting.message}" if waiting is not None and waiting.message else ""
        nc = condition(NODECLAIM_READY, False, reason, f"{len(launched)}/{target} node requests are ready{detail}")
    by_name = {(n.get("metadata") or {}).get("name"): n for n in observed.nodes}
    ready: list[str] = []
    problems: list[str] = []
    for s in states:
        if not s.node_name:
            continue
        node = by_name.get(s.node_name)
        if node is None:
            problems.append(f"node {s.node_name} has not registered yet")
        elif not node_is_ready(node):
            problems.append(f"node {s.node_name} is not Ready")
        elif gpus_per_node and node_gpus(node) < gpus_per_node:
            problems.append(f"node {s.node_name} reports {node_gpus(node)} nvidia.com/gpu, "
                            f"{gpus_per_node} needed (is the NVIDIA device plugin running?)")
        else:
            ready.append(s.node_name)
    ready = sorted(set(ready))
    if target and len(ready) >= target:
        nr = condition(NODES_READY, True, "NodesReady", f"{len(ready)}/{target} nodes are ready")
    else:
        gpu_problem = any("nvidia.com/gpu" in p for p in problems)
        nr = condition(NODES_READY, False, "InsufficientGPUs" if gpu_problem else "NodesNotReady",
                       f"{len(ready)}/{target} nodes are ready" + (f": {problems[0]}" if problems else ""))
    if nc["status"] == "True" and nr["status"] == "True":
        rr = condition(RESOURCE_READY, True, R_RESOURCES_READY, f"{len(ready)} node(s) ready for the workload")
    else:
        first = nc if nc["status"] != "True" else nr
        rr = condition(RESOURCE_READY, False, first["reason"], first["message"])
    return [nc, nr, rr], ready, failed


# -- the whole status -----------------------------------------------------------------------


def inference_conditions(observed: Observed, resources_ok: bool) -> tuple[dict, bool]:
    """InferenceReady and whether the workload exists."""
    wl = observed.workload
    problem = pod_problem(observed.pods)
    if wl is None:
        if not resources_ok:
            return condition(INFERENCE_READY, False, "WaitingForNodes",
                             "the inference StatefulSet is created once the nodes are ready"), False
        return condition(INFERENCE_READY, False, "WorkloadNotCreated", "the inference StatefulSet is being created"), False
    if problem is not None:
        return condition(INFERENCE_READY, False, problem[0], problem[1]), True
    spec = wl.get("spec") or {}
    st = wl.get("status") or {}
    want = int(spec.get("replicas") or 0)
    ready_replicas = int(st.get("readyReplicas") or 0)
    pods_up = pods_ready(observed.pods)
    rolling = bool(st.get("updateRevision")) and st.get("currentRevision") != st.get("updateRevision")
    if want and ready_replicas >= want and not rolling:
        return condition(INFERENCE_READY, True, "InferenceReady",
                         f"{ready_replicas}/{want} inference pods are ready"), True
    msg = f"{ready_replicas}/{want} inference pods are ready" + (" (rolling to a new revision)" if rolling else "")
    if not st and pods_up:
        # Readiness is the StatefulSet's readyReplicas, as upstream; its controller has not
        # counted pods the kubelet already reports Ready (a new StatefulSet), so say both.
        msg = f"{pods_up}/{want} inference pods report Ready; the StatefulSet has not counted them yet"
    return condition(INFERENCE_READY, False, "InferenceNotReady", msg), True


def tuning_conditions(observed: Observed, resources_ok: bool) -> tuple[dict, dict, str]:
    """JobStarted, WorkspaceSucceeded and the state."""
    job = observed.workload
    problem = pod_problem(observed.pods)
    if job is None:
        why = "WaitingForNodes" if not resources_ok else "JobNotCreated"
        msg = "the tuning Job is created once the node is ready" if not resources_ok else "the tuning Job is being created"
        return (condition(JOB_STARTED, False, why, msg),
                condition(WORKSPACE_SUCCEEDED, False, why, msg), "Pending")
    st = job.get("status") or {}
    for cond in st.get("conditions") or []:
        if cond.get("type") in ("Complete", "SuccessCriteriaMet") and cond.get("status") == "True":
            return (condition(JOB_STARTED, True, "JobStarted", "the tuning Job ran"),
                    condition(WORKSPACE_SUCCEEDED, True, R_SUCCEEDED, "tuning finished; the adapter is at "
                              "the output"), "Succeeded")
        if cond.get("type") in ("Failed", "FailureTarget") and cond.get("status") == "True":
            msg = cond.get("message") or cond.get("reason") or "the Job failed"
            if problem is not None:
                msg += f"; {problem[1]}"
            return (condition(JOB_STARTED, True, "JobStarted", "the tuning Job ran"),
                    condition(WORKSPACE_SUCCEEDED, False, "JobFailed", msg), "Failed")
    if int(st.get("succeeded") or 0) >= 1:
        return (condition(JOB_STARTED, True, "JobStarted", "the tuning Job ran"),
                condition(WORKSPACE_SUCCEEDED, True, R_SUCCEEDED, "tuning finished"), "Succeeded")
    if problem is not None:
        return (condition(JOB_STARTED, False, problem[0], problem[1]),
                condition(WORKSPACE_SUCCEEDED, False, problem[0], problem[1]), "NotReady")
    started = bool(st.get("startTime") or st.get("active") or pods_ready(observed.pods))
    if started:
        return (condition(JOB_STARTED, True, "JobStarted", "the tuning Job is running"),
                condition(WORKSPACE_SUCCEEDED, False, "JobRunning", "the tuning Job is running"), "Running")
    return (condition(JOB_STARTED, False, "JobPending", "the tuning Job's pod is starting"),
            condition(WORKSPACE_SUCCEEDED, False, "JobPending", "the tuning Job's pod is starting"), "Pending")


def build(*, mode: str, observed: Observed, target: int, gpus_per_node: int,
          node_claims: bool = True) -> tuple[dict[str, Any], bool]:
    """The status (without transition times) and whether the workload may be created now.

    :param node_claims: False for a provisioner that makes no nodes (``byo``): upstream reports
        no NodeClaimReady condition there (its failures still reach ResourceReady).
    """
    conds, workers, failed = node_conditions(observed, target, gpus_per_node)
    resources_ok = conds[2]["status"] == "True"
    if not node_claims:
        conds = [c for c in conds if c["type"] != NODECLAIM_READY]
    if mode == "tuning":
        started, succeeded, state = tuning_conditions(observed, resources_ok)
        conds += [started, succeeded]
        if failed and state == "Pending":
            state = "Failed"
    else:
        inf, exists = inference_conditions(observed, resources_ok)
        # upstream's WorkspaceSucceeded needs ResourceReady and InferenceReady: pods still serving
        # on a node whose NodeClaim (or Node) is gone are not Ready.
        ok = inf["status"] == "True" and resources_ok
        why = inf if inf["status"] != "True" else conds[2]
        conds += [inf, condition(WORKSPACE_SUCCEEDED, ok, R_SUCCEEDED if ok else why["reason"],
                                 "the model is being served" if ok else why["message"])]
        if ok:
            state = "Ready"
        elif failed:
            state = "Failed"
        elif exists or inf["reason"] in PROBLEMS:
            state = "NotReady"
        else:
            state = "Pending"
    if observed.deleting:
        conds.append(condition(WORKSPACE_DELETING, True, "WorkspaceDeleting", "releasing nodes and children"))
    status = {"conditions": conds, "state": state, "targetNodeCount": target, "workerNodes": workers}
    return status, resources_ok


def failed(*, mode: str, reason: str, message: str, target: int = 0) -> dict[str, Any]:
    """Status of a Workspace that cannot be planned (invalid, does not fit)."""
    conds = [condition(RESOURCE_READY, False, reason, message)]
    conds.append(condition(JOB_STARTED if mode == "tuning" else INFERENCE_READY, False, reason, message))
    conds.append(condition(WORKSPACE_SUCCEEDED, False, reason, message))
    return {"conditions": conds, "state": "Failed", "targetNodeCount": target, "workerNodes": []}


def stamp(status: dict[str, Any], previous: Mapping[str, Any] | None, now: str,
          generation: int | None = None) -> tuple[dict[str, Any], list[Event]]:
    """Carry lastTransitionTime over unchanged conditions; events for the ones that changed."""
    before = {c.get("type"): c for c in ((previous or {}).get("conditions") or [])}
    events: list[Event] = []
    for cond in status["conditions"]:
        old = before.get(cond["type"])
        changed = old is None or old.get("status") != cond["status"]
        cond["lastTransitionTime"] = now if changed or not old.get("lastTransitionTime") else old["lastTransitionTime"]
        if generation is not None:
            cond["observedGeneration"] = generation
        if old is not None and old.get("status") == cond["status"] and old.get("reason") == cond["reason"]:
            continue
        if cond["status"] == "True":
            # Normal Events: the Workspace's outcome, and a recovery from a reported problem. Every
            # other condition turning True is in the status already (upstream KAITO posts no Event
            # for it); an Event each was a third of the operator's API writes per Workspace.
            recovered = old is not None and old.get("reason") in PROBLEMS
            if cond["type"] == WORKSPACE_SUCCEEDED or recovered:
                events.append(Event("Normal", cond["reason"], f"{cond['type']}: {cond['message']}"))
        elif cond["reason"] in PROBLEMS or (cond["type"] == "NodeClaimReady" and cond["reason"] not in
                                             ("NodeClaimNotReady", "Pending", "Launching")):
            if cond["type"] in (RESOURCE_READY, WORKSPACE_SUCCEEDED):
                continue  # the same problem is reported once, on the condition it belongs to
            events.append(Event("Warning", cond["reason"], f"{cond['type']}: {cond['message']}"))
    return status, events


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal statuses, ignoring transition times (to skip needless patches)."""
    def norm(s: Mapping[str, Any] | None) -> Any:
        if not s:
            return None
        out = {k: v for k, v in s.items() if k in ("state", "targetNodeCount", "workerNodes", "conditions")}
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in s.get("conditions") or []]
        return out
    return norm(a) == norm(b)


def conditions_by_type(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in ((status or {}).get("conditions") or [])}


__all__: Sequence[str] = ("Event", "build", "failed", "stamp", "same", "pod_problem", "conditions_by_type")


# -- children the API server refused --------------------------------------------------------

R_APPLY_FAILED = "ApplyFailed"
WORKLOAD_KINDS = ("StatefulSet", "Job")


def _refusal_hint(code: int | None) -> str:
    if code == 403:
        return ("the operator's ServiceAccount may lack the permission, or a ResourceQuota or policy refused it "
                "(kubectl describe resourcequota; the operator's ClusterRole)")
    if code in (400, 422):
        return ("an admission policy or this cluster's schema refused the object; the message says which field "
                "(kubectl get events; the Workspace's spec or the cluster's policies)")
    return "retrying with backoff"


def refused(status: Mapping[str, Any], failures: Mapping[str, tuple[int | None, str]], *, mode: str,
            previous: Mapping[str, Any] | None, now: str) -> tuple[dict[str, Any], list[Event]]:
    """``status`` with the children the API server refused (``failures``: ``"Kind/name"`` ->
    (HTTP code, message)) on the conditions they belong to: the workload's (InferenceReady or
    JobStarted) when the StatefulSet or Job was refused, and WorkspaceSucceeded for any child.
    Upstream KAITO puts the creation error on WorkspaceSucceeded too; an Event alone scrolls
    away. One Warning Event per new refusal (not one per retry)."""
    out = dict(status)
    lines = [f"{key}: HTTP {code or '?'}: {msg}; {_refusal_hint(code)}" for key, (code, msg) in sorted(failures.items())]
    message = ("the API server refused " + " | ".join(lines))[:1000]
    workload = [k for k in failures if k.split("/")[0] in WORKLOAD_KINDS]
    touched = {WORKSPACE_SUCCEEDED} | ({JOB_STARTED if mode == "tuning" else INFERENCE_READY} if workload else set())
    before = {c.get("type"): c for c in ((previous or {}).get("conditions") or [])}
    conditions = []
    for c in out.get("conditions") or []:
        c = dict(c)
        if c.get("type") in touched:
            old = before.get(c["type"]) or {}
            kept = old.get("status") == "False" and old.get("lastTransitionTime")
            c.update(status="False", reason=R_APPLY_FAILED, message=message,
                     lastTransitionTime=old["lastTransitionTime"] if kept else now)
        conditions.append(c)
    out["conditions"] = conditions
    permanent = any(code in (400, 403, 422) for key, (code, _) in failures.items() if key in workload)
    if permanent:
        out["state"] = "Failed"
    elif out.get("state") in ("Ready", "Succeeded", "Running"):
        out["state"] = "NotReady"
    old_msg = (before.get(WORKSPACE_SUCCEEDED) or {})
    events = [] if (old_msg.get("reason") == R_APPLY_FAILED and old_msg.get("message") == message) else [
        Event("Warning", R_APPLY_FAILED, message)]
    return out, events
