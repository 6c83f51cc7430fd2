"""``python -m kaito_core.runtime --model ...``: the same entry point as ``kaito serve``."""

from __future__ import annotations

import sys

from kaito_core.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m kaito_core.runtime"))
