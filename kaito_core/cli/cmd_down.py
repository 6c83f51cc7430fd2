"""``kaito down NAME``: stop a local Workspace and everything it started, and forget it."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("down", help="stop Workspaces `kaito up` runs (nothing is left running)")
    p.add_argument("names", nargs="*", metavar="NAME", help="Workspaces to stop (see `kaito ps`)")
    p.add_argument("-a", "--all", action="store_true", help="stop every local Workspace")
    p.set_defaults(func=run)


def run(args) -> int:
    from kaito_core.local.workspaces import all_workspaces, down, get

    if args.all:
        targets = all_workspaces()
    elif args.names:
        targets = [get(n) for n in args.names]
    else:
        print("error: name the Workspace(s) to stop, or --all (see `kaito ps`)", file=sys.stderr)
        return 2
    failed = 0
    for lw in targets:
        try:
            pids = down(lw)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        stopped = f"stopped pid(s) {', '.join(map(str, pids))}" if pids else "nothing was running"
        print(f"{lw.name}: {stopped}; state removed")
    if not targets:
        print("no Workspaces are running here")
    return 1 if failed else 0
