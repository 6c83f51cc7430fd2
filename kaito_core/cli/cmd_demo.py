"""``kaito demo``: serve, ask, tune, serve base + adapter, clean up; offline, on this machine."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole flow offline on a tiny random-weight phi-3 model (about a minute)")
    p.add_argument("--workdir", metavar="DIR", default=None,
                   help="where the model, adapter and registry go (default: ~/.kaito/demo, or $KAITO_HOME/demo)")
    p.add_argument("--no-registry", action="store_true",
                   help="write the adapter to a directory even when docker-registry is installed")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from kaito_core.errors import KaitoError
    from kaito_core.local.demo import Demo, default_workdir

    work = Path(args.workdir).expanduser() if args.workdir else default_workdir()
    try:
        return Demo(work=work, use_registry=not args.no_registry).run()
    except KaitoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
