"""The RBAC rules the operator needs: every API call its code (and kopf's) makes, and no more.

The Helm chart builds its ClusterRole from :data:`RULES`, and a test compares the two, so keep
this list truthful when the code changes. Groups:

- ``kaito.sh`` Workspaces: kopf watches them and patches finalizers/annotations (progress);
  the operator patches the status subresource, and GETs a Workspace whose node requests look
  orphaned (kaito_core.operator.relist.sweep_orphans).
- kopf itself: it scans CRDs (and namespaces, with ``KAITO_NAMESPACES`` patterns) to find what
  to watch and posts Events (POST only). The chart owns the admission webhook configurations
  (kopf does not manage them: no ``admissionregistration`` rights). The operator runs
  ``--standalone`` (one replica, Deployment strategy Recreate), so no peering resources.
- Children the reconciler owns: ConfigMaps, Services, StatefulSets, Jobs (create/patch/delete).
- Observation: Pods (reasons for status), Nodes (readiness, GPU capacity, BYO selection).
- Provisioners: Karpenter NodeClaims (``karpenter.sh/v1``), created and released by the
  operator through the provisioner plugin (and watched: their status wakes the Workspace);
  NodePools in the karpenter plugin's NodePool mode (``KARPENTER_MODE=nodepool``: one
  NodePool per Workspace, read, created, listed by label and deleted on release; never
  patched or watched).
- Watches that wake a Workspace's reconcile: StatefulSets, Jobs, Services, ConfigMaps, Pods,
  Nodes, NodeClaims.

tests/operator/test_rbac_usage.py runs the operator against the API emulator and checks every
call it makes is granted here, and every grant here is used or names the code path needing it.
"""

from __future__ import annotations

from typing import Any

READ = ["get", "list", "watch"]
# No "update": every write is a PATCH (merge patch) or a create/delete.
OWN = ["get", "list", "watch", "create", "patch", "delete"]

RULES: list[dict[str, Any]] = [
    # no get: no code path reads a single Workspace (the orphan sweep lists them)
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces/status"], "verbs": ["patch"]},
    # children carry blockOwnerDeletion: where OwnerReferencesPermissionEnforcement is on (OpenShift),
    # setting it needs update on the owner's finalizers subresource
    {"apiGroups": ["kaito.sh"], "resources": ["workspaces/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["configmaps", "services"], "verbs": OWN},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": OWN},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": OWN},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": READ},
    {"apiGroups": ["karpenter.sh"], "resources": ["nodeclaims"], "verbs": OWN},
    {"apiGroups": ["karpenter.sh"], "resources": ["nodepools"], "verbs": ["get", "list", "create", "delete"]},
]


def allows(api_group: str, resource: str, verb: str) -> bool:
    """Whether :data:`RULES` grant ``verb`` on ``resource`` in ``api_group`` (used by tests)."""
    return any(api_group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in RULES)
