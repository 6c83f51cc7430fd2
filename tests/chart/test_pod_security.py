"""Pod Security "restricted" for the operator's pod and the workload pods it makes; what the
admin policy gates (hostPath: node-local weights) fails "baseline", which is why it is off by
default (issue 16, finding 9)."""

from __future__ import annotations

from kaito_core.api import parse_workspace
from kaito_core.plugins import get_registry
from kaito_core.reconcile import Observed, fake_node, plan
from kaito_core.reconcile.inputs import resolve
from kaito_core.types import NodeState
from tests.chart.pss import baseline, restricted


def test_operator_pod_is_restricted(render):
    for values in ({}, {"plugins": {"required": ["phi3"]}}):  # with the check-plugins init container too
        deployment = next(o for o in render(values) if o["kind"] == "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        assert restricted(spec) == [], values
    assert spec["initContainers"]


def test_the_checker_sees_what_restricted_forbids():
    spec = {"volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    problems = restricted(spec)
    assert any("hostPath" in p for p in problems) and any("privileged" in p for p in problems)
    assert any("runAsNonRoot" in p for p in problems) and any("seccompProfile" in p for p in problems)


def _pod_spec(raw: dict) -> dict:
    reg = get_registry()
    ws = parse_workspace(raw)
    inputs = resolve(ws, reg)
    prov = reg.provisioners["karpenter"]
    first = plan(ws, inputs.preset, inputs.requirement, prov, Observed(now="2026-01-01T00:00:00Z"))
    node = fake_node("n1", 1, labels={"apps": "w", "kaito.sh/workspace": "w"})
    states = tuple(NodeState(name=r.name, ready=True, node_name="n1") for r in first.node_requests)
    final = plan(ws, inputs.preset, inputs.requirement, prov,
                 Observed(now="2026-01-01T00:00:00Z", node_states=states, nodes=(node,)))
    workload = next(o for o in final.objects if o["kind"] in ("StatefulSet", "Job"))
    return workload["spec"]["template"]["spec"]


def _inference(annotations: dict | None = None) -> dict:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "w", "namespace": "ns", "uid": "u-1", "annotations": annotations or {}},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "w"}}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


def test_inference_pod_is_restricted():
    assert restricted(_pod_spec(_inference())) == []


def test_tuning_pod_is_restricted():
    raw = _inference()
    raw.pop("inference")
    raw["tuning"] = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                     "input": {"urls": ["https://example.com/data.parquet"]},
                     "output": {"image": "registry.example.com/adapters/phi:1", "imagePushSecret": "push"}}
    assert restricted(_pod_spec(raw)) == []


def test_local_weights_fail_baseline_so_they_are_gated():
    spec = _pod_spec(_inference({"kaito.sh/use-local-weights": "true"}))
    assert any("hostPath" in p for p in baseline(spec))
