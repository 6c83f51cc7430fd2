"""``kaito ps``: the Workspaces running on this machine, with the operator's conditions."""

from __future__ import annotations


def register(sub) -> None:
    from kaito_core.cli.output import add_output_flag

    p = sub.add_parser("ps", help="list the Workspaces `kaito up` runs on this machine, with their conditions")
    p.add_argument("-w", "--wide", action="store_true", help="also show each condition's reason and message")
    add_output_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from kaito_core.cli.output import dump_json
    from kaito_core.local.ps import ps_lines
    from kaito_core.local.workspaces import all_workspaces

    if args.output == "json":
        dump_json([w.to_dict() for w in all_workspaces()])
        return 0
    for line in ps_lines(wide=args.wide):
        print(line)
    return 0
