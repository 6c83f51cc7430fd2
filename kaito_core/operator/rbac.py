"""The RBAC rules the operator needs: every API call its code (and kopf's) makes, and no more.

The Helm chart builds its ClusterRole from :data:`RULES`, and a test compares the two, so keep
this list truthful when the code changes. Groups:

- ``kaito.sh`` Workspaces: kopf watches them, patches finalizers/annotations (progress) and
  the status subresource.
- kopf itself: it scans CRDs and namespaces to find what to watch (``-A``), posts Events, and
  manages the admission webhook configurations (``settings.admission.managed``). The operator
  runs ``--standalone`` (one replica, Deployment strategy Recreate), so no peering resources.
- Children the reconciler owns: ConfigMaps, Services, StatefulSets, Jobs (create/patch/delete).
- Observation: Pods (reasons for status), Nodes (readiness, GPU capacity, BYO selection).
- Provisioners: Karpenter NodeClaims (``karpenter.sh/v1``), created and released by the
  operator through the provisioner plugin (and watched: their status wakes the Workspace);
  NodePools in the karpenter plugin's NodePool mode (``KARPENTER_MODE=nodepool``: one
  NodePool per Workspace, read, created, listed by label and deleted on release; never
  patched or watched).
- Watches that wake a Workspace's reconcile: StatefulSets, Jobs, Pods, Nodes, NodeClaims.
"""

from __future__ import annotations

from typing import Any

READ = ["get", "list", "watch"]
OWN = ["get", "list", "watch", "create", "update", "patch", "delete"]

RULES: list[dict[str, Any]] = [
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces"], "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces/status"], "verbs": ["get", "patch", "update"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": READ},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": READ},
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["admissionregistration.k8s.io"],
     "resources": ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": OWN},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": OWN},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": OWN},
    {"apiGroups": [""], "resources": ["pods"], "verbs": READ},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": READ},
    {"apiGroups": ["karpenter.sh"], "resources": ["nodeclaims"], "verbs": ["get", "list", "watch", "create",
                                                                            "patch", "delete"]},
    {"apiGroups": ["karpenter.sh"], "resources": ["nodepools"], "verbs": ["get", "list", "create", "delete"]},
]


def allows(api_group: str, resource: str, verb: str) -> bool:
    """Whether :data:`RULES` grant ``verb`` on ``resource`` in ``api_group`` (used by tests)."""
    return any(api_group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in RULES)
