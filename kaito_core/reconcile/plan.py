"""``plan(workspace, preset, requirement, provisioner, observed) -> Plan``: the whole decision.

Pure: no I/O, no kopf, no kubernetes client. The operator applies a Plan to the API server,
``kaito render`` prints it, local mode realises it on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from kaito_core.errors import KaitoError
from kaito_core.images import runtime_image
from kaito_core.reconcile import inference, names, status as st, tuning
from kaito_core.reconcile.context import Context
from kaito_core.reconcile.nodes import target_node_count
from kaito_core.reconcile.observed import Observed, node_gpus
from kaito_core.types import NodeRequest


@dataclass
class Plan:
    """What a Workspace should look like now.

    ``node_objects`` are the provisioner's API objects (e.g. NodeClaims); ``objects`` the
    children to apply now; ``deferred`` the workload held back until the nodes are ready
    (upstream creates the StatefulSet/Job only then, so pods never sit Unschedulable).
    """

    name: str
    namespace: str
    uid: str
    mode: str
    revision: str
    requirement: Any = None
    node_requests: tuple[NodeRequest, ...] = ()
    node_objects: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[st.Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def workload(self) -> dict[str, Any] | None:
        for obj in self.objects + self.deferred:
            if obj["kind"] in ("StatefulSet", "Job"):
                return obj
        return None

    def all_objects(self) -> list[dict[str, Any]]:
        return self.node_objects + self.objects + self.deferred

    def applied_objects(self) -> list[dict[str, Any]]:
        """What the operator creates in this pass (render prints this)."""
        return self.node_objects + self.objects


def runtime_of(ws: Any, preset: Any) -> str:
    if ws.tuning is not None:
        return "transformers"
    if ws.runtime_annotation:
        return ws.runtime_annotation
    return preset.default_runtime if preset is not None else "transformers"


def image_of(ws: Any, preset: Any, runtime: str) -> str:
    spec = ws.tuning if ws.tuning is not None else ws.inference
    opts = spec.preset.preset_options if spec is not None and spec.preset is not None else None
    if opts is not None and opts.image and ws.tuning is None:
        return opts.image
    if preset is not None and preset.image and runtime == preset.default_runtime and ws.tuning is None:
        return preset.image
    return runtime_image(runtime)


def plan(workspace: Any, preset: Any, requirement: Any, provisioner: Any, observed: Observed | None = None, *,
         previous_status: Mapping[str, Any] | None = None) -> Plan:
    """Desired objects and status for ``workspace``.

    :param preset: the resolved :class:`~kaito_core.types.ModelPreset`; None for
        ``inference.template`` Workspaces.
    :param requirement: sizing's :class:`~kaito_core.sizing.Requirement` (or any object with
        ``instance_type``, ``gpus_per_node``, ``node_count``, ``disk_gib``,
        ``tensor_parallel_size``, ``errors``); None for template Workspaces.
    :param provisioner: the :class:`~kaito_core.types.Provisioner`; only its pure methods
        (``node_requests``, ``desired_objects``) are called.
    :param observed: what exists; default: nothing yet.
    :param previous_status: the status to carry transition times from (default: the
        Workspace's own ``status``).
    """
    ws = workspace
    observed = observed or Observed()
    name, namespace = ws.name, ws.namespace
    uid = names.uid_of(namespace, name, ws.metadata.uid)
    mode = ws.mode
    prev = previous_status if previous_status is not None else (
        ws.status.to_k8s() if ws.status is not None else None)
    runtime = runtime_of(ws, preset)
    req_view = {k: getattr(requirement, k, None) for k in
                ("instance_type", "gpus_per_node", "node_count", "tensor_parallel_size", "pipeline_parallel_size")}
    # Only what changes the pods: a new revision rolls the StatefulSet / recreates the Job.
    rev = names.revision(ws.spec_dict(), {"runtime": runtime, **req_view, "localWeights": ws.local_weights_path})
    target = target_node_count(ws, requirement)
    result = Plan(name=name, namespace=namespace, uid=uid, mode=mode, revision=rev, requirement=requirement)

    errors = list(getattr(requirement, "errors", ()) or ())
    if errors and not ws.bypass_resource_checks:
        result.errors = errors
        status = st.failed(mode=mode, reason="SizingFailed", message="; ".join(errors), target=target)
        result.status, result.events = st.stamp(status, prev, observed.now, ws.metadata.generation)
        return result

    try:
        result.node_requests = tuple(provisioner.node_requests(workspace=ws, requirement=requirement))
        result.node_objects = [dict(o) for o in provisioner.desired_objects(requests=result.node_requests)]
    except (KaitoError, ValueError) as exc:
        # e.g. Karpenter without an instance type: the Workspace cannot get nodes as written.
        result.errors = [f"provisioner {getattr(provisioner, 'name', '?')!r}: {exc}"]
        status = st.failed(mode=mode, reason="ProvisioningError", message=result.errors[0], target=target)
        result.status, result.events = st.stamp(status, prev, observed.now, ws.metadata.generation)
        return result
    gpus = int(getattr(requirement, "gpus_per_node", 0) or 0)
    if not gpus and preset is not None and observed.nodes:
        # BYO without an instance type: the GPUs the chosen nodes report.
        gpus = min(node_gpus(n) for n in observed.nodes) or 0
    ctx = Context(ws=ws, preset=preset, name=name, namespace=namespace, uid=uid, runtime=runtime,
                  image=image_of(ws, preset, runtime), gpus_per_node=gpus if preset is not None else 0,
                  node_count=target, tensor_parallel_size=int(getattr(requirement, "tensor_parallel_size", 1) or 1),
                  pipeline_parallel_size=int(getattr(requirement, "pipeline_parallel_size", 1) or 1),
                  disk_gib=int(getattr(requirement, "disk_gib", 0) or 0), revision=rev)
    first, workload = (tuning.objects(ctx) if mode == "tuning" else inference.objects(ctx))
    status, resources_ok = st.build(mode=mode, observed=observed, target=len(result.node_requests) or target,
                                    gpus_per_node=ctx.gpus_per_node)
    result.objects = first + (workload if resources_ok or observed.workload is not None else [])
    result.deferred = [] if resources_ok or observed.workload is not None else workload
    result.status, result.events = st.stamp(status, prev, observed.now, ws.metadata.generation)
    return result


def invalid(workspace: Any, problems: Sequence[str], *, now: str, reason: str = "InvalidWorkspace",
            previous_status: Mapping[str, Any] | None = None) -> Plan:
    """The Plan of a Workspace that cannot be planned at all (unknown preset, bad fields)."""
    ws = workspace
    uid = names.uid_of(ws.namespace, ws.name, ws.metadata.uid)
    result = Plan(name=ws.name, namespace=ws.namespace, uid=uid, mode=ws.mode, revision="", errors=list(problems))
    prev = previous_status if previous_status is not None else (
        ws.status.to_k8s() if ws.status is not None else None)
    status = st.failed(mode=ws.mode, reason=reason, message="; ".join(problems))
    result.status, result.events = st.stamp(status, prev, now, ws.metadata.generation)
    return result
