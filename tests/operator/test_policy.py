"""Who may choose what (issue 16, findings 2 and 5): the admission rules as pure functions."""

from __future__ import annotations

import pytest

from kaito_core.api import parse_workspace
from kaito_core.errors import KaitoError
from kaito_core.operator.admission import Policy, Rejection, changed_paths, review
from kaito_core.operator.apply import Reconciler
from kaito_core.operator.settings import Settings, SettingsError
from kaito_core.plugins import get_registry


def _raw(annotations: dict | None = None) -> dict:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
            "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


def test_changed_paths_name_the_leaves():
    old = {"inference": {"adapters": [{"source": {"name": "a"}, "strength": "1"}]}}
    new = {"inference": {"adapters": [{"source": {"name": "a"}, "strength": "0.5"}]}}
    assert changed_paths(new, old) == ["inference.adapters[0].strength"]
    assert changed_paths({"inference": {"adapters": []}}, old) == ["inference.adapters"]
    assert changed_paths(old, old) == []


def test_reconciler_honours_the_annotation_only_among_allowed():
    reg = get_registry()
    rec = Reconciler(kube=None, registry=reg, settings=Settings(provisioner="karpenter",
                                                                 allowed_provisioners=("byo",)))
    assert rec.provisioner_name(parse_workspace(_raw())) == "karpenter"
    assert rec.provisioner_name(parse_workspace(_raw({"kaito.sh/provisioner": "byo"}))) == "byo"
    sneaky = parse_workspace(_raw({"kaito.sh/provisioner": "aks"}))
    with pytest.raises(KaitoError, match="'aks' is not allowed by the cluster admin"):
        rec.provisioner_name(sneaky)
    # releasing follows the annotation: nodes made before the admin narrowed the list go back
    assert rec.provisioner_name(sneaky, releasing=True) == "aks"


def test_review_refuses_disallowed_choices_with_the_reason():
    policy = Policy(provisioner="byo")
    with pytest.raises(Rejection) as err:
        review(_raw({"kaito.sh/provisioner": "karpenter", "kaito.sh/use-local-weights": "true"}), old=None,
               registry=get_registry(), policy=policy)
    assert "allowedProvisioners" in err.value.message and "allowLocalWeights" in err.value.message
    allowed = Policy(provisioner="byo", allowed_provisioners=("karpenter",), local_weights=True)
    review(_raw({"kaito.sh/provisioner": "karpenter", "kaito.sh/use-local-weights": "true"}), old=None,
           registry=get_registry(), policy=allowed)


def test_drift_setting_is_checked():
    assert Settings.from_env({"KAITO_DRIFT": "report"}).drift == "report"
    with pytest.raises(SettingsError, match="KAITO_DRIFT is 'ignore'"):
        Settings.from_env({"KAITO_DRIFT": "ignore"})
