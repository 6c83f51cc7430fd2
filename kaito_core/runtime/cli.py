"""Command-line entry shared by ``kaito serve`` and ``python -m kaito_core.runtime``."""

from __future__ import annotations

import argparse
import sys

from kaito_core.errors import KaitoError
from kaito_core.runtime.options import build_parser, options_from_args


def run(args: argparse.Namespace) -> int:
    """Build options from parsed flags and serve until interrupted; errors become exit code 1."""
    from kaito_core.plugins import UnknownPreset

    try:
        opts = options_from_args(args)
        from kaito_core.runtime.server import resolve_preset, serve

        resolve_preset(opts.preset)  # fail before loading anything when the preset is unknown
        return serve(opts)
    except (KaitoError, UnknownPreset) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None, prog: str = "kaito serve") -> int:
    return run(build_parser(prog).parse_args(argv))
