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
    from kaito_core.cli.args import namespace

    p.add_argument("--namespace", "-n", default=None, type=namespace, help="namespace for Workspaces that name none")
    p.add_argument("--status", action="store_true", help="also print each Workspace with the status it would get")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from kaito_core.api import Workspace, configmaps_by_name, load_documents
    from kaito_core.cli.planning import pick_provisioner, warn_broken_plugins
    from kaito_core.plugins import get_registry

    registry = get_registry()
    warn_broken_plugins(registry)
    prov, err = pick_provisioner(registry, args.provisioner)
    if prov is None:
        print(f"error: {err}", file=sys.stderr)
        return 2
    docs = load_documents(args.file)
    configmaps = configmaps_by_name(docs)
    out: list[dict] = []
    failed = found = 0
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
        p = render_plan(ws, registry, prov, configmaps, args.observed)
        if p.errors:
            what = "is invalid" if p.status.get("conditions", [{}])[0].get("reason") == "InvalidWorkspace" \
                else "cannot be placed"
            print(f"error: {doc.source}: Workspace {ws.name!r} {what}:", file=sys.stderr)
            for e in p.errors:
                print(f"  - {e}", file=sys.stderr)
            failed += 1
            continue
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


def render_plan(ws, registry, prov, configmaps, observed: str):
    """The Plan ``kaito render`` prints: planned once, then again as if every node were Ready."""
    from kaito_core.reconcile import Observed, plan_workspace

    first = plan_workspace(ws, registry=registry, provisioner=prov, configmaps=configmaps)
    if first.errors or observed != "nodes-ready":
        return first
    ready = Observed.nodes_ready(first.node_requests, first.gpus_per_node)
    return plan_workspace(ws, registry=registry, provisioner=prov, configmaps=configmaps, observed=ready)
