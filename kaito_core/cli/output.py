"""Tables and JSON for the CLI (standard library only)."""

from __future__ import annotations

import json
import sys
from typing import Any, Sequence


MAX_CELL = 100


def cut(value: Any, limit: int = MAX_CELL) -> str:
    """``value`` as text, at most ``limit`` characters (a 10 MB name in a file must not become a
    10 MB table: the errors below the table name the field and its length)."""
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out=None) -> None:
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[cut(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def dump_json(obj: Any, out=None) -> None:
    out = out or sys.stdout
    json.dump(obj, out, indent=2, sort_keys=False, default=str)
    out.write("\n")


def add_output_flag(parser) -> None:
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="output format (default: table)")
