"""The chart grants the operator exactly what its code uses (kaito_core/operator/rbac.py), no more."""

from __future__ import annotations

import pytest

from kaito_core.operator.rbac import RULES
from tests.chart.conftest import AKS, NAMESPACE, one


def grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    """Each rule expanded to (apiGroup, resource, verb) triples: the set of permissions."""
    out = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields {sorted(rule)}"
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return out


@pytest.mark.parametrize("values", [{}, AKS, {"provisioner": "byo"}], ids=["karpenter", "aks", "byo"])
def test_cluster_role_is_exactly_the_operator_rules(render, values):
    role = one(render(values), "ClusterRole")
    rendered = grants(role["rules"])
    wanted = grants(RULES)
    assert not rendered - wanted, f"the chart grants more than kaito_core/operator/rbac.py: {sorted(rendered - wanted)}"
    assert not wanted - rendered, f"the chart lacks what the operator uses: {sorted(wanted - rendered)}"
    # Same rules, rule by rule (order-insensitive), so the chart reads like the code.
    norm = lambda rules: sorted((sorted(r["apiGroups"]), sorted(r["resources"]), sorted(r["verbs"])) for r in rules)
    assert norm(role["rules"]) == norm(RULES)


def test_no_wildcards_no_secrets_and_no_namespaced_roles(render):
    objects = render()
    role = one(objects, "ClusterRole")
    for group, resource, verb in grants(role["rules"]):
        assert "*" not in (group, resource, verb)
        assert resource != "secrets", "the webhook certificate is mounted, not read through the API"
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]


def test_binding_names_the_operator_service_account(render):
    objects = render()
    binding = one(objects, "ClusterRoleBinding")
    sa = one(objects, "ServiceAccount")
    deployment = one(objects, "Deployment")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": one(objects, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_comparison_detects_an_extra_grant(render):
    role = one(render(), "ClusterRole")
    widened = role["rules"] + [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert grants(widened) - grants(RULES) == {("", "secrets", "get")}
