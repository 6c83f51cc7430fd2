import sys
from pathlib import Path

import pytest

# pytest's importlib mode does not put test directories on sys.path; the fake ARM server is a
# helper module of these tests, not part of the distribution.
sys.path.insert(0, str(Path(__file__).parent))

from aks_fake_arm import FakeARM, StaticToken, make_tls_cert
from kaito_core.types import ProvisionerContext


@pytest.fixture(scope="session")
def arm_cert(tmp_path_factory):
    return make_tls_cert(tmp_path_factory.mktemp("arm-tls"))


@pytest.fixture
def arm(arm_cert):
    server = FakeARM().serve(*arm_cert)
    yield server
    with server.lock:  # let the SDK's background pollers finish before the server goes
        server.hold_creates = False
        for op in server.operations.values():
            if op.status == "InProgress":
                server._finish(op)
    server.stop()


@pytest.fixture
def arm_settings(arm, arm_cert):
    return {"ARM_ENDPOINT": arm.url, "ARM_CA_BUNDLE": str(arm_cert[0]), "ARM_SUBSCRIPTION_ID": arm.subscription,
            "ARM_RESOURCE_GROUP": arm.resource_group, "AZURE_CLUSTER_NAME": arm.cluster, "LOCATION": arm.location,
            "ARM_RETRY_TOTAL": "3", "AKS_POLL_INTERVAL_S": "0.05", "AKS_GC_INTERVAL_S": "0"}


@pytest.fixture
def token(arm):
    return StaticToken(arm.token)


class AKSHarness:
    """The conformance suite's view of ARM: pools live in the fake server."""

    def __init__(self, arm, settings, kube):
        self.arm, self.settings, self.kube = arm, settings, kube

    def context(self):
        return ProvisionerContext(kube=self.kube, settings=self.settings)

    def backing(self, workspace):
        with self.arm.lock:
            return sorted(n for n, p in self.arm.pools.items()
                          if p["properties"]["provisioningState"] != "Deleting"
                          and p["properties"].get("tags", {}).get("kaito-workspace") == workspace.metadata.name
                          and p["properties"]["tags"].get("kaito-workspace-namespace") == workspace.metadata.namespace)

    def make_ready(self, request):
        self.arm.complete(request.name)

    def fail(self, request):
        self.arm.fail(request.name, "QuotaExceeded",
                      "Operation could not be completed as it results in exceeding approved "
                      "standardNCADSA100v4Family Cores quota. Current Limit: 24, Additional Required: 24.")
        return "QuotaExceeded"


@pytest.fixture
def aks_harness(arm, arm_settings, kaito_kube):
    arm.hold_creates = True
    return AKSHarness(arm, arm_settings, kaito_kube)
