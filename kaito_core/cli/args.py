"""Argument types for the ``kaito`` commands: a bad flag is refused by argparse, naming the flag,
the value and what it takes, before anything is planned or started."""

from __future__ import annotations

import argparse
import math
import re
from typing import Callable

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An integer from ``low`` to ``high`` (argparse names the flag in front of the message)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (expected {low} to {high})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range (expected {low} to {high})")
        return value
    parse.__name__ = "integer"
    return parse


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive, finite number of seconds")
    return value


def namespace(text: str) -> str:
    """A Kubernetes namespace name (DNS-1123 label)."""
    if len(text) > 63 or not DNS1123_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a namespace name (lowercase letters, digits and "
                                         "'-', at most 63 characters)")
    return text


PORT = int_range(0, 65535)
