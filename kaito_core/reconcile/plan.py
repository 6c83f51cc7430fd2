"""The Plan: one frozen answer to "what should this Workspace look like now" (pure).

:func:`plan_workspace` is the one planner: ``kaito plan`` prints its Plan, ``kaito render`` and
the operator apply it, ``kaito up`` realises it on this machine. :func:`plan` is the step that
turns resolved inputs (preset, sizing) into objects; :func:`invalid` is the Plan of a
Workspace that cannot be planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from kaito_core.errors import KaitoError
from kaito_core.images import runtime_image
from kaito_core.reconcile import inference, names, status as st, tuning
from kaito_core.reconcile.context import Context, wanted_memory_gib
from kaito_core.reconcile.inputs import Inputs, resolve, runtime_of  # noqa: F401 - runtime_of re-exported
from kaito_core.reconcile.nodes import ignored_count, standard_node_requests, target_node_count
from kaito_core.reconcile.observed import Observed, node_gpus
from kaito_core.reconcile.rules import effective_parallelism
from kaito_core.types import NodeRequest

# Part of a machine's host memory a pod may request: the kubelet, system daemons and eviction
# thresholds keep the rest (AKS reserves ~ 25% on small nodes).
ALLOCATABLE_MEMORY_FRACTION = 0.75


@dataclass(frozen=True)
class Plan:
    """What a Workspace should look like now, and why.

    ``node_requests`` are built by the core (names, count, instance type, labels, taints);
    ``node_objects`` are the provisioner's API objects for them; ``objects`` the children to
    apply now; ``deferred`` the workload held back until the nodes are ready (upstream creates
    the StatefulSet/Job only then, so pods never sit Unschedulable). ``command`` and ``env`` are
    the main container's full argv and environment, exactly as the pod gets them.
    """

    name: str
    namespace: str
    uid: str
    mode: str
    revision: str
    preset: str | None = None
    runtime: str | None = None
    image: str = ""
    instance_type: str | None = None
    gpus_per_node: int = 0
    node_count: int = 0
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    dtype: str | None = None
    disk_gib: int = 0
    cpu: str = ""
    memory_gib: int = 0
    command: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    requirement: Any = None
    node_requests: tuple[NodeRequest, ...] = ()
    node_objects: list[dict[str, Any]] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[st.Event] = field(default_factory=list)
    reasons: tuple[str, ...] = ()
    errors: list[str] = field(default_factory=list)

    @property
    def workload(self) -> dict[str, Any] | None:
        for obj in self.objects + self.deferred:
            if obj["kind"] in ("StatefulSet", "Job"):
                return obj
        return None

    @property
    def replicas(self) -> int:
        """Pods of the workload: one per node for inference, one Job pod for tuning."""
        wl = self.workload
        if wl is None:
            return 0
        return 1 if wl["kind"] == "Job" else int(wl["spec"].get("replicas") or 0)

    def all_objects(self) -> list[dict[str, Any]]:
        return self.node_objects + self.objects + self.deferred

    def applied_objects(self) -> list[dict[str, Any]]:
        """What the operator creates in this pass (render prints this)."""
        return self.node_objects + self.objects

    def to_dict(self) -> dict[str, Any]:
        """``kaito plan -o json``: the decision, in the Workspace API's camelCase."""
        req = self.requirement
        out: dict[str, Any] = {
            "name": self.name, "namespace": self.namespace, "mode": self.mode, "preset": self.preset,
            "runtime": self.runtime, "image": self.image, "instanceType": self.instance_type,
            "gpusPerNode": self.gpus_per_node, "nodeCount": self.node_count, "replicas": self.replicas,
            "tensorParallelSize": self.tensor_parallel_size, "pipelineParallelSize": self.pipeline_parallel_size,
            "dtype": self.dtype, "diskGiB": self.disk_gib, "cpu": self.cpu, "memoryGiB": self.memory_gib,
            "gpuMemoryRequiredGiB": round(float(getattr(req, "gpu_memory_required_gib", 0.0) or 0.0), 2),
            "gpuMemoryAvailableGiB": round(float(getattr(req, "gpu_memory_available_gib", 0.0) or 0.0), 2),
            "nodeRequests": [{"name": r.name, "instanceType": r.instance_type, "labels": dict(r.labels),
                              "taints": [dict(t) for t in r.taints], "diskGiB": r.disk_gib,
                              "gpuCount": r.gpu_count} for r in self.node_requests],
            "nodeObjects": len(self.node_objects),
            "command": list(self.command), "env": [dict(e) for e in self.env],
            "reasons": list(self.reasons), "errors": list(self.errors)}
        if req is not None and hasattr(req, "to_dict") and getattr(req, "preset", ""):
            extra = req.to_dict()
            for key in ("perGpuRequiredGiB", "perGpuUsableGiB", "contextTokens", "method", "gpuMemoryUtilization"):
                out[key] = extra.get(key)
        return out


def image_of(ws: Any, preset: Any, runtime: str, runtime_spec: Any = None) -> str:
    """The main container's image: presetOptions.image, the preset's own, the runtime's, kaito's."""
    spec = ws.tuning if ws.tuning is not None else ws.inference
    opts = spec.preset.preset_options if spec is not None and spec.preset is not None else None
    if opts is not None and opts.image and ws.tuning is None:
        return opts.image
    if preset is not None and preset.image and runtime == preset.default_runtime and ws.tuning is None:
        return preset.image
    if runtime_spec is not None and getattr(runtime_spec, "image", ""):
        return runtime_spec.image
    return runtime_image(runtime)


def _host_resources(requirement: Any, preset: Any, catalog: Mapping[str, Any], mode: str,
                    target: int) -> tuple[str, int, list[str]]:
    """CPU and memory requests that fit the chosen instance (a pod never asks for more than the
    node can allocate: 19Gi on a 16 GiB g5.xlarge stays Pending forever)."""
    gpus = int(getattr(requirement, "gpus_per_node", 0) or 0)
    want_cpu = 4 if mode == "tuning" else 2
    want_mem = wanted_memory_gib(preset.weight_gib if preset is not None else 0.0, max(1, gpus * target))
    it = catalog.get(getattr(requirement, "instance_type", None) or "")
    reasons: list[str] = []
    if it is None:
        return str(want_cpu), want_mem, reasons
    cpu, mem = want_cpu, want_mem
    if it.vcpus:
        cpu = max(1, min(want_cpu, it.vcpus - 1))
    if it.memory_gib:
        cap = int(it.memory_gib * ALLOCATABLE_MEMORY_FRACTION)
        if cap < mem:
            mem = max(1, cap)
            reasons.append(f"host memory: {mem} GiB requested ({it.name} has {it.memory_gib:g} GiB; "
                           f"{ALLOCATABLE_MEMORY_FRACTION:.0%} is allocatable to pods)")
    return str(cpu), mem, reasons


def plan(workspace: Any, preset: Any, requirement: Any, provisioner: Any, observed: Observed | None = None, *,
         previous_status: Mapping[str, Any] | None = None, inputs: Inputs | None = None,
         registry: Any = None) -> Plan:
    """Desired objects and status for ``workspace`` from resolved inputs.

    :param preset: the resolved :class:`~kaito_core.types.ModelPreset`; None for
        ``inference.template`` Workspaces.
    :param requirement: sizing's :class:`~kaito_core.sizing.Requirement` (for templates: the
        nodes ``resource`` asks for).
    :param provisioner: only its pure ``desired_objects`` is called, with the core's requests.
    :param observed: what exists; default: nothing yet.
    :param inputs: the resolved :class:`Inputs` (user config keys); ``registry``: runtimes and
        the catalog. Without ``inputs`` (callers that resolved on their own), the Workspace is
        resolved again here with ``provisioner``'s catalog and the ConfigMaps ``requirement``
        was sized with, so every caller gets the one planner's answer.
    """
    ws = workspace
    registry, inputs, preset, requirement = _settle(ws, registry, inputs, preset, requirement, provisioner)
    observed = observed or Observed()
    uid = names.uid_of(ws.namespace, ws.name, ws.metadata.uid)
    mode = ws.mode
    prev = previous_status if previous_status is not None else (
        ws.status.to_k8s() if ws.status is not None else None)
    runtime = runtime_of(ws, preset)
    user_vllm = dict(inputs.user_vllm) if inputs is not None else {}
    target = target_node_count(ws, requirement)
    group = _group_size(ws, preset, runtime, target)
    tp, pp = _parallelism(preset, runtime, requirement, user_vllm, group)
    req_view = {k: getattr(requirement, k, None) for k in ("instance_type", "gpus_per_node", "node_count", "dtype")}
    # Only what changes the pods: a new revision rolls the StatefulSet / recreates the Job.
    rev = names.revision(ws.spec_dict(), {"runtime": runtime, **req_view, "tp": tp, "pp": pp,
                                          "localWeights": ws.local_weights_path})
    base = Plan(name=ws.name, namespace=ws.namespace, uid=uid, mode=mode, revision=rev,
                preset=preset.name if preset is not None else None, runtime=runtime if ws.preset_name else None,
                instance_type=getattr(requirement, "instance_type", None),
                gpus_per_node=int(getattr(requirement, "gpus_per_node", 0) or 0), node_count=target,
                tensor_parallel_size=tp, pipeline_parallel_size=pp, dtype=getattr(requirement, "dtype", None),
                disk_gib=int(getattr(requirement, "disk_gib", 0) or 0), requirement=requirement,
                reasons=tuple(getattr(requirement, "reasons", ()) or ()) + (inputs.notes if inputs else ())
                + _count_reason(ws, requirement, target))

    def failed(reason: str, errors: list[str]) -> Plan:
        status = st.failed(mode=mode, reason=reason, message="; ".join(errors), target=target)
        stamped, events = st.stamp(status, prev, observed.now, ws.metadata.generation)
        return replace(base, errors=errors, status=stamped, events=events)

    errors = list(inputs.problems) if inputs is not None else []
    errors += list(getattr(requirement, "errors", ()) or ())
    if errors and not (ws.bypass_resource_checks and not (inputs and inputs.problems)):
        return failed("SizingFailed" if not (inputs and inputs.problems) else "InvalidWorkspace", errors)
    requests = tuple(standard_node_requests(ws, requirement))
    try:
        node_objects = [dict(o) for o in provisioner.desired_objects(requests=requests)]
    except Exception as exc:  # noqa: BLE001 - a provisioner's bug becomes a condition, never a crash
        return replace(failed("ProvisioningError", [f"provisioner {getattr(provisioner, 'name', '?')!r}: "
                                                    f"{type(exc).__name__}: {exc}"]), node_requests=requests)
    ctx, host_reasons = _context(ws, base, preset, requirement, registry, observed, user_vllm, group)
    gpus = base.gpus_per_node or ctx.gpus_per_node
    try:
        first, workload = (tuning.objects(ctx) if mode == "tuning" else inference.objects(ctx))
    except (KaitoError, ValueError, TypeError) as exc:  # e.g. a plugin runtime's build_command failed
        return failed("InvalidWorkspace", [f"runtime {runtime!r}: {exc}"])
    # upstream's BYO mode reports no NodeClaimReady: only provisioners that make nodes have claims
    status, resources_ok = st.build(mode=mode, observed=observed, target=len(requests) or target,
                                    gpus_per_node=ctx.gpus_per_node,
                                    node_claims=getattr(provisioner, "creates_nodes", True) is not False)
    held = not (resources_ok or observed.workload is not None)
    container = _main_container(workload[0]) if workload else {}
    stamped, events = st.stamp(status, prev, observed.now, ws.metadata.generation)
    return replace(base, image=container.get("image", ctx.image), gpus_per_node=gpus,
                   cpu=ctx.cpu, memory_gib=ctx.memory_gib, node_requests=requests, node_objects=node_objects,
                   objects=first + ([] if held else workload), deferred=workload if held else [],
                   command=tuple(container.get("command") or ()) + tuple(container.get("args") or ()),
                   env=tuple(container.get("env") or ()), status=stamped, events=events,
                   reasons=base.reasons + tuple(host_reasons))


def _context(ws: Any, base: Plan, preset: Any, requirement: Any, registry: Any, observed: Observed,
             user_vllm: Mapping[str, Any], group: int) -> tuple[Context, list[str]]:
    """What the object builders need, and the host-resource reasons."""
    gpus = base.gpus_per_node
    if not gpus and preset is not None and observed.nodes:
        # BYO without an instance type: the GPUs the chosen nodes report.
        gpus = min(node_gpus(n) for n in observed.nodes) or 0
    runtime = runtime_of(ws, preset)
    runtime_spec = (getattr(registry, "runtimes", {}) or {}).get(runtime) if preset is not None else None
    catalog = getattr(registry, "instance_types", {}) or {}
    cpu, mem, host_reasons = _host_resources(requirement, preset, catalog, ws.mode, base.node_count)
    ctx = Context(ws=ws, preset=preset, name=ws.name, namespace=ws.namespace, uid=base.uid, runtime=runtime,
                  image=image_of(ws, preset, runtime, runtime_spec), gpus_per_node=gpus if preset is not None else 0,
                  node_count=base.node_count, tensor_parallel_size=base.tensor_parallel_size,
                  pipeline_parallel_size=base.pipeline_parallel_size, disk_gib=base.disk_gib, revision=base.revision,
                  gpu_memory_utilization=float(getattr(requirement, "gpu_memory_utilization", 0.84)),
                  dtype=base.dtype, cpu=cpu, memory_gib=mem, user_vllm=dict(user_vllm), runtime_spec=runtime_spec,
                  group_size=group, gpu_resource=getattr(requirement, "gpu_resource", None) or "nvidia.com/gpu")
    return ctx, host_reasons


def _count_reason(ws: Any, requirement: Any, target: int) -> tuple[str, ...]:
    count = ignored_count(ws, requirement)
    if count is None:
        return ()
    return (f"resource.count {count}: not used; the model needs {target} node(s) of "
            f"{getattr(requirement, 'instance_type', None)} (as upstream's node estimator: the count "
            "comes from the GPUs the model needs; resource.count is deprecated in v1beta1)",)


def _group_size(ws: Any, preset: Any, runtime: str, target: int) -> int:
    """Nodes serving one model together: all of them for vLLM with a preset that spans nodes
    (upstream's Ray group: every node of the plan joins one group), else 1 (independent replicas)."""
    if ws.tuning is None and runtime == "vllm" and preset is not None and preset.supports_multinode:
        return target
    return 1


def _parallelism(preset: Any, runtime: str, requirement: Any, user_vllm: Mapping[str, Any],
                 group: int) -> tuple[int, int]:
    """(TP, PP) over the group's GPUs: sizing's, redone when resource.count made the group
    larger than sizing needed, with the user's valid ConfigMap values on top."""
    if runtime != "vllm" or requirement is None:
        return 1, 1
    if preset is not None and group != int(getattr(requirement, "node_count", 0) or 0) \
            and getattr(requirement, "gpus_per_node", 0):
        from dataclasses import replace as _replace

        from kaito_core.sizing import parallel_sizes

        tp, pp = parallel_sizes(preset, requirement.gpus_per_node, group)
        requirement = _replace(requirement, tensor_parallel_size=tp, pipeline_parallel_size=pp)
    return effective_parallelism(user_vllm, requirement)


def _settle(ws: Any, registry: Any, inputs: Inputs | None, preset: Any, requirement: Any,
            provisioner: Any) -> tuple[Any, Inputs | None, Any, Any]:
    """The registry, inputs, preset and requirement to plan with: callers that resolved on
    their own get the Workspace resolved again with the provisioner's catalog."""
    if registry is None:
        from kaito_core.plugins import get_registry

        registry = get_registry()
    if inputs is None and (requirement is not None or ws.preset_name is None):
        inputs = resolve(ws, registry, configmaps=getattr(requirement, "configmaps", None), provisioner=provisioner)
        preset, requirement = inputs.preset if inputs.preset is not None else preset, inputs.requirement
    return registry, inputs, preset, requirement


def _main_container(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    containers = spec.get("containers") or [{}]
    return containers[0]


def plan_workspace(workspace: Any, *, registry: Any, provisioner: Any,
                   configmaps: Mapping[str, Any] | None = None, observed: Observed | None = None,
                   previous_status: Mapping[str, Any] | None = None, now: str | None = None,
                   batch: int = 1, cloud: str | None = None, settings: Mapping[str, str] | None = None) -> Plan:
    """THE planner: Workspace + its ConfigMaps + the registry + the provisioner's catalog +
    observed state -> one frozen :class:`Plan`. Never raises for a bad Workspace: problems are
    the Plan's ``errors`` and its Failed status.

    :param configmaps: ConfigMaps by name (API models or plain objects) for ``inference.config``
        and ``tuning.config``.
    :param now: the clock for conditions when ``observed`` is not given.
    :param settings: the provisioner's settings (its cloud, for the catalog).
    """
    from kaito_core.api import validate_workspace

    observed = observed or Observed(now=now or "1970-01-01T00:00:00Z")
    try:
        result = validate_workspace(workspace, registry=registry, configmaps=dict(configmaps or {}))
        inputs = resolve(workspace, registry, configmaps=configmaps, provisioner=provisioner, batch=batch,
                         cloud=cloud, settings=settings)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take a reconcile down
        return invalid(workspace, [f"internal error while planning (a bug in kaito or in a plugin; "
                                   f"`kaito plugins doctor` lists broken plugins): {type(exc).__name__}: "
                                   f"{str(exc)[:500]}"], now=observed.now, previous_status=previous_status)
    generic = inputs.preset is not None and "generic" in inputs.found
    problems = [str(e) for e in result.errors
                if not (generic and e.path.endswith("preset.name"))
                and not (e.path == "resource.instanceType" and inputs.requirement is not None
                         and not getattr(inputs.requirement, "errors", ()))]
    if inputs.preset is None and workspace.preset_name is not None:
        return invalid(workspace, problems + inputs.problems, now=observed.now, previous_status=previous_status)
    if problems:
        inputs = replace(inputs, problems=problems + list(inputs.problems))
    p = plan(workspace, inputs.preset, inputs.requirement, provisioner, observed,
             previous_status=previous_status, inputs=inputs, registry=registry)
    found = (inputs.found,) if inputs.found else ()
    return replace(p, reasons=found + p.reasons)


def invalid(workspace: Any, problems: Sequence[str], *, now: str, reason: str = "InvalidWorkspace",
            previous_status: Mapping[str, Any] | None = None) -> Plan:
    """The Plan of a Workspace that cannot be planned at all (unknown preset, bad fields)."""
    ws = workspace
    uid = names.uid_of(ws.namespace, ws.name, ws.metadata.uid)
    prev = previous_status if previous_status is not None else (
        ws.status.to_k8s() if ws.status is not None else None)
    status = st.failed(mode=ws.mode, reason=reason, message="; ".join(problems))
    stamped, events = st.stamp(status, prev, now, ws.metadata.generation)
    return Plan(name=ws.name, namespace=ws.namespace, uid=uid, mode=ws.mode, revision="", preset=ws.preset_name,
                errors=list(problems), status=stamped, events=events)
