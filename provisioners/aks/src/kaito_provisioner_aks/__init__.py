"""kaito-provisioner-aks: GPU nodes for Workspaces as AKS agent pools (upstream's gpu-provisioner).

Registers the ``aks`` provisioner and the Azure GPU VM sizes. Registration does no I/O and
imports no Azure SDK: the client and the credential are made on the first ``ensure``.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_provisioner_aks.provisioner import AKSProvisioner
from kaito_provisioner_aks.settings import AKSSettings

__all__ = ["AKSProvisioner", "AKSSettings"]


@hookimpl
def kaito_register_provisioners(register):
    register(AKSProvisioner())


@hookimpl
def kaito_register_instance_types(register):
    # The core's Azure catalog, the same objects (identical facts are accepted twice).
    from kaito_core.builtins.instance_types import AZURE

    for it in AZURE:
        register(it)
