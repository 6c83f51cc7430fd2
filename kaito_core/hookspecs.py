"""The whole kaito plugin contract.

A plugin is a module (or object) with functions named like the hooks below, marked with
:data:`hookimpl`, and published under the ``kaito`` entry-point group::

    [project.entry-points.kaito]
    phi3 = "kaito_preset_phi3"

Every hook receives a ``register`` callback and returns nothing (the llm/tox pattern), so one
plugin can register any number of things and the core can tell which plugin registered what.
Hooks are called with keyword arguments only. A hook must not do I/O (no network, no reading
the cluster, no importing torch): it runs in the operator and in ``kaito presets list``.
"""

from __future__ import annotations

from typing import Callable

import pluggy

from kaito_core.types import InstanceType, ModelPreset, Provisioner, Runtime

PROJECT = "kaito"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def kaito_register_presets(register: Callable[[ModelPreset], None]) -> None:
    """Register the model presets this plugin provides.

    :param register: call ``register(preset)`` once per :class:`~kaito_core.types.ModelPreset`.
        It validates the preset and raises :class:`~kaito_core.errors.ContractError` (invalid
        field) or :class:`~kaito_core.errors.RegistrationError` (name or alias already taken by
        another plugin); the plugin manager records either against this plugin.

    Must not download anything or import heavy libraries: presets are data.
    """


@hookspec
def kaito_register_provisioners(register: Callable[[Provisioner], None]) -> None:
    """Register node provisioners (Karpenter, AKS agent pools, BYO nodes, this machine...).

    :param register: call ``register(provisioner)`` with an object that satisfies the
        :class:`~kaito_core.types.Provisioner` protocol; its ``name`` must be unique.

    The core builds the node requests; the provisioner turns them into its objects
    (``desired_objects``, exactly what ``ensure`` creates) and declares its catalog (``cloud``,
    ``cloud_of(settings)`` or ``instance_types``; ``creates_nodes = False`` for existing nodes).
    Must not contact a cloud or the API server while registering: construction is cheap and
    all I/O happens later in ``ensure``/``observe``/``release``.
    """


@hookspec
def kaito_register_instance_types(register: Callable[[InstanceType], None]) -> None:
    """Register GPU instance types (a cloud's catalog) that sizing may place models on.

    :param register: call ``register(instance_type)`` per
        :class:`~kaito_core.types.InstanceType`. The same name registered twice with the same
        facts is accepted (two provisioners may know one cloud); with different facts it is
        refused.
    """


@hookspec
def kaito_register_runtimes(register: Callable[[Runtime], None]) -> None:
    """Register inference backends the runtime can start.

    :param register: call ``register(runtime)`` per :class:`~kaito_core.types.Runtime`: its
        ``image`` and ``build_command(plan)`` make the cluster pod; ``local_entry`` or
        ``cluster_only`` say how ``kaito serve`` treats it.

    Must not import the backend's module (e.g. ``vllm``): whether it is installed is checked
    when the runtime is chosen, so listing runtimes stays fast.
    """
