"""Pure parts of the AKS provisioner: names, pool bodies, settings, registration."""

import re

import pytest

from kaito_core.plugins import get_plugin_manager
from kaito_core.types import ProvisionerContext
from kaito_provisioner_aks import AKSProvisioner, AKSSettings, builders
from kaito_provisioner_aks.arm_errors import classify_error
from kaito_provisioner_aks.settings import SettingsError
from kaito_core.testing import make_node_requests


def test_pool_names_follow_aks_rules_and_are_deterministic(kaito_workspace, kaito_requirement):
    req = kaito_requirement("Standard_NC96ads_A100_v4", node_count=4, gpus_per_node=4)
    a = make_node_requests(workspace=kaito_workspace(uid="u-1"), requirement=req)
    b = make_node_requests(workspace=kaito_workspace(uid="u-1"), requirement=req)
    assert a == b and len({r.name for r in a}) == 4
    assert all(re.fullmatch(r"[a-z][a-z0-9]{0,11}", r.name) for r in a)
    assert all(r.gpu_count == 4 for r in a)


def test_desired_objects_show_the_arm_body(kaito_workspace, kaito_requirement):
    prov = AKSProvisioner({"AKS_OS_SKU": "azurelinux"})
    reqs = make_node_requests(workspace=kaito_workspace("phi", "ns1", match_labels={"apps": "phi"}),
                              requirement=kaito_requirement(node_count=1, disk_gib=4000))
    [obj] = prov.desired_objects(requests=reqs)
    assert obj["kind"] == "AgentPool" and obj["metadata"]["name"] == reqs[0].name
    props = obj["properties"]
    assert props["osSKU"] == "AzureLinux" and props["osDiskSizeGB"] == 2048  # AKS's maximum
    assert props["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert props["nodeLabels"]["kaito.sh/workspace"] == "phi" and props["nodeLabels"]["apps"] == "phi"


@pytest.mark.parametrize("instance_type, words", [(None, "resource.instanceType is empty"),
                                                  ("g5.xlarge", "not an Azure VM size")])
def test_non_azure_instance_types_are_refused(instance_type, words, kaito_workspace, kaito_requirement):
    reqs = make_node_requests(workspace=kaito_workspace(instance_type=instance_type),
                              requirement=kaito_requirement(instance_type))
    with pytest.raises(builders.PlanError, match=words):
        builders.desired_objects(reqs, AKSSettings.from_mapping({}))


def test_the_planner_places_aks_workspaces_on_azure_types_only(kaito_workspace):
    from kaito_core.plugins import get_registry
    from kaito_core.reconcile import plan_workspace

    prov = get_registry().provisioners["aks"]
    ws = kaito_workspace(instance_type=None, preset="phi-3-mini-4k-instruct")
    p = plan_workspace(ws, registry=get_registry(), provisioner=prov)
    assert not p.errors and p.instance_type.startswith("Standard_")
    aws = plan_workspace(kaito_workspace(instance_type="g5.xlarge"), registry=get_registry(), provisioner=prov)
    assert any("'g5.xlarge' is an aws instance type" in e for e in aws.errors), aws.errors


def test_settings_from_environment_with_operator_settings_on_top(monkeypatch):
    monkeypatch.setenv("ARM_SUBSCRIPTION_ID", "sub-env")
    monkeypatch.setenv("ARM_RESOURCE_GROUP", "rg-env")
    monkeypatch.setenv("AZURE_CLUSTER_NAME", "aks-env")
    monkeypatch.setenv("LOCATION", "westus3")
    s = AKSSettings.from_mapping({"ARM_RESOURCE_GROUP": "rg-op"})
    assert (s.subscription_id, s.resource_group, s.cluster_name, s.location) == ("sub-env", "rg-op", "aks-env",
                                                                                 "westus3")
    assert s.scope == "https://management.azure.com/.default"
    s.require_cluster()


@pytest.mark.parametrize("settings, words", [
    ({"AKS_OS_SKU": "Windows"}, "AKS_OS_SKU"),
    ({"ARM_ENDPOINT": "http://management.example"}, "ARM_ENDPOINT"),
    ({"AKS_POLL_INTERVAL_S": "soon"}, "AKS_POLL_INTERVAL_S"),
    ({"AKS_GC_INTERVAL_S": "-1"}, "AKS_GC_INTERVAL_S"),
])
def test_bad_settings_are_named(settings, words):
    with pytest.raises(SettingsError, match=words):
        AKSSettings.from_mapping(settings, environ={})


def test_missing_cluster_settings_are_named_on_first_use(kaito_workspace, kaito_requirement, monkeypatch):
    for key in ("ARM_SUBSCRIPTION_ID", "ARM_RESOURCE_GROUP", "AZURE_CLUSTER_NAME"):
        monkeypatch.delenv(key, raising=False)
    prov = AKSProvisioner()  # registration never fails for want of settings
    reqs = make_node_requests(workspace=kaito_workspace(), requirement=kaito_requirement())
    with pytest.raises(SettingsError, match="ARM_SUBSCRIPTION_ID, ARM_RESOURCE_GROUP, AZURE_CLUSTER_NAME"):
        prov.ensure(requests=reqs, ctx=ProvisionerContext())
    prov.release(workspace=kaito_workspace(), ctx=ProvisionerContext())  # a delete never blocks on it


@pytest.mark.parametrize("code, message, reason, failed", [
    ("QuotaExceeded", "quota", "QuotaExceeded", True),
    ("OperationNotAllowed", "exceeding approved standardNDSH100v5Family Cores quota", "QuotaExceeded", True),
    ("OperationNotAllowed", "there's an in progress create node pool operation", "OperationInProgress", False),
    ("TooManyRequests", "slow down", "Throttled", False),
    ("AuthorizationFailed", "The client does not have authorization", "AuthorizationFailed", True),
    ("OverconstrainedAllocationRequest", "Allocation failed", "InsufficientCapacity", True),
    ("ResourceGroupNotFound", "Resource group 'x' could not be found", "ClusterNotFound", True),
    ("InternalError", "something broke", "LaunchFailed", True),
])
def test_arm_error_classification(code, message, reason, failed):
    cause = classify_error(code, message)
    assert (cause.reason, cause.failed) == (reason, failed)
    assert message in cause.message


def test_registered_through_the_entry_point_with_azure_types_only():
    pm = get_plugin_manager(cached=False)
    assert pm.registry.plugin_of("provisioners", "aks") == "aks"
    assert pm.infos["aks"].distribution == "kaito-provisioner-aks" and not pm.infos["aks"].errors
    mine = pm.infos["aks"].registered["instance_types"]
    assert "Standard_ND96isr_H100_v5" in mine and not any(n.startswith(("g5.", "p4d", "p5")) for n in mine)


def test_registration_imports_no_azure_sdk():
    import subprocess
    import sys

    code = ("import sys; from kaito_core.plugins import get_registry; r = get_registry(); "
            "assert 'aks' in r.provisioners; "
            "print(sorted(m for m in sys.modules if m.startswith('azure')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
