"""kaito-provisioner-karpenter: GPU nodes for Workspaces through Karpenter (AKS NAP and EKS).

Registers the ``karpenter`` provisioner and the Azure and AWS GPU instance types it can
launch. Registration does no I/O; the settings are read from the environment when the
provisioner is made and from the operator's settings on every ``ensure``.
"""

from __future__ import annotations

from kaito_core.hookspecs import hookimpl

from kaito_provisioner_karpenter.provisioner import KarpenterProvisioner
from kaito_provisioner_karpenter.settings import KarpenterSettings

__all__ = ["KarpenterProvisioner", "KarpenterSettings"]


@hookimpl
def kaito_register_provisioners(register):
    register(KarpenterProvisioner())


@hookimpl
def kaito_register_instance_types(register):
    # The same objects as the core's built-in catalog (identical facts are accepted twice):
    # Karpenter launches any of them, on AKS (NAP) or EKS.
    from kaito_core.builtins.instance_types import AWS, AZURE

    for it in AZURE + AWS:
        register(it)
