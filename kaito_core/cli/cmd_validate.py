"""``kaito validate FILE...``: every problem in every Workspace, exit 0 (valid) or 1.

The API's rules decide the exit code. A Workspace that passes them is then asked of the one
planner (:func:`kaito_core.reconcile.plan_workspace`, with the default provisioner, as admission
asks it), and what it refuses (a ConfigMap's TP larger than the node, adapters on a runtime that
cannot serve them, a model that does not fit) is printed as a warning that admission will
refuse it; ``--strict`` makes those errors too.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("validate", help="check Workspace YAML files (all errors, with field paths)")
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' for standard input)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    p.add_argument("--strict", action="store_true", help="treat warnings as errors")
    p.set_defaults(func=run)


def _report(label: str, problems: list, quiet: bool) -> int:
    """Print one object's verdict; 1 when it failed."""
    if problems:
        print(f"FAIL {label} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    if not quiet:
        print(f"ok   {label}")
    return 0


def _planner_problems(ws, registry, configmaps) -> list[str]:
    """What the planner refuses (as admission asks it: the operator's default provisioner);
    a provisioner's own failure is the operator's to report, not the Workspace's."""
    from kaito_core.cli.planning import pick_provisioner
    from kaito_core.reconcile import plan_workspace

    prov, _ = pick_provisioner(registry, None)
    if prov is None:
        return []
    p = plan_workspace(ws, registry=registry, provisioner=prov, configmaps=configmaps)
    reasons = {c.get("reason") for c in p.status.get("conditions") or []}
    return [] if "ProvisioningError" in reasons else list(p.errors)


def run(args) -> int:
    from kaito_core.api import (ConfigMap, DocumentError, Workspace, configmaps_by_name, load_documents,
                                validate_workspace)
    from kaito_core.api.validation import inference_config_problems, training_config_problems
    from kaito_core.plugins import get_registry

    registry = get_registry()
    failed = total = 0
    for path in args.files:
        try:
            docs = load_documents(path)
        except DocumentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        configmaps = configmaps_by_name(docs)
        found = False
        for doc in docs:
            if doc.error is not None:
                found, total, failed = True, total + 1, failed + 1
                print(f"FAIL {doc.error}")
                continue
            if isinstance(doc.obj, ConfigMap):
                data = doc.obj.data or {}
                checks = [check for key, check in (("inference_config.yaml", inference_config_problems),
                                                   ("training_config.yaml", training_config_problems))
                          if key in data]
                if checks:
                    found, total = True, total + 1
                    problems = [p for check in checks for p in check(doc.obj)]
                    failed += _report(f"{path}: ConfigMap {doc.obj.name!r}", problems, args.quiet)
                continue
            if not isinstance(doc.obj, Workspace):
                continue
            found, total = True, total + 1
            result = validate_workspace(doc.obj, registry=registry, configmaps=configmaps)
            planner = [] if result.errors else [f"admission will refuse it: {p}"
                                                for p in _planner_problems(doc.obj, registry, configmaps)]
            bad = result.errors + (planner + result.warnings if args.strict else [])
            failed += _report(f"{path}: Workspace {doc.obj.name!r}", bad, args.quiet)
            if not args.quiet and not args.strict:
                for warn in planner + result.warnings:
                    print(f"  warning: {warn}")
        if not found:
            print(f"FAIL {path}: no Workspace (or KAITO ConfigMap) in this file")
            failed += 1
    if not args.quiet:
        print(f"{total - min(failed, total)}/{total} object(s) valid")
    return 1 if failed else 0
