"""Admission-time rules the planner enforces (pure): templates, runtime rules, user parallelism.

Each problem names the field path, the value and the fix; the webhook refuses a Workspace whose
plan has problems, and the operator reports them as a condition (upstream's webhook rules,
KAITO-REFERENCE.md "Upstream validation", and vLLM's own limits).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from kaito_core.reconcile.pods import GPU_RESOURCE

# vLLM model classes without LoRA support (no ``SupportsLoRA`` in vLLM's model code); upstream
# marks its falcon presets as not supporting adapters for the same reason.
NO_VLLM_LORA = frozenset({"FalconForCausalLM"})


def short(value: Any) -> str:
    """``value`` quoted, cut to 80 characters: a 10 MB value must not flood the message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else empty: the template is the user's free-form object
    (its wrong types are validation's to report, with their paths; sizing must not crash on them)."""
    return value if isinstance(value, Mapping) else {}


def _template_gpus(ws: Any) -> int:
    spec = _mapping(_mapping(ws.inference.template).get("spec")) if ws.inference is not None else {}
    containers = spec.get("containers")
    total = 0
    for c in containers if isinstance(containers, list) else []:
        res = _mapping(_mapping(c).get("resources"))
        value = _mapping(res.get("limits")).get(GPU_RESOURCE) or _mapping(res.get("requests")).get(GPU_RESOURCE)
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
            continue
        total = max(total, min(int(str(value)), 1024))
    return total


def template_requirement(ws: Any, catalog: Mapping[str, Any], provisioner: Any) -> tuple[Any, list[str]]:
    """``inference.template`` Workspaces: nodes from ``resource`` (instanceType, count), no sizing."""
    from kaito_core import sizing

    res = ws.resource
    it_name = res.instance_type if res is not None else None
    count = res.count if res is not None and res.count else 1
    problems: list[str] = []
    creates = getattr(provisioner, "creates_nodes", True) if provisioner is not None else False
    it = catalog.get(it_name) if it_name else None
    gpus = it.gpu_count if it is not None else _template_gpus(ws)
    pname = getattr(provisioner, "name", "?")
    if creates and not it_name:
        problems.append(f"resource.instanceType: an inference.template Workspace sets no instanceType, and "
                        f"provisioner {pname!r} creates nodes of a named type; set resource.instanceType")
    elif creates and it is None:
        problems.append(f"resource.instanceType: {short(it_name)} is not in provisioner {pname!r}'s catalog "
                        f"({len(catalog)} types); choose one of them")
    reasons = (f"inference.template: {count} node(s) from resource.count, "
               f"{gpus} GPU(s) each from {'the instance type' if it else 'the template'}; no model sizing",)
    req = sizing.Requirement(preset="", runtime="", instance_type=it_name, gpus_per_node=gpus, node_count=count,
                             gpu_memory_required_gib=0.0,
                             gpu_memory_available_gib=it.total_gpu_memory_gib if it else 0.0,
                             disk_gib=sizing.DISK_HEADROOM_GIB, reasons=reasons)
    return req, problems


def _strength(value: Any) -> float | None:
    try:
        return float(str(value))
    except ValueError:
        return None


def runtime_problems(ws: Any, preset: Any, runtime: str, registry: Any) -> list[str]:
    """Rules of the chosen runtime, and fields kaito does not support yet."""
    problems: list[str] = []
    runtimes = getattr(registry, "runtimes", {}) or {}
    if ws.inference is None:
        return problems
    if ws.runtime_annotation and runtimes and runtime not in runtimes:
        problems.append(f"metadata.annotations[kaito.sh/runtime]: runtime {short(runtime)} is not installed "
                        f"(installed: {', '.join(sorted(runtimes))}); remove the annotation or install its plugin")
    elif runtimes and runtime not in runtimes and preset is not None:
        # the preset's own default: its plugin expects a runtime plugin this install lacks
        others = sorted(set(preset.runtimes) & set(runtimes))
        problems.append(f"inference.preset.name: preset {preset.name!r} serves with runtime {short(runtime)} by "
                        f"default, which is not installed (installed: {', '.join(sorted(runtimes))}); install its "
                        "plugin" + (f", or set the annotation kaito.sh/runtime: {others[0]}" if others else ""))
    adapters = ws.inference.adapters or []
    rt = runtimes.get(runtime)
    if adapters and rt is not None and not rt.supports_adapters:
        problems.append(f"inference.adapters: runtime {short(runtime)} does not serve LoRA adapters; remove them or "
                        f"use kaito.sh/runtime: transformers")
    if runtime != "vllm" or not adapters:
        return problems
    if preset is not None and preset.architecture in NO_VLLM_LORA:
        problems.append(f"inference.adapters: vLLM cannot serve LoRA adapters on {preset.architecture} "
                        f"({preset.name}; upstream marks it as not supporting adapters); remove the adapters "
                        f"or set the annotation kaito.sh/runtime: transformers")
    for i, ad in enumerate(adapters):
        value = _strength(ad.strength) if ad.strength is not None else 1.0
        if value is not None and value < 1.0:
            problems.append(f"inference.adapters[{i}].strength: {short(ad.strength)}: the vLLM runtime applies LoRA "
                            f"adapters at full strength only; set strength \"1.0\" or the annotation "
                            f"kaito.sh/runtime: transformers (which merges with a weight)")
    return problems


def _int(value: Any) -> int | None:
    """A positive integer flag as vLLM reads it (``2`` or ``"2"``), else None."""
    from kaito_core.api.configs import vllm_int

    number = vllm_int(value)
    return number if number is not None and number > 0 else None


def user_parallelism(user_vllm: Mapping[str, Any], req: Any, config: str | None) -> list[str]:
    """A user ConfigMap's tensor/pipeline parallel sizes must fit the GPUs the plan holds."""
    if req is None or not req.gpus_per_node or req.errors:
        return []
    where = f"inference.config: ConfigMap {config!r} key inference_config.yaml vllm"
    tp, pp = _int(user_vllm.get("tensor-parallel-size")), _int(user_vllm.get("pipeline-parallel-size"))
    if any(user_vllm.get(k) is not None and _int(user_vllm.get(k)) is None
           for k in ("tensor-parallel-size", "pipeline-parallel-size")):
        return []  # not a positive integer: validation names the key (kaito_core.api.configs)
    gpus = req.gpus_per_node * req.node_count
    if tp is not None and tp > req.gpus_per_node:
        return [f"{where}.tensor-parallel-size {tp} exceeds the {req.gpus_per_node} GPU(s) per node of "
                f"{req.instance_type}; set it to at most {req.gpus_per_node} or remove it (the plan uses "
                f"{req.tensor_parallel_size})"]
    if tp is None and pp is None:
        return []
    eff_tp = tp or (gpus // pp if pp and gpus % pp == 0 else req.tensor_parallel_size)
    eff_pp = pp or max(1, gpus // eff_tp)
    if eff_tp * eff_pp != gpus:
        return [f"{where}: tensor-parallel-size {eff_tp} x pipeline-parallel-size {eff_pp} = {eff_tp * eff_pp} "
                f"GPUs, but the plan holds {gpus} ({req.node_count} node(s) x {req.gpus_per_node}); make the "
                f"product {gpus} or remove both keys"]
    return []


def effective_parallelism(user_vllm: Mapping[str, Any], req: Any) -> tuple[int, int]:
    """(TP, PP) the pods run: the user's valid values merged over the plan's."""
    tp0 = int(getattr(req, "tensor_parallel_size", 1) or 1)
    pp0 = int(getattr(req, "pipeline_parallel_size", 1) or 1)
    tp, pp = _int(user_vllm.get("tensor-parallel-size")), _int(user_vllm.get("pipeline-parallel-size"))
    if tp is None and pp is None:
        return tp0, pp0
    gpus = tp0 * pp0
    eff_tp = tp or (gpus // pp if pp and gpus % pp == 0 else tp0)
    eff_pp = pp or max(1, gpus // eff_tp)
    return eff_tp, eff_pp


MIG_PROFILE = re.compile(r"^(\d+)g\.(\d+)gb$")


def partition_requirement(ws: Any, preset: Any, runtime: str, provisioner: Any, *,
                          max_model_len: int | None) -> tuple[Any, list[str]]:
    """``resource.partition`` as upstream v0.12 means it, on existing (BYO) nodes: ``accelerator``
    = ``count`` whole GPUs for one pod; ``mig`` = one MIG slice of ``profile`` (no TP across
    slices). Returns the requirement and the problems."""
    from dataclasses import replace as _replace

    from kaito_core import sizing

    part, res = ws.resource.partition, ws.resource
    problems: list[str] = []
    where = f"resource.partition: mode {short(part.mode)}"
    if ws.tuning is not None:
        problems.append(f"{where}: tuning runs on whole GPUs; remove resource.partition")
    if getattr(provisioner, "creates_nodes", True) is not False and provisioner is not None:
        problems.append(f"{where}: GPU partitions run on existing nodes, as upstream (BYO, no node "
                        f"auto-provisioning); provisioner {getattr(provisioner, 'name', '?')!r} creates nodes: "
                        f"use the byo provisioner or remove resource.partition")
    if res.instance_type:
        problems.append(f"resource.instanceType: {short(res.instance_type)} must be empty with resource.partition "
                        f"(the nodes exist; their GPUs are used as they are)")
    if res.count is not None and res.count > 1:
        problems.append(f"resource.count: {res.count} must be 1 with resource.partition (one pod on one "
                        f"partition); use several Workspaces for replicas")
    est = sizing.estimate(preset, runtime=runtime, max_model_len=max_model_len)
    base = sizing.Requirement(preset=preset.name, runtime=runtime, instance_type=None, gpus_per_node=1,
                              node_count=1, gpu_memory_required_gib=est.total_gib, gpu_memory_available_gib=0.0,
                              disk_gib=sizing.disk_gib(preset), context_tokens=est.context_tokens,
                              reasons=est.reasons, estimate=est)
    if part.mode == "accelerator":
        count = part.count or 0
        if count < 1:
            problems.append(f"resource.partition.count: required for mode 'accelerator' (the number of whole GPUs)")
            count = 1
        tp, pp = sizing.parallel_sizes(preset, count, 1) if runtime == "vllm" else (1, 1)
        why = (f"partition accelerator: {count} whole GPU(s) for one pod on an existing node; the GPUs' memory "
               f"is checked on the node (its GPU type is not known before), {est.sharded_gib / count + 1:.1f} GiB "
               f"each needed")
        return _replace(base, gpus_per_node=count, tensor_parallel_size=tp, pipeline_parallel_size=pp,
                        gpu_memory_required_gib=est.sharded_gib + est.per_device_overhead_gib * count,
                        reasons=(why,) + base.reasons), problems
    m = MIG_PROFILE.fullmatch(part.profile or "")
    if m is None:
        problems.append(f"resource.partition.profile: {short(part.profile)} is not a MIG profile; expected one such as "
                        f"'1g.10gb'")
        return base, problems
    usable = int(m.group(2)) * 1e9 / 2**30 * sizing.GPU_MEMORY_UTILIZATION
    if est.total_gib > usable:
        problems.append(f"resource.partition.profile: {part.profile!r}: {preset.name} needs {est.total_gib:.1f} GiB, "
                        f"the slice has {usable:.1f} GiB usable; choose a larger profile")
    why = f"partition mig: one {part.profile} slice ({usable:.1f} GiB usable) for one pod; no tensor parallelism"
    return _replace(base, gpu_resource=f"nvidia.com/mig-{part.profile}", gpu_memory_available_gib=usable,
                    reasons=(why,) + base.reasons), problems
