import pytest

from kaito_provisioner_karpenter.testing import KarpenterHarness


@pytest.fixture
def karpenter_harness(kaito_kube):
    return KarpenterHarness(kaito_kube)
