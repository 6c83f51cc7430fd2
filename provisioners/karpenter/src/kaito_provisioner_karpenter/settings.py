"""Settings of the Karpenter provisioner, from the operator's settings or the environment.

Names follow upstream KAITO's deployment (``CLOUD_PROVIDER``) and add ``KARPENTER_*`` for what
upstream hard-codes (the node class) or does not have (NodePool mode). A value in the
operator's settings wins over the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from kaito_core.errors import KaitoError
from kaito_core.types import Settings

# cloud -> (NodeClass kind, NodeClass API group): AKS node auto-provisioning (karpenter-provider-azure)
# and EKS (karpenter-provider-aws).
NODE_CLASSES = {
    "azure": ("AKSNodeClass", "karpenter.azure.com"),
    "aws": ("EC2NodeClass", "karpenter.k8s.aws"),
}
MODES = ("nodeclaim", "nodepool")


class SettingsError(KaitoError, ValueError):
    """A setting with a value the provisioner cannot use."""

    def __init__(self, key: str, value: str, expected: str):
        super().__init__(f"karpenter provisioner: setting {key}={value!r} is invalid, expected {expected}")


@dataclass(frozen=True)
class KarpenterSettings:
    """What the NodeClaims / NodePools look like beyond what the Workspace says."""

    cloud: str = "azure"
    node_class_kind: str = "AKSNodeClass"
    node_class_group: str = "karpenter.azure.com"
    node_class_name: str = "default"
    mode: str = "nodeclaim"
    # Upstream labels its NodeClaims with a NodePool name no NodePool has ("kaito"), so
    # Karpenter's provisioner never scales that pool up on its own.
    nodepool_label: str = "kaito"
    static_nodepool: bool = False

    @classmethod
    def from_mapping(cls, settings: Mapping[str, str] | None = None,
                     environ: Mapping[str, str] | None = None) -> "KarpenterSettings":
        pick = Settings(settings, environ).get  # the operator's settings over the environment

        cloud = pick("CLOUD_PROVIDER", "azure").lower()
        if cloud not in NODE_CLASSES:
            raise SettingsError("CLOUD_PROVIDER", cloud, f"one of {sorted(NODE_CLASSES)}")
        default_kind, default_group = NODE_CLASSES[cloud]
        kind = pick("KARPENTER_NODECLASS_KIND", default_kind)
        known_groups = {k: g for k, g in NODE_CLASSES.values()}
        group = pick("KARPENTER_NODECLASS_GROUP", known_groups.get(kind, default_group))
        if "/" in group or not group:
            raise SettingsError("KARPENTER_NODECLASS_GROUP", group, "an API group without a version, "
                                "e.g. karpenter.azure.com")
        mode = pick("KARPENTER_MODE", "nodeclaim").lower()
        if mode not in MODES:
            raise SettingsError("KARPENTER_MODE", mode, f"one of {list(MODES)}")
        static = pick("KARPENTER_NODEPOOL_STATIC", "false").lower()
        if static not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError("KARPENTER_NODEPOOL_STATIC", static, "true or false")
        return cls(cloud=cloud, node_class_kind=kind, node_class_group=group,
                   node_class_name=pick("KARPENTER_NODECLASS_NAME", "default"), mode=mode,
                   nodepool_label=pick("KARPENTER_NODEPOOL_LABEL", "kaito"),
                   static_nodepool=static in ("true", "1", "yes"))

    @property
    def node_class_ref(self) -> dict[str, str]:
        return {"group": self.node_class_group, "kind": self.node_class_kind, "name": self.node_class_name}
