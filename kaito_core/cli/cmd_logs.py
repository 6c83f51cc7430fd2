"""``kaito logs NAME``: the output of a local Workspace's runtime or tuning job."""

from __future__ import annotations

import sys
import time


def register(sub) -> None:
    p = sub.add_parser("logs", help="show the output of a Workspace `kaito up` runs")
    p.add_argument("name", metavar="NAME", help="the Workspace's name (see `kaito ps`)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new output until the process ends")
    p.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from kaito_core.local import processes
    from kaito_core.local.workspaces import get

    lw = get(args.name)
    try:
        with open(lw.log_path, "rb") as fh:
            data = fh.read()
            lines = data.decode("utf-8", "replace").splitlines(keepends=True)
            if args.tail is not None:
                lines = lines[-args.tail:] if args.tail > 0 else []
            sys.stdout.write("".join(lines))
            sys.stdout.flush()
            while args.follow:
                chunk = fh.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", "replace"))
                    sys.stdout.flush()
                elif processes.supervisor_pid(lw.wdir) is None:
                    break
                else:
                    time.sleep(0.25)
    except FileNotFoundError:
        print(f"{args.name}: no output yet", file=sys.stderr)
    return 0
