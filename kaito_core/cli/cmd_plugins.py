"""``kaito plugins list|doctor``: what loaded, from which distribution, and what is broken."""

from __future__ import annotations

import sys

from kaito_core.cli.output import add_output_flag, dump_json, table


def register(sub) -> None:
    p = sub.add_parser("plugins", help="list plugins and check them")
    psub = p.add_subparsers(dest="plugins_command", metavar="ACTION")
    lst = psub.add_parser("list", help="plugins with distribution, version and what each registers")
    add_output_flag(lst)
    lst.set_defaults(func=run_list)
    doc = psub.add_parser("doctor", help="exit non-zero when a plugin is broken, with the reason")
    doc.set_defaults(func=run_doctor)
    p.set_defaults(func=run_list, output="table")


def _summary(registered: dict[str, list[str]]) -> str:
    parts = []
    for kind, names in sorted(registered.items()):
        shown = ", ".join(names) if len(names) <= 4 else ", ".join(names[:3]) + f", ... ({len(names)})"
        parts.append(f"{kind}: {shown}")
    return "; ".join(parts) or "-"


def run_list(args) -> int:
    from kaito_core.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.registry  # noqa: B018 - runs the hooks, filling in what each plugin registered
    infos = sorted(pm.infos.values(), key=lambda i: (not i.builtin, i.name))
    if args.output == "json":
        dump_json([i.to_dict() for i in infos])
        return 0
    rows = []
    for i in infos:
        status = "blocked" if i.blocked else ("ERROR" if i.errors else "ok")
        rows.append([i.name, i.distribution or "-", i.version or "-", status, _summary(i.registered)])
    table(["PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "REGISTERS"], rows)
    for i in infos:
        for err in i.errors:
            print(f"error: plugin {i.name!r}: {err}", file=sys.stderr)
    return 0


def run_doctor(args) -> int:
    from kaito_core.plugins import DISABLE_ENV, get_plugin_manager

    pm = get_plugin_manager()
    reg = pm.registry
    broken = [i for i in pm.infos.values() if i.errors]
    for i in sorted(pm.infos.values(), key=lambda i: i.name):
        if i.blocked:
            print(f"blocked  {i.name} ({DISABLE_ENV})")
        elif i.errors:
            print(f"BROKEN   {i.name} ({i.distribution or i.module}):")
            for err in i.errors:
                print(f"           {err}")
        else:
            print(f"ok       {i.name} {i.version or ''}".rstrip())
    print(f"{len(reg.presets)} presets, {len(reg.provisioners)} provisioners, "
          f"{len(reg.instance_types)} instance types, {len(reg.runtimes)} runtimes")
    if broken:
        print(f"{len(broken)} broken plugin(s): fix or uninstall them, or block them with "
              f"{DISABLE_ENV}=name", file=sys.stderr)
        return 1
    return 0
