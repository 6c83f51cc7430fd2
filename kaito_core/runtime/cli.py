"""Command-line entry shared by ``kaito serve`` and ``python -m kaito_core.runtime``.

``--runtime transformers`` and ``--runtime vllm`` are served by kaito's own server. Any other
name is looked up among the runtimes plugins register (``kaito_register_runtimes``): one with a
``local_entry`` (``"module:function"``) is started by calling that function with the options;
one marked ``cluster_only`` (or with no local entry) is refused with a message saying so.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable

from kaito_core.errors import KaitoError
from kaito_core.runtime.options import RUNTIMES, OptionsError, ServeOptions, build_parser, options_from_args


def plugin_runtime_entry(name: str) -> Callable[[ServeOptions], Any]:
    """The local entry point of plugin runtime ``name``, or an :class:`OptionsError` saying why
    it cannot run on this machine."""
    from kaito_core.plugins import get_registry

    registry = get_registry()
    runtime = registry.runtimes.get(name)
    if runtime is None:
        raise OptionsError(f"--runtime {name!r} is not a registered runtime; registered: {sorted(registry.runtimes)}. "
                           "A plugin adds runtimes through the kaito_register_runtimes hook "
                           "('kaito plugins' lists what loaded)")
    if runtime.cluster_only or not runtime.local_entry:
        why = "its plugin marks it cluster_only" if runtime.cluster_only else "its plugin gives no local_entry"
        raise OptionsError(f"runtime {name!r} runs in cluster pods only ({why}): deploy a Workspace that uses it, "
                           f"or serve on this machine with --runtime {' or --runtime '.join(RUNTIMES)}")
    module_name, _, func_name = runtime.local_entry.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise OptionsError(f"runtime {name!r}: its local entry {runtime.local_entry!r} cannot be loaded "
                           f"({type(exc).__name__}: {exc}); is the plugin fully installed (module "
                           f"{runtime.module!r})?") from None
    return func


def run(args: argparse.Namespace) -> int:
    """Build options from parsed flags and serve until interrupted; errors become exit code 1."""
    from kaito_core.plugins import UnknownPreset

    try:
        opts = options_from_args(args)
        from kaito_core.runtime.server import resolve_preset, serve

        resolve_preset(opts.preset)  # fail before loading anything when the preset is unknown
        if opts.runtime not in RUNTIMES:
            result = plugin_runtime_entry(opts.runtime)(opts)
            return int(result or 0)
        return serve(opts)
    except (KaitoError, UnknownPreset) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None, prog: str = "kaito serve") -> int:
    return run(build_parser(prog).parse_args(argv))
