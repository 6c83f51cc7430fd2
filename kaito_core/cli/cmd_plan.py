"""``kaito plan FILE [-o json]``: where each Workspace would run, and why.

For every Workspace in the file: the preset (a plugin's, or a generic one read from an
``org/model`` id or a local model directory), the runtime, the instance type (the Workspace's,
or the cheapest fitting one), GPUs per node, node count, GPU memory required vs usable, disk,
and the reasons. A ConfigMap in the same file named by ``inference.config`` supplies
``vllm.max-model-len``. Exit code 1 when any Workspace cannot be placed. Never imports torch.
"""

from __future__ import annotations

import sys
from typing import Any


def register(sub) -> None:
    from kaito_core.cli.output import add_output_flag

    p = sub.add_parser("plan", help="size Workspaces: instance type, GPUs, nodes, memory and disk, with reasons")
    p.add_argument("file", metavar="FILE", help="YAML with Workspaces (and their ConfigMaps); '-' for stdin")
    p.add_argument("--batch", type=int, default=1,
                   help="sequences served at once, for the KV-cache estimate (default 1)")
    p.add_argument("--cloud", default=None,
                   help="when a Workspace names no instanceType, choose among this cloud's types (azure, aws)")
    add_output_flag(p)
    p.set_defaults(func=run)


def _config_doc(cm: Any, key: str) -> dict:
    import yaml

    text = (cm.data or {}).get(key) if cm is not None else None
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _lookup_preset(registry: Any, name: str) -> tuple[Any, str, str]:
    """(preset or None, how it was found, error)."""
    from kaito_core.builtins import hf
    from kaito_core.plugins import UnknownPreset

    try:
        preset = registry.get_preset(name)
    except UnknownPreset as exc:
        if not hf.is_candidate(name):
            return None, "", f"unknown preset {name!r}: {exc.hint}"
        # The registry's generic fallback said no; ask the resolver itself for the reason.
        preset, why = hf.try_resolve(name)
        if preset is None:
            return None, "", f"preset {name!r} is not installed and could not be read as a model: {why}"
    plugin = registry.plugin_of("presets", preset.name)
    if plugin is None:
        return preset, f"generic preset for {name!r} ({preset.description})", ""
    return preset, f"preset {preset.name!r} from plugin {plugin!r}", ""


def plan_workspace(ws: Any, registry: Any, configmaps: dict, *, batch: int = 1, cloud: str | None = None
                   ) -> dict[str, Any]:
    """The plan of one parsed Workspace as the JSON object ``kaito plan -o json`` prints."""
    from kaito_core import sizing
    from kaito_core.api import validate_workspace

    res = ws.resource
    row: dict[str, Any] = {"name": ws.name, "preset": ws.preset_name, "runtime": None,
                           "instanceType": res.instance_type if res else None, "gpusPerNode": 0, "nodeCount": 0,
                           "gpuMemoryRequiredGiB": 0.0, "gpuMemoryAvailableGiB": 0.0, "diskGiB": 0,
                           "reasons": [], "errors": []}
    if ws.preset_name is None:
        row["reasons"].append("inference.template: the pod template sets its own resources; kaito does not size it")
        row["nodeCount"] = (res.count if res and res.count else 1)
        return row
    preset, found, error = _lookup_preset(registry, ws.preset_name)
    if preset is None:
        row["errors"].append(error)
        return row
    generic = found.startswith("generic")
    tuning = ws.tuning is not None
    method = (ws.tuning.method or "qlora") if tuning else None
    if tuning:
        runtime = "transformers"
        cm = configmaps.get(ws.tuning.config) if ws.tuning.config else None
        args = (_config_doc(cm, "training_config.yaml").get("training_config") or {}).get("TrainingArguments") or {}
        batch_used = int(args.get("per_device_train_batch_size") or 1)
        max_len = None
    else:
        runtime = ws.runtime_annotation or preset.default_runtime
        cm = configmaps.get(ws.inference.config) if ws.inference.config else None
        vllm_flags = _config_doc(cm, "inference_config.yaml").get("vllm") or {}
        max_len = vllm_flags.get("max-model-len") if runtime == "vllm" else None
        max_len = int(max_len) if isinstance(max_len, (int, float, str)) and str(max_len).isdigit() else None
        batch_used = batch
    row["runtime"] = runtime
    req = sizing.place(preset, registry.instance_types, instance_type=res.instance_type if res else None,
                       runtime=registry.runtimes.get(runtime, runtime), max_model_len=max_len, batch=batch_used,
                       method=method, cloud=cloud)
    row.update({k: v for k, v in req.to_dict().items() if k not in ("preset", "runtime")})
    row["preset"] = preset.name
    reasons = [found] + list(req.reasons)
    if tuning:
        reasons.insert(1, f"tuning with {method}" + ("" if ws.tuning.method else " (tuning.method not set)"))
    cfg_name = (ws.tuning.config if tuning else ws.inference.config)
    if cfg_name and cm is None:
        reasons.append(f"ConfigMap {cfg_name!r} is not in this file: its settings are not taken into account")
    if res and res.count and res.count > req.node_count:
        reasons.append(f"resource.count {res.count} is deprecated; sizing needs {req.node_count} node(s)")
    row["reasons"] = reasons
    errors = list(req.errors)
    result = validate_workspace(ws, registry=registry, configmaps=configmaps)
    for err in result.errors:
        if generic and err.path.endswith("preset.name"):
            continue  # the generic resolver found it (the webhook does the same)
        if err.path == "resource.instanceType" and req.instance_type in registry.instance_types:
            continue  # sizing decides the fit (it knows about multi-node placements)
        errors.append(f"invalid: {err}")
    row["errors"] = errors
    return row


def run(args) -> int:
    from kaito_core.api import ConfigMap, Workspace, configmaps_by_name, load_documents
    from kaito_core.cli.output import dump_json, table
    from kaito_core.plugins import get_registry

    registry = get_registry()
    docs = load_documents(args.file)
    configmaps = configmaps_by_name(docs)
    rows: list[dict[str, Any]] = []
    for doc in docs:
        if doc.error is not None:
            name = (doc.raw.get("metadata") or {}).get("name") if isinstance(doc.raw.get("metadata"), dict) else None
            rows.append({"name": name, "preset": None, "runtime": None, "instanceType": None, "gpusPerNode": 0,
                         "nodeCount": 0, "gpuMemoryRequiredGiB": 0.0, "gpuMemoryAvailableGiB": 0.0,
                         "diskGiB": 0, "reasons": [], "errors": [str(doc.error)]})
        elif isinstance(doc.obj, Workspace):
            rows.append(plan_workspace(doc.obj, registry, configmaps, batch=args.batch, cloud=args.cloud))
        elif not isinstance(doc.obj, ConfigMap):
            continue
    if not rows:
        print(f"error: {args.file}: no Workspace in this file", file=sys.stderr)
        return 1
    if args.output == "json":
        dump_json(rows)
    else:
        table(["NAME", "PRESET", "RUNTIME", "INSTANCE TYPE", "GPUS/NODE", "NODES", "GPU MEM GiB (REQ/AVAIL)",
               "DISK GiB", "STATUS"],
              [[r["name"], r["preset"], r["runtime"], r["instanceType"], r["gpusPerNode"], r["nodeCount"],
                f"{r['gpuMemoryRequiredGiB']:.1f} / {r['gpuMemoryAvailableGiB']:.1f}", r["diskGiB"],
                "cannot place" if r["errors"] else "ok"] for r in rows])
        for r in rows:
            print(f"\n{r['name']}:")
            for reason in r["reasons"]:
                print(f"  - {reason}")
            for err in r["errors"]:
                print(f"  ! {err}")
    return 1 if any(r["errors"] for r in rows) else 0
