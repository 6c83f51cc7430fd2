"""The resources the API emulator serves: built-in kinds (with kube-apiserver's status
subresources) and the custom resources a CustomResourceDefinition declares (every served
version, its structural schema, its scope and subresources), and the discovery documents
that list them."""

from __future__ import annotations

from typing import Any, Iterable

from kaito_core.testing.emulator_rules import ApiStatus
from kaito_core.testing.emulator_schema import CrdSchema
from kaito_core.testing.emulator_store import ResourceType

# (group, version, plural, kind, namespaced, status subresource)
BUILTIN: list[tuple[str, str, str, str, bool, bool]] = [
    ("", "v1", "namespaces", "Namespace", False, True),
    ("", "v1", "nodes", "Node", False, True),
    ("", "v1", "pods", "Pod", True, True),
    ("", "v1", "services", "Service", True, True),
    ("", "v1", "configmaps", "ConfigMap", True, False),
    ("", "v1", "secrets", "Secret", True, False),
    ("", "v1", "events", "Event", True, False),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, False),
    ("events.k8s.io", "v1", "events", "Event", True, False),
    ("apps", "v1", "statefulsets", "StatefulSet", True, True),
    ("apps", "v1", "deployments", "Deployment", True, True),
    ("batch", "v1", "jobs", "Job", True, True),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, False),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True),
    ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration",
     False, False),
    ("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration",
     False, False),
]


def builtin_types() -> list[ResourceType]:
    return [ResourceType(g, v, p, k, ns, status) for g, v, p, k, ns, status in BUILTIN]


def crd_types(crd: dict[str, Any]) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or [] if v.get("served", True)]
    out = []
    for v in served:
        schema = ((v.get("schema") or {}).get("openAPIV3Schema"))
        out.append(ResourceType(
            spec["group"], v["name"], names["plural"], names["kind"], spec.get("scope", "Namespaced") == "Namespaced",
            status="status" in (v.get("subresources") or {}), schema=CrdSchema(schema),
            shortnames=tuple(names.get("shortNames") or ()), crd=crd["metadata"]["name"],
            versions=tuple(x["name"] for x in served)))
    return out


def permissive_crd(group: str, version: str, plural: str, kind: str, *, namespaced: bool) -> dict[str, Any]:
    """A CRD that keeps any fields (for a provider whose real CRD a test does not load)."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced" if namespaced else "Cluster",
                     "names": {"plural": plural, "kind": kind, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True, "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}]}}


def default_crds(*, karpenter: bool) -> list[dict[str, Any]]:
    """kaito's Workspace CRD as the chart installs it (generated from the API models), plus
    Karpenter's NodeClaim/NodePool (schema-less: pass the real CRDs to check against them)."""
    from kaito_core.api.crd import crd

    out = [crd()]
    if karpenter:
        out += [permissive_crd("karpenter.sh", "v1", "nodeclaims", "NodeClaim", namespaced=False),
                permissive_crd("karpenter.sh", "v1", "nodepools", "NodePool", namespaced=False)]
    return out


def not_served() -> ApiStatus:
    return ApiStatus(404, "NotFound", "the server could not find the requested resource", {})


def discovery(types: Iterable[ResourceType], path: str) -> dict[str, Any]:
    """Discovery documents (``/api``, ``/apis``, ``/apis/<group>/<version>``, ``/version``), as
    kubectl, kopf and the kubernetes client read them."""
    types = list(types)
    parts = [p for p in path.split("/") if p]
    if parts == ["version"]:
        return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-kaito-emulator", "platform": "linux/amd64"}
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"]}
    groups: dict[str, list[str]] = {}
    for rt in types:
        if rt.group and rt.version not in groups.setdefault(rt.group, []):
            groups[rt.group].append(rt.version)
    entries = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[-1]}", "version": vs[-1]}}
               for g, vs in sorted(groups.items())]
    if parts == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": entries}
    if parts[:1] == ["apis"] and len(parts) == 2:
        for e in entries:
            if e["name"] == parts[1]:
                return {"kind": "APIGroup", "apiVersion": "v1", **e}
        raise not_served()
    if parts == ["api", "v1"] or (parts[:1] == ["apis"] and len(parts) == 3):
        group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
        res = []
        for rt in types:
            if (rt.group, rt.version) == (group, version):
                base = {"kind": rt.kind, "namespaced": rt.namespaced, "singularName": rt.kind.lower(),
                        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update",
                                  "watch"], "shortNames": list(rt.shortnames)}
                res.append({"name": rt.plural, **base})
                if rt.status:
                    res.append({"name": f"{rt.plural}/status", **base, "verbs": ["get", "patch", "update"],
                                "shortNames": [], "singularName": ""})
        if not res:
            raise not_served()
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": res}
    if parts in ([], ["healthz"], ["readyz"], ["livez"]):
        return {"paths": ["/api", "/apis", "/version"]}
    raise not_served()
