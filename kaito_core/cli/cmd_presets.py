"""``kaito presets list|show NAME``: the models the installed plugins provide."""

from __future__ import annotations

from kaito_core.cli.output import add_output_flag, dump_json, table


def register(sub) -> None:
    p = sub.add_parser("presets", help="list the model presets, or show one")
    psub = p.add_subparsers(dest="presets_command", metavar="ACTION")
    lst = psub.add_parser("list", help="every preset with its size and plugin")
    add_output_flag(lst)
    lst.add_argument("--family", help="only this family (e.g. phi3)")
    lst.set_defaults(func=run_list)
    show = psub.add_parser("show", help="everything about one preset")
    show.add_argument("name", help="preset name or alias (e.g. the Hugging Face id)")
    add_output_flag(show)
    show.set_defaults(func=run_show)
    p.set_defaults(func=run_list, output="table", family=None)


def run_list(args) -> int:
    from kaito_core.plugins import get_registry

    reg = get_registry()
    presets = sorted(reg.presets.values(), key=lambda p: (p.family, p.name))
    if args.family:
        presets = [p for p in presets if p.family == args.family]
    if args.output == "json":
        dump_json([{**p.to_dict(), "plugin": reg.plugin_of("presets", p.name)} for p in presets])
        return 0
    rows = []
    for p in presets:
        notes = ", ".join(x for x in ("gated" if p.gated else "", "deprecated" if p.deprecated else "") if x)
        rows.append([p.name, p.family, f"{p.parameters / 1e9:.1f}B", f"{p.weight_gib:.1f}",
                     p.context_length, ",".join(sorted(p.runtimes)),
                     ",".join(p.tuning.methods) if p.tuning else "-", reg.plugin_of("presets", p.name), notes])
    table(["NAME", "FAMILY", "PARAMS", "WEIGHTS_GIB", "CONTEXT", "RUNTIMES", "TUNING", "PLUGIN", "NOTES"], rows)
    if not presets:
        print("no presets installed: install a preset plugin from the kaito repository, e.g. "
              "pip install ./plugins/phi3 (or `make wheels` and install the wheels); none is published on PyPI")
    return 0


def run_show(args) -> int:
    from kaito_core.plugins import get_registry

    reg = get_registry()
    preset = reg.get_preset(args.name)  # UnknownPreset -> "error: ..." with the install hint
    data = {**preset.to_dict(), "plugin": reg.plugin_of("presets", preset.name)}
    if args.output == "json":
        dump_json(data)
        return 0
    data.pop("chat_template", None)
    width = max(len(k) for k in data)
    for key, value in data.items():
        print(f"{key.ljust(width)}  {value}")
    return 0
