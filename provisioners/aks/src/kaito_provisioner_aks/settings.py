"""Settings of the AKS provisioner: the operator's settings, else the environment (as upstream).

Upstream's gpu-provisioner reads ``ARM_SUBSCRIPTION_ID``, ``ARM_RESOURCE_GROUP``,
``AZURE_CLUSTER_NAME`` and ``LOCATION`` from its environment and authenticates with workload
identity; we read the same names. The rest are ours (defaults in brackets):

``ARM_ENDPOINT`` [https://management.azure.com]  the Resource Manager endpoint (sovereign clouds)
``ARM_SCOPE``        [<endpoint>/.default]        the token scope for that endpoint
``ARM_CA_BUNDLE``    [system CAs]                 a CA bundle to verify the endpoint with
``ARM_RETRY_TOTAL``  [5]                          retries of throttled (429) / failed requests
``AKS_OS_SKU``       [Ubuntu]                     Ubuntu or AzureLinux
``AKS_POLL_INTERVAL_S`` [15]                      polling interval of long-running operations
                                                  when ARM gives no Retry-After
``AKS_RETRY_BACKOFF_S`` [300]                     wait before re-creating a pool that failed
``AKS_GC_INTERVAL_S``   [300]                     period of the orphan-pool collector (0: off)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from kaito_core.errors import KaitoError
from kaito_core.types import Settings

OS_SKUS = ("Ubuntu", "AzureLinux")
PUBLIC_ARM = "https://management.azure.com"


class SettingsError(KaitoError, ValueError):
    """A missing or unusable setting, named."""


@dataclass(frozen=True)
class AKSSettings:
    subscription_id: str = ""
    resource_group: str = ""
    cluster_name: str = ""
    location: str = ""
    arm_endpoint: str = PUBLIC_ARM
    arm_scope: str = ""
    ca_bundle: str = ""
    retry_total: int = 5
    os_sku: str = "Ubuntu"
    poll_interval_s: float = 15.0
    retry_backoff_s: float = 300.0
    gc_interval_s: float = 300.0

    @classmethod
    def from_mapping(cls, settings: Mapping[str, str] | None = None,
                     environ: Mapping[str, str] | None = None) -> "AKSSettings":
        pick = Settings(settings, environ).get  # the operator's settings over the environment

        def number(key: str, default: float, minimum: float = 0.0) -> float:
            raw = pick(key, str(default))
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"aks provisioner: setting {key}={raw!r} is not a number") from None
            if value < minimum:
                raise SettingsError(f"aks provisioner: setting {key}={raw!r} must be >= {minimum:g}")
            return value

        os_sku = pick("AKS_OS_SKU", "Ubuntu")
        match = {s.lower(): s for s in OS_SKUS}.get(os_sku.lower())
        if match is None:
            raise SettingsError(f"aks provisioner: setting AKS_OS_SKU={os_sku!r} is invalid, expected one of "
                                f"{list(OS_SKUS)}")
        endpoint = pick("ARM_ENDPOINT", PUBLIC_ARM).rstrip("/")
        if not endpoint.startswith("https://"):
            raise SettingsError(f"aks provisioner: setting ARM_ENDPOINT={endpoint!r} must be an https:// URL "
                                "(tokens are never sent in clear text)")
        return cls(subscription_id=pick("ARM_SUBSCRIPTION_ID"), resource_group=pick("ARM_RESOURCE_GROUP"),
                   cluster_name=pick("AZURE_CLUSTER_NAME"), location=pick("LOCATION"), arm_endpoint=endpoint,
                   arm_scope=pick("ARM_SCOPE"), ca_bundle=pick("ARM_CA_BUNDLE"),
                   retry_total=int(number("ARM_RETRY_TOTAL", 5)), os_sku=match,
                   poll_interval_s=number("AKS_POLL_INTERVAL_S", 15.0),
                   retry_backoff_s=number("AKS_RETRY_BACKOFF_S", 300.0),
                   gc_interval_s=number("AKS_GC_INTERVAL_S", 300.0))

    def require_cluster(self) -> None:
        """The settings ARM calls need; checked when the first call is made, not at registration."""
        missing = [key for key, value in (("ARM_SUBSCRIPTION_ID", self.subscription_id),
                                          ("ARM_RESOURCE_GROUP", self.resource_group),
                                          ("AZURE_CLUSTER_NAME", self.cluster_name)) if not value]
        if missing:
            raise SettingsError(f"aks provisioner: {', '.join(missing)} not set; set them in the operator's "
                                "environment (Helm values) to the AKS cluster the GPU pools belong to")

    @property
    def scope(self) -> str:
        return self.arm_scope or f"{self.arm_endpoint}/.default"

    @property
    def client_key(self) -> tuple:
        return (self.subscription_id, self.arm_endpoint, self.scope, self.ca_bundle, self.retry_total,
                self.poll_interval_s)
