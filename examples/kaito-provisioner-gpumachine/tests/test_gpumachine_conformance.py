"""A third-party provisioner runs kaito's conformance suite against itself.

``kaito_kube`` (an in-memory Kubernetes API) comes from kaito-core's pytest plugin, loaded
automatically once kaito-core is installed.
"""

import pytest

from kaito_core.testing.conformance import ProvisionerConformance, installed_provisioner
from kaito_core.types import ProvisionerContext


class GPUMachineHarness:
    """Plays the controller that turns GPUMachine objects into machines."""

    def __init__(self, kube):
        self.kube = kube

    def context(self):
        return ProvisionerContext(kube=self.kube)

    def backing(self, workspace):
        return self.kube.names(api_version="gpu.example.com/v1", kind="GPUMachine",
                               labels={"kaito.sh/workspace": workspace.metadata.name})

    def make_ready(self, request):
        self.kube.set_status(api_version="gpu.example.com/v1", kind="GPUMachine", name=request.name,
                             namespace=request.namespace, status={"phase": "Running", "nodeName": f"node-{request.name}"})

    def fail(self, request):
        self.kube.set_status(api_version="gpu.example.com/v1", kind="GPUMachine", name=request.name,
                             namespace=request.namespace,
                             status={"phase": "Failed", "failureReason": "NoCapacity",
                                     "failureMessage": "no free machine with 1x A100 in rack r12"})
        return "NoCapacity"


class TestGPUMachineConformance(ProvisionerConformance):
    entry_point = "gpumachine"

    @pytest.fixture
    def provisioner(self):
        return installed_provisioner("gpumachine")

    @pytest.fixture
    def harness(self, kaito_kube):
        return GPUMachineHarness(kaito_kube)

    @pytest.fixture
    def restarted_provisioner(self):
        return installed_provisioner("gpumachine")
