"""Issue 17, upstream's meanings on the API side: case-insensitive tuning method, required
labelSelector, count defaulting to 1, use-local-weights as true/false, annotations validated
like upstream, status.performance in the CRD."""

from __future__ import annotations

import copy

import jsonschema
import pytest

from kaito_core.api import parse_workspace, validate_workspace
from kaito_core.api.crd import openapi_schema

BASE = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "w", "namespace": "ns"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}
TUNING = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "QLoRA",
          "input": {"urls": ["https://example.com/data.parquet"]},
          "output": {"image": "registry.example.com/adapters/phi:1", "imagePushSecret": "push"}}


def _errors(raw: dict) -> list[str]:
    return [str(e) for e in validate_workspace(parse_workspace(raw)).errors]


def _with_annotations(**annotations: str) -> dict:
    raw = copy.deepcopy(BASE)
    raw["metadata"]["annotations"] = {f"kaito.sh/{k.replace('_', '-')}": v for k, v in annotations.items()}
    return raw


def test_tuning_method_is_case_insensitive():
    raw = copy.deepcopy(BASE)
    raw.pop("inference")
    raw["tuning"] = copy.deepcopy(TUNING)
    ws = parse_workspace(raw)
    assert ws.tuning.method == "qlora" and _errors(raw) == []
    jsonschema.validate(raw, openapi_schema())  # the API server accepts it too
    raw["tuning"]["method"] = "Full"
    assert any(e.startswith("tuning.method") for e in _errors(raw))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, openapi_schema())


def test_label_selector_is_required_and_count_defaults_to_one():
    raw = copy.deepcopy(BASE)
    del raw["resource"]["labelSelector"]
    assert any(e.startswith("resource.labelSelector: is required") for e in _errors(raw))
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(raw, openapi_schema())
    assert err.value.validator == "required"
    count = openapi_schema()["properties"]["resource"]["properties"]["count"]
    assert count["default"] == 1
    # the API server's default is no reason for a deprecation warning; an explicit 2 is
    one = copy.deepcopy(BASE)
    one["resource"]["count"] = 1
    assert not validate_workspace(parse_workspace(one)).warnings
    one["resource"]["count"] = 2
    assert any(w.path == "resource.count" for w in validate_workspace(parse_workspace(one)).warnings)


@pytest.mark.parametrize("value", ["true", "True", "false"])
def test_use_local_weights_means_upstreams_directory(value):
    ws = parse_workspace(_with_annotations(use_local_weights=value))
    expected = "/opt/kaito/models/phi-3-mini-4k-instruct" if value.lower() == "true" else None
    assert ws.local_weights_path == expected
    assert _errors(_with_annotations(use_local_weights=value)) == []


@pytest.mark.parametrize("key,value", [("use_local_weights", "/mnt/models"), ("use_local_weights", "yes"),
                                       ("performance_mode", "fastest"), ("enablelb", "maybe"),
                                       ("disable_benchmark", "1"), ("bypass_resource_checks", "on")])
def test_upstream_annotations_refuse_other_values(key, value):
    errors = _errors(_with_annotations(**{key: value}))
    name = f"kaito.sh/{key.replace('_', '-')}"
    assert any(e.startswith(f"metadata.annotations[{name}]") and "must be one of" in e for e in errors), errors


def test_upstream_annotation_values_are_accepted():
    assert _errors(_with_annotations(performance_mode="throughput", disable_benchmark="true", enablelb="True",
                                     bypass_resource_checks="False")) == []


def test_status_performance_is_in_the_crd():
    raw = copy.deepcopy(BASE)
    raw["status"] = {"performance": {"metrics": {"throughput": {
        "description": "stress/high-concurrency", "value": "1234", "unit": "tokens/min",
        "config": {"concurrency": "64"}}}}}
    jsonschema.validate(raw, openapi_schema())
    assert parse_workspace(raw).status.performance.metrics["throughput"].value == "1234"
    raw["status"]["performance"]["metrics"]["throughput"].pop("value")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, openapi_schema())
