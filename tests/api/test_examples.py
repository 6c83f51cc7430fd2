"""Upstream's example manifests, our CRD, and the CRD's agreement with upstream's."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from kaito_core.api import Workspace, configmaps_by_name, load_documents, validate_workspace
from kaito_core.api.crd import crd, crd_yaml, openapi_schema
from kaito_core.plugins import family_of, get_registry

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "tests" / "data" / "reference"
EXAMPLES = sorted((REFERENCE / "kaito-examples").glob("*.yaml"))
UPSTREAM_CRD = yaml.safe_load((REFERENCE / "crds" / "upstream-kaito.sh_workspaces.yaml").read_text())


def _upstream_schema(version: str) -> dict:
    return next(v for v in UPSTREAM_CRD["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


def _workspaces():
    for path in EXAMPLES:
        docs = load_documents(path)
        for doc in docs:
            if doc.kind == "Workspace":
                yield pytest.param(path, doc, configmaps_by_name(docs), id=f"{path.name}")


def test_reference_examples_are_present():
    assert len(EXAMPLES) >= 7


@pytest.mark.parametrize("path,doc,configmaps", list(_workspaces()))
def test_example_is_accepted_or_refused_with_install_hint(path, doc, configmaps):
    assert doc.error is None, doc.error
    ws = doc.obj
    assert isinstance(ws, Workspace)
    result = validate_workspace(ws, configmaps=configmaps)
    registry = get_registry()
    name = ws.preset_name
    if registry.resolve_preset_name(name) is not None:
        assert result.errors == [], [str(e) for e in result.errors]
    else:
        # a model family no installed plugin provides: refused, and told what to install
        family = family_of(name)
        assert family is not None
        (err,) = result.errors
        assert err.path.endswith("preset.name")
        assert f"kaito-preset-{family}" in str(err)


@pytest.mark.parametrize("path,doc,configmaps", list(_workspaces()))
def test_examples_validate_against_our_crd_and_upstreams(path, doc, configmaps):
    ours = openapi_schema()
    jsonschema.validate(doc.raw, ours)
    version = doc.raw["apiVersion"].split("/")[1]
    jsonschema.validate(doc.raw, _upstream_schema(version))


def test_our_crd_accepts_what_upstreams_accepts_in_a_rich_workspace():
    rich = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "rich", "annotations": {"kaito.sh/runtime": "vllm"}},
        "resource": {"count": 2, "instanceType": "Standard_NC24ads_A100_v4",
                     "labelSelector": {"matchLabels": {"apps": "x"},
                                       "matchExpressions": [{"key": "k", "operator": "In", "values": ["a"]}]},
                     "preferredNodes": ["node-1"]},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct", "accessMode": "public",
                                 "presetOptions": {"image": "r.io/x:1", "imagePullSecrets": ["s"],
                                                   "modelAccessSecret": "hf"}},
                      "config": "cfg",
                      "adapters": [{"source": {"name": "a", "image": "r.io/a:1", "imagePullSecrets": ["s"]},
                                    "strength": "0.5"},
                                   {"source": {"name": "b", "volumeSource": {"persistentVolumeClaim": {"claimName": "p"}}}}]},
        "status": {"workerNodes": ["n1"], "state": "Ready", "targetNodeCount": 2,
                   "conditions": [{"type": "ResourceReady", "status": "True", "reason": "Ok", "message": "",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    }
    jsonschema.validate(rich, _upstream_schema("v1beta1"))
    jsonschema.validate(rich, openapi_schema())


@pytest.mark.parametrize("mutate,field", [
    (lambda w: w["inference"].update(adapters=[{"source": {"name": f"a{i}", "image": "r/x:1"}} for i in range(11)]),
     "maxItems"),
    (lambda w: w["inference"].update(adapters=[{"source": {"name": "a", "image": "r/x:1"}, "strength": "1.5"}]),
     "pattern"),
    (lambda w: w["resource"].update(count=0), "minimum"),
    (lambda w: w["resource"].update(count=1_000_000), "maximum"),
    (lambda w: w["resource"].update(preferredNodes=["n"] * 101), "maxItems"),
    (lambda w: w["resource"]["labelSelector"].update(matchLabels={f"k{i}": "v" for i in range(65)}), "maxProperties"),
    (lambda w: w["inference"]["preset"].update(name="a" * 254), "maxLength"),
    (lambda w: w["resource"].update(instanceType=5), "type"),
])
def test_our_crd_refuses_earlier_than_upstream(mutate, field):
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "x"},
          "resource": {"labelSelector": {"matchLabels": {"a": "b"}}},
          "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}
    mutate(ws)
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(ws, openapi_schema())
    assert err.value.validator == field


def test_crd_shape_matches_upstream():
    ours = crd()
    assert ours["spec"]["names"]["shortNames"] == ["wk", "wks"]
    assert ours["spec"]["group"] == UPSTREAM_CRD["spec"]["group"]
    assert ours["spec"]["names"]["plural"] == UPSTREAM_CRD["spec"]["names"]["plural"]
    for ov, uv in zip(ours["spec"]["versions"], UPSTREAM_CRD["spec"]["versions"]):
        assert (ov["name"], ov["storage"], ov["served"]) == (uv["name"], uv["storage"], uv["served"])
        assert ov["additionalPrinterColumns"] == uv["additionalPrinterColumns"]
        assert ov["subresources"] == {"status": {}}


def test_crd_is_a_valid_kubernetes_object():
    for version in ("1.30.0", "1.35.0"):
        # raises kubernetes_validate.ValidationError on any schema problem
        assert kubernetes_validate.validate(copy.deepcopy(crd()), version, strict=True) == version[:4]
    bad = copy.deepcopy(crd())
    bad["spec"]["scope"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.35.0", strict=True)


def test_committed_chart_crd_equals_generated():
    committed = (ROOT / "charts" / "kaito" / "crds" / "kaito.sh_workspaces.yaml").read_text()
    assert committed == crd_yaml(), "regenerate: kaito crd > charts/kaito/crds/kaito.sh_workspaces.yaml"
