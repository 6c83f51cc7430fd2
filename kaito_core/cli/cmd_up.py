"""``kaito up FILE``: run a Workspace on this machine (inference: serve it; tuning: run the job).

The same YAML as on a cluster, the same sizing, the real runtime and tuning recipe, as
supervised local processes. See docs/local.md.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("up", help="run a Workspace on this machine (no cluster): serve a model or tune an adapter")
    p.add_argument("file", metavar="FILE", help="YAML with one Workspace (and its ConfigMap, if it names one)")
    p.add_argument("--weights", metavar="DIR",
                   help="model directory to use (default: the kaito.sh/use-local-weights annotation, the "
                        "Hugging Face cache, then a download when online)")
    from kaito_core.cli.args import PORT, seconds

    p.add_argument("--port", type=PORT, default=None, help="port to serve on (default: 5000, or the next free one; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--name", default=None, help="the Workspace to run when the file holds several")
    p.add_argument("-d", "--detach", action="store_true",
                   help="return once the process started; `kaito ps` shows when it is ready")
    p.add_argument("--timeout", type=seconds, default=600.0, metavar="SECONDS",
                   help="how long to wait for the model to load (default 600)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the Plan and the command that would run here (and how it differs from the pod); "
                        "start nothing")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="--dry-run output format (default: table)")
    p.set_defaults(func=run)


def run(args) -> int:
    from kaito_core.errors import KaitoError
    from kaito_core.local.up import UpOptions, dry_run, up

    opts = UpOptions(file=args.file, weights=args.weights, port=args.port, host=args.host, name=args.name,
                     detach=args.detach, timeout_s=args.timeout)
    from kaito_core.cli.planning import warn_broken_plugins
    from kaito_core.plugins import get_registry

    warn_broken_plugins(get_registry())  # as plan and render: a broken plugin is named, not just "unknown preset"
    try:
        if args.dry_run:
            return dry_run(opts, as_json=args.output == "json")
        up(opts)
    except KaitoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
