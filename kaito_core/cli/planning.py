"""What the planning commands share: choosing the provisioner, planning a file's Workspaces.

Not a command (no ``cmd_`` prefix): ``kaito plan``, ``kaito render`` and ``kaito up --dry-run``
use it so that they ask the one planner the same question.
"""

from __future__ import annotations

import os
from typing import Any


def default_provisioner_name(registry: Any) -> str:
    """KAITO_PROVISIONER, else karpenter when installed (upstream's default), else byo."""
    env = os.environ.get("KAITO_PROVISIONER")
    if env:
        return env
    return "karpenter" if "karpenter" in registry.provisioners else "byo"


def warn_broken_plugins(registry: Any) -> None:
    """One stderr line per broken plugin: the plan still runs with the others, but a Workspace
    naming one of its presets would otherwise get only 'unknown preset'."""
    import sys

    from kaito_core.hints import broken_plugins

    infos = getattr(registry, "plugins", {}) or {}
    for name in broken_plugins(registry):
        first = infos[name].errors[0]
        print(f"warning: plugin {name!r} is broken and was skipped: {first[:300]} (`kaito plugins doctor`)",
              file=sys.stderr)


def pick_provisioner(registry: Any, name: str | None) -> tuple[Any, str]:
    """(the provisioner, "") or (None, an error naming the installed ones)."""
    name = name or default_provisioner_name(registry)
    prov = registry.provisioners.get(name)
    if prov is None:
        return None, (f"--provisioner {name!r} is not installed (installed: "
                      f"{', '.join(sorted(registry.provisioners)) or 'none'})")
    return prov, ""
