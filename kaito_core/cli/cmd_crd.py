"""``kaito crd``: print the Workspace CustomResourceDefinition."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("crd", help="print the Workspace CRD (YAML)")
    p.set_defaults(func=run)


def run(args) -> int:
    from kaito_core.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0
