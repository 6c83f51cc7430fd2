"""Every object the reconciler generates passes kubernetes-validate --strict (k8s 1.30 and
1.35); Workspaces pass our CRD's schema; NodeClaims pass Karpenter's CRD."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kaito_core.builtins.byo import PROVISIONER as BYO
from kaito_core.reconcile import Observed, plan
from kaito_core.reconcile.inputs import resolve
from tests.reconcile.conftest import example_workspaces
from tests.reconcile.test_plan import PHI, _ws

K8S_VERSIONS = ("1.30", "1.35")
REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"

EXTRA = {
    "lb-adapters-volume": {**copy.deepcopy(PHI), "metadata": {"name": "extra", "annotations": {
        "kaito.sh/enablelb": "True", "kaito.sh/runtime": "transformers"}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct", "presetOptions": {
            "modelAccessSecret": "hf", "imagePullSecrets": ["p1"]}},
            "adapters": [{"source": {"name": "a", "image": "example.com/a:1"}, "strength": "0.3"},
                         {"source": {"name": "b", "volumeSource": {"persistentVolumeClaim": {"claimName": "b"}}}}]}},
    "local-weights": {**copy.deepcopy(PHI), "metadata": {"name": "local", "annotations": {
        "kaito.sh/use-local-weights": "/models/phi"}}},
    "tuning-volumes": {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tv"},
                       "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                                    "labelSelector": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
                       "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                                  "input": {"volumeSource": {"persistentVolumeClaim": {"claimName": "data"}}},
                                  "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "out"}}}}},
    "tuning-image-input": {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ti"},
                           "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                                        "labelSelector": {"matchLabels": {"a": "b"}}},
                           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                                      "config": "my-recipe",
                                      "input": {"image": "example.com/data:1", "imagePullSecrets": ["d"]},
                                      "output": {"image": "example.com/out:1", "imagePushSecret": "push"}}},
    "template": {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tpl"},
                 "resource": {"count": 2, "instanceType": "Standard_NC24ads_A100_v4",
                              "labelSelector": {"matchLabels": {"a": "b"}}},
                 "inference": {"template": {"spec": {"containers": [{"name": "c", "image": "example.com/c:1"}]}}}},
}


def _all_plans(registry):
    cases = [(p.id, p.values[0].to_k8s()) for p in example_workspaces()]
    cases += list(EXTRA.items())
    for name, raw in cases:
        ws = _ws(raw)
        inputs = resolve(ws, registry)
        if inputs.problems:
            continue  # a preset from a plugin that is not installed here
        first = plan(ws, inputs.preset, inputs.requirement, BYO)
        gpus = inputs.requirement.gpus_per_node if inputs.requirement else 0
        full = plan(ws, inputs.preset, inputs.requirement, BYO, Observed.nodes_ready(first.node_requests, gpus))
        yield name, ws, inputs, full


def test_every_generated_object_is_valid_kubernetes(registry):
    seen = set()
    for name, _ws_, _inputs, p in _all_plans(registry):
        assert p.workload is not None, name
        for obj in p.all_objects():
            seen.add(obj["kind"])
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(copy.deepcopy(obj), version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} invalid for k8s {version}: "
                                f"{exc.message} at {list(exc.path)}")
    assert {"ConfigMap", "Service", "StatefulSet", "Job"} <= seen


def test_strict_validation_catches_a_bad_object(registry):
    _, _, _, p = next(iter(_all_plans(registry)))
    bad = copy.deepcopy(p.workload)
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.35", strict=True)


def test_workspace_crd_schema_accepts_every_example(registry):
    from kaito_core.api.crd import crd

    doc = crd()
    for name, ws, _inputs, _p in _all_plans(registry):
        version = ws.api_version.split("/")[1]
        schema = next(v for v in doc["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
        jsonschema.validate(ws.to_k8s(), schema)
    broken = ws.to_k8s()
    broken["resource"]["count"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_karpenter_nodeclaims_match_karpenter_crd(registry):
    prov = registry.provisioners.get("karpenter")
    if prov is None:
        pytest.skip("kaito-provisioner-karpenter is not installed")
    crd = yaml.safe_load((REFERENCE / "crds" / "karpenter.sh_nodeclaims.yaml").read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    ws = _ws(PHI)
    inputs = resolve(ws, registry)
    p = plan(ws, inputs.preset, inputs.requirement, prov)
    assert p.node_objects and all(o["kind"] == "NodeClaim" for o in p.node_objects)
    for obj in p.node_objects:
        jsonschema.validate(obj, schema)
        assert obj["metadata"]["name"] in {r.name for r in p.node_requests}
