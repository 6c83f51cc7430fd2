"""The aks plugin passes kaito's provisioner conformance suite, through its entry point, against
the real azure-mgmt-containerservice client talking HTTPS to a fake ARM."""

import pytest

from kaito_core.testing.conformance import ProvisionerConformance, installed_provisioner


class TestAKSConformance(ProvisionerConformance):
    entry_point = "aks"
    instance_type = "Standard_NC24ads_A100_v4"

    @pytest.fixture
    def provisioner(self, token):
        return installed_provisioner("aks").configured(credential=token)

    @pytest.fixture
    def harness(self, aks_harness):
        return aks_harness

    @pytest.fixture
    def restarted_provisioner(self, token):
        return installed_provisioner("aks").configured(credential=token)
