"""``python -m kaito_core.tuning``: the tuning Job's entry point, same flags as ``kaito tune``."""

from __future__ import annotations

import sys

from kaito_core.tuning.cli import main

if __name__ == "__main__":
    sys.exit(main())
