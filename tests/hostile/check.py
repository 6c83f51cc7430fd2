"""Running one hostile file through every entry point, and what each answer must look like."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from kaito_core.cli import main
from kaito_core.operator import admission

from tests.hostile.corpus import Case, names_path

SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# What a crash looks like in any output: Python's traceback header, or the CLI's last-resort
# message for an exception nobody turned into a field error.
CRASH_MARKS = ("Traceback (most recent call last)", "internal error in 'kaito")


def surrogate_line(path: Path) -> int | None:
    """The 1-based line of ``path`` where a surrogate escape is written, if any."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if SURROGATE_ESCAPE.search(line):
            return number
    return None


def write(tmp: Path, docs: list[dict]) -> Path:
    f = tmp / "hostile.yaml"
    # allow_unicode=False: control characters and surrogates are written as YAML escapes
    try:  # libyaml writes 10 MB values in milliseconds, but cannot write a lone surrogate
        text = yaml.dump_all(docs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False,
                             allow_unicode=False)
    except UnicodeEncodeError:
        text = yaml.dump_all(docs, Dumper=yaml.SafeDumper, sort_keys=False, allow_unicode=False)
    f.write_text(text, encoding="utf-8")
    return f


def cli(*argv: str) -> tuple[int, str]:
    """``kaito <argv>`` in this process: (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue()


def review(body: dict, registry: Any) -> tuple[bool, str]:
    """The admission webhook's verdict on CREATE: (refused, message). An exception other than
    a Rejection propagates: the test sees it as the crash it is."""
    logging.disable(logging.WARNING)
    try:
        admission.review(body, old=None, registry=registry)
    except admission.Rejection as exc:
        return True, exc.message
    finally:
        logging.disable(logging.NOTSET)
    return False, ""


def problems(case: Case, rc: int, text: str, what: str, yaml_line: int | None = None) -> list[str]:
    """Why ``text`` (with exit code ``rc``) is not an acceptable answer to ``case``.

    :param yaml_line: the line of the file holding a lone surrogate: libyaml refuses its escape
        (``\\ud800``) while reading, naming that line instead of the field.
    """
    out = []
    if rc == 0:
        out.append(f"{what}: accepted (exit 0)")
    for mark in CRASH_MARKS:
        if mark in text:
            out.append(f"{what}: crashed: {text[-400:]}")
    if yaml_line is not None and f"not valid YAML at line {yaml_line}," in text:
        return out  # the YAML reader itself refused the character, at its line
    if not names_path(text, case.path):
        out.append(f"{what}: does not name {case.path}: {text[-600:]}")
    if case.show_value and not _shows(text, case.value):
        out.append(f"{what}: does not show the value {case.value!r}: {text[-600:]}")
    if len(text) > 40_000:
        out.append(f"{what}: {len(text)} characters of output (the value must be cut short)")
    return out


def _shows(text: str, value: Any) -> bool:
    """The value appears as the message shows values (repr, possibly cut to 77 characters)."""
    shown = repr(value)
    return shown[:60] in text or str(value)[:60] in text
