"""The karpenter plugin passes kaito's provisioner conformance suite through its entry point."""

import pytest

from kaito_core.testing.conformance import ProvisionerConformance, installed_provisioner
from kaito_provisioner_karpenter.testing import KarpenterHarness


class TestKarpenterConformance(ProvisionerConformance):
    entry_point = "karpenter"

    @pytest.fixture
    def provisioner(self, monkeypatch):
        monkeypatch.delenv("KARPENTER_MODE", raising=False)
        return installed_provisioner("karpenter")

    @pytest.fixture
    def harness(self, kaito_kube):
        return KarpenterHarness(kaito_kube)

    @pytest.fixture
    def restarted_provisioner(self):
        return installed_provisioner("karpenter")


class TestKarpenterConformanceOnEKS(TestKarpenterConformance):
    instance_type = "g5.12xlarge"
    node_count = 3
    gpus_per_node = 4

    @pytest.fixture
    def harness(self, kaito_kube):
        return KarpenterHarness(kaito_kube, {"CLOUD_PROVIDER": "aws"})
