"""``kaito tune``: run the LoRA/QLoRA recipe here, from a Workspace YAML or from flags."""

from __future__ import annotations

from kaito_core.tuning.cli import DESCRIPTION, add_arguments


def register(subparsers) -> None:
    p = subparsers.add_parser("tune", help="fine-tune a model (LoRA/QLoRA) and write or push the adapter",
                              description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from kaito_core.tuning.cli import run_from_args

    return run_from_args(args)
