"""``kaito plan FILE [-o json]``: the Plan of each Workspace — where it runs, how, and why.

For every Workspace in the file, the one planner's answer (:func:`kaito_core.reconcile.plan_workspace`,
the same the operator and ``kaito render`` apply and ``kaito up`` realises): preset (a plugin's,
or a generic one read from an ``org/model`` id or a local model directory), runtime, instance
type, GPUs per node, node count, TP/PP, the node requests, the container command, and the
reasons. ConfigMaps in the same file named by ``inference.config`` / ``tuning.config`` are read.
Exit code 1 when any Workspace cannot be planned. Never imports torch.
"""

from __future__ import annotations

import sys
from typing import Any


def register(sub) -> None:
    from kaito_core.cli.args import int_range
    from kaito_core.cli.output import add_output_flag

    p = sub.add_parser("plan", help="plan Workspaces: instance type, GPUs, nodes, TP/PP, command, with reasons")
    p.add_argument("file", metavar="FILE", help="YAML with Workspaces (and their ConfigMaps); '-' for stdin")
    p.add_argument("--batch", type=int_range(1, 4096), default=1,
                   help="sequences served at once, for the KV-cache estimate (default 1)")
    p.add_argument("--cloud", default=None,
                   help="when a Workspace names no instanceType, choose among this cloud's types (azure, aws)")
    p.add_argument("--provisioner", default=None,
                   help="plan for this provisioner's catalog and node requests (default: byo, any catalog type)")
    add_output_flag(p)
    p.set_defaults(func=run)


def error_row(name: Any, error: str) -> dict[str, Any]:
    return {"name": name, "preset": None, "runtime": None, "instanceType": None, "gpusPerNode": 0,
            "nodeCount": 0, "gpuMemoryRequiredGiB": 0.0, "gpuMemoryAvailableGiB": 0.0, "diskGiB": 0,
            "reasons": [], "errors": [error]}


def run(args) -> int:
    from kaito_core.api import Workspace, configmaps_by_name, load_documents
    from kaito_core.cli.output import dump_json
    from kaito_core.cli.planning import pick_provisioner, warn_broken_plugins
    from kaito_core.plugins import get_registry
    from kaito_core.reconcile import plan_workspace

    registry = get_registry()
    warn_broken_plugins(registry)
    prov, err = pick_provisioner(registry, args.provisioner or "byo")
    clouds = sorted({it.cloud for it in registry.instance_types.values()})
    if prov is not None and args.cloud is not None and args.cloud not in clouds:
        err = f"--cloud {args.cloud[:80]!r} has no instance types installed (known: {', '.join(clouds) or 'none'})"
        prov = None
    if prov is None:
        print(f"error: {err}", file=sys.stderr)
        return 2
    docs = load_documents(args.file)
    configmaps = configmaps_by_name(docs)
    rows: list[dict[str, Any]] = []
    for doc in docs:
        if doc.error is not None:
            meta = doc.raw.get("metadata") if isinstance(doc.raw, dict) else None
            rows.append(error_row(meta.get("name") if isinstance(meta, dict) else None, str(doc.error)))
        elif isinstance(doc.obj, Workspace):
            p = plan_workspace(doc.obj, registry=registry, provisioner=prov, configmaps=configmaps,
                               batch=args.batch, cloud=args.cloud)
            rows.append(p.to_dict())
    if not rows:
        print(f"error: {args.file}: no Workspace in this file", file=sys.stderr)
        return 1
    if args.output == "json":
        dump_json(rows)
    else:
        print_table(rows)
    return 1 if any(r["errors"] for r in rows) else 0


def print_table(rows: list[dict[str, Any]]) -> None:
    from kaito_core.cli.output import table

    table(["NAME", "PRESET", "RUNTIME", "INSTANCE TYPE", "GPUS/NODE", "NODES", "TP/PP", "GPU MEM GiB (REQ/AVAIL)",
           "DISK GiB", "STATUS"],
          [[r["name"], r["preset"], r["runtime"], r["instanceType"], r["gpusPerNode"], r["nodeCount"],
            f"{r.get('tensorParallelSize', 1)}/{r.get('pipelineParallelSize', 1)}",
            f"{r['gpuMemoryRequiredGiB']:.1f} / {r['gpuMemoryAvailableGiB']:.1f}", r["diskGiB"],
            "cannot place" if r["errors"] else "ok"] for r in rows])
    from kaito_core.cli.output import cut

    for r in rows:
        print(f"\n{cut(r['name'])}:")
        for reason in r["reasons"]:
            print(f"  - {reason}")
        if r.get("command"):
            print(f"  command: {' '.join(r['command'])}")
        for err in r["errors"]:
            print(f"  ! {err}")
