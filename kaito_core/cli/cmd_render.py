"""``kaito render FILE``: the objects the operator would create, as multi-document YAML.

Like ``helm template``: the same pure reconciler the operator runs, no cluster needed. Each
Workspace is planned with the provisioner named by ``--provisioner`` (default: the operator's),
against the observed state named by ``--observed``: ``none`` (a new Workspace: node requests,
ConfigMap and Services; the workload waits for nodes) or ``nodes-ready`` (every node request
became a Ready GPU node: the StatefulSet/Job too).
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("render", help="print the objects the operator would create for each Workspace (YAML)")
    p.add_argument("file", metavar="FILE", help="YAML file with Workspaces (and their ConfigMaps); '-' for stdin")
    p.add_argument("--provisioner", default=None,
                   help="provisioner plugin (default: KAITO_PROVISIONER, else karpenter when installed, else byo)")
    p.add_argument("--observed", choices=("none", "nodes-ready"), default="nodes-ready",
                   help="assumed cluster state (default: nodes-ready)")
    p.add_argument("--namespace", "-n", default=None, help="namespace for Workspaces that name none")
    p.add_argument("--status", action="store_true", help="also print each Workspace with the status it would get")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    import yaml

    from kaito_core.api import Workspace, configmaps_by_name, load_documents, validate_workspace
    from kaito_core.operator.apply import default_provisioner
    from kaito_core.plugins import get_registry
    from kaito_core.reconcile import Observed, plan
    from kaito_core.reconcile.inputs import resolve

    registry = get_registry()
    name = args.provisioner or os.environ.get("KAITO_PROVISIONER") or default_provisioner(registry)
    prov = registry.provisioners.get(name)
    if prov is None:
        print(f"error: --provisioner {name!r} is not installed (installed: "
              f"{', '.join(sorted(registry.provisioners)) or 'none'})", file=sys.stderr)
        return 2
    docs = load_documents(args.file)
    configmaps = configmaps_by_name(docs)
    out: list[dict] = []
    failed = 0
    found = 0
    for doc in docs:
        if doc.error is not None:
            print(f"error: {doc.error}", file=sys.stderr)
            failed += 1
            continue
        if not isinstance(doc.obj, Workspace):
            continue
        found += 1
        ws = doc.obj
        if args.namespace and not ws.metadata.namespace:
            ws.metadata.namespace = args.namespace
        result = validate_workspace(ws, registry=registry, configmaps=configmaps)
        if result.errors:
            print(f"error: {doc.source}: Workspace {ws.name!r} is invalid:", file=sys.stderr)
            for err in result.errors:
                print(f"  - {err}", file=sys.stderr)
            failed += 1
            continue
        cm = configmaps.get(ws.inference.config) if ws.inference is not None and ws.inference.config else None
        inputs = resolve(ws, registry, config=cm.to_k8s() if cm is not None else None)
        first = plan(ws, inputs.preset, inputs.requirement, prov)
        if first.errors:
            print(f"error: {doc.source}: Workspace {ws.name!r} cannot be placed: {'; '.join(first.errors)}",
                  file=sys.stderr)
            failed += 1
            continue
        observed = None
        if args.observed == "nodes-ready":
            gpus = inputs.requirement.gpus_per_node if inputs.requirement is not None else 0
            observed = Observed.nodes_ready(first.node_requests, gpus)
        p = plan(ws, inputs.preset, inputs.requirement, prov, observed) if observed is not None else first
        if args.status:
            shown = ws.to_k8s()
            shown["status"] = p.status
            out.append(shown)
        out += p.applied_objects()
    text = yaml.safe_dump_all(out, sort_keys=False, default_flow_style=False) if out else ""
    sys.stdout.write(text)
    if not found and not failed:
        print(f"error: {args.file}: no Workspace in this file", file=sys.stderr)
        return 1
    return 1 if failed else 0
