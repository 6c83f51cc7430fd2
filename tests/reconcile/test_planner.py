"""The one planner against the bugs issue 12 lists: counts, templates, catalogs, ConfigMaps,
memory that fits, provisioner exceptions as conditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_core.api import Workspace, configmaps_by_name, load_documents
from kaito_core.reconcile import Observed, plan_workspace

REF = Path(__file__).resolve().parents[1] / "data" / "reference" / "kaito-examples"


def load(path):
    docs = load_documents(str(path))
    return next(d.obj for d in docs if isinstance(d.obj, Workspace)), configmaps_by_name(docs)


def ws_file(tmp_path, body):
    f = tmp_path / "ws.yaml"
    f.write_text(body)
    return load(f)


PHI = """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: phi, namespace: default}
resource:
%s  labelSelector:
    matchLabels: {apps: phi, team: blue}
inference:
  preset: {name: phi-3-mini-4k-instruct}
"""


@pytest.mark.parametrize("provisioner", ["karpenter", "aks", "byo"])
@pytest.mark.parametrize("count", [2, 3])
def test_resource_count_of_a_sized_preset_is_upstreams_estimate_everywhere(tmp_path, registry, provisioner, count):
    """Upstream's node estimator replaces resource.count (deprecated in v1beta1) with the nodes the
    model needs when the instance type's GPUs are known: one A100 for phi-3-mini, on every path."""
    ws, cms = ws_file(tmp_path, PHI % f"  count: {count}\n  instanceType: Standard_NC24ads_A100_v4\n")
    prov = registry.provisioners[provisioner]
    first = plan_workspace(ws, registry=registry, provisioner=prov, configmaps=cms)
    assert first.errors == [] and first.node_count == 1 and len(first.node_requests) == 1
    assert len(first.node_objects) == (0 if provisioner == "byo" else 1)
    assert first.status["targetNodeCount"] == 1
    assert any(r.startswith(f"resource.count {count}: not used") for r in first.reasons), first.reasons
    p = plan_workspace(ws, registry=registry, provisioner=prov, configmaps=cms,
                       observed=Observed.nodes_ready(first.node_requests, first.gpus_per_node))
    assert p.replicas == 1
    for req in first.node_requests:
        assert {"apps": "phi", "team": "blue", "kaito.sh/workspace": "phi"}.items() <= dict(req.labels).items()


@pytest.mark.parametrize("count", [2, 3])
def test_resource_count_means_nodes_for_a_template(registry, count):
    ws, cms = load(REF / "v0.12.0" / "custom-model-integration_custom-model-deployment.yaml")
    ws.resource.count = count
    p = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["karpenter"], configmaps=cms)
    assert p.errors == [] and p.node_count == count == len(p.node_requests) == len(p.node_objects)
    assert not any("resource.count" in r and "not used" in r for r in p.reasons)


@pytest.mark.parametrize("provisioner", ["karpenter", "aks", "byo"])
def test_upstream_custom_model_template_plans_without_a_crash(registry, provisioner):
    ws, cms = load(REF / "v0.12.0" / "custom-model-integration_custom-model-deployment.yaml")
    p = plan_workspace(ws, registry=registry, provisioner=registry.provisioners[provisioner], configmaps=cms)
    assert p.errors == [], p.errors
    assert p.node_count == (ws.resource.count or 1) == len(p.node_requests)
    assert p.instance_type == ws.resource.instance_type and p.gpus_per_node >= 1


def test_template_without_instance_type_on_a_creating_provisioner_is_a_clear_error(tmp_path, registry):
    ws, _ = load(REF / "v0.12.0" / "custom-model-integration_custom-model-deployment.yaml")
    ws.resource.instance_type = None
    p = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["karpenter"])
    assert any(e.startswith("resource.instanceType") and "'karpenter'" in e for e in p.errors), p.errors
    assert plan_workspace(ws, registry=registry, provisioner=registry.provisioners["byo"]).errors == []


def test_karpenter_on_azure_never_gets_an_aws_type_and_memory_fits(tmp_path, registry):
    ws, cms = ws_file(tmp_path, PHI % "")
    p = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["karpenter"], configmaps=cms)
    assert p.errors == [] and registry.instance_types[p.instance_type].cloud == "azure"
    claim = p.node_objects[0]
    assert claim["spec"]["requirements"][1]["values"] == [p.instance_type]
    small, _ = ws_file(tmp_path, PHI % "  instanceType: g5.xlarge\n")
    aws = plan_workspace(small, registry=registry, provisioner=registry.provisioners["karpenter"],
                         settings={"CLOUD_PROVIDER": "aws"})
    assert aws.errors == [] and aws.instance_type == "g5.xlarge"
    assert aws.memory_gib <= 0.75 * registry.instance_types["g5.xlarge"].memory_gib
    wrong = plan_workspace(small, registry=registry, provisioner=registry.provisioners["karpenter"])
    assert any("'g5.xlarge' is an aws instance type" in e for e in wrong.errors), wrong.errors


def test_qlora_batch_8_from_the_configmap_is_sized_everywhere(tmp_path, registry):
    body = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tcfg}\ndata:\n  training_config.yaml: |\n"
            "    training_config:\n      TrainingArguments:\n        per_device_train_batch_size: 8\n---\n"
            "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata: {name: tune, namespace: default}\n"
            "resource:\n  instanceType: Standard_NV36ads_A10_v5\n  labelSelector:\n    matchLabels: {apps: t}\n"
            "tuning:\n  preset: {name: phi-3-mini-4k-instruct}\n  method: qlora\n  config: tcfg\n"
            "  input: {urls: ['https://example.com/d.jsonl']}\n  output: {volumeSource: {emptyDir: {}}}\n")
    ws, cms = ws_file(tmp_path, body)
    with_cm = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["byo"], configmaps=cms)
    without = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["byo"])
    assert with_cm.requirement.estimate.batch == 8 and without.requirement.estimate.batch == 1
    assert with_cm.requirement.gpu_memory_required_gib > without.requirement.gpu_memory_required_gib
    assert any("not given" in r for r in without.reasons)


class Exploding:
    name = "exploding"
    creates_nodes = True
    cloud = "azure"

    def desired_objects(self, *, requests):
        raise AttributeError("'NoneType' object has no attribute 'node_count'")


def test_a_provisioner_exception_is_a_condition_and_an_event(tmp_path, registry):
    ws, cms = ws_file(tmp_path, PHI % "  instanceType: Standard_NC24ads_A100_v4\n")
    p = plan_workspace(ws, registry=registry, provisioner=Exploding(), configmaps=cms)
    cond = p.status["conditions"][0]
    assert cond["status"] == "False" and cond["reason"] == "ProvisioningError"
    assert "AttributeError" in cond["message"] and "'exploding'" in cond["message"]
    assert any(e.reason == "ProvisioningError" for e in p.events)
