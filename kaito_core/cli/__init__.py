"""The ``kaito`` command.

Each sub-command lives in its own module ``kaito_core/cli/cmd_<name>.py`` exposing
``register(subparsers)``, which adds a parser and sets ``func`` (taking the parsed args and
returning an exit code). Modules are found by name and imported at start, so they must stay
light: heavy imports (torch, transformers, kopf) go inside the function that runs the command.
"""

from __future__ import annotations

import argparse
import pkgutil
import sys
from importlib import import_module

from kaito_core.errors import KaitoError

__all__ = ["main", "build_parser"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kaito-core")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kaito", description="Kubernetes AI Toolchain Operator: plan, serve, tune and run models.")
    parser.add_argument("--version", action="version", version=f"kaito {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import kaito_core.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name.startswith("cmd_"):
            import_module(f"kaito_core.cli.{mod.name}").register(sub)
    return parser


DEBUG_ENV = "KAITO_DEBUG"


def _safe_streams() -> None:
    """Values echoed back from a user's file may hold characters the terminal's encoding cannot
    show (a lone surrogate, say): print them escaped instead of dying in print()."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover - a closed or exotic stream
                pass


def main(argv: list[str] | None = None) -> int:
    _safe_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KaitoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug must reach the user as one line, not a traceback
        import os

        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: internal error in 'kaito {args.command}': {type(exc).__name__}: {exc}\n"
              f"  this is a bug in kaito or one of its plugins (`kaito plugins doctor`); run again with "
              f"{DEBUG_ENV}=1 for the traceback and report it", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
