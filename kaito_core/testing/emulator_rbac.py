"""Authorization as a cluster enforces it, for the clients a test names (by User-Agent, standing
in for the operator's ServiceAccount): RBAC PolicyRules, and optionally the
OwnerReferencesPermissionEnforcement admission plugin (OpenShift enables it; any kube-apiserver
can, with ``--enable-admission-plugins``).

RBAC (k8s.io/kubernetes plugin/pkg/auth/authorizer/rbac): a request is allowed when one rule
matches its API group, resource (``plural/subresource`` for a subresource) and verb, ``*``
matching any; otherwise 403 Forbidden, worded as kube-apiserver words it.
OwnerReferencesPermissionEnforcement (plugin/pkg/admission/gc): a client that sets or changes
``ownerReferences`` must be allowed to ``delete`` the object, and one that sets
``blockOwnerDeletion`` must be allowed to ``update`` the owner's ``finalizers`` subresource.
Clients no rule set names are not restricted (the test itself, a cluster admin).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from kaito_core.testing.emulator_rules import ApiStatus


def allows(rules: list[Mapping[str, Any]], verb: str, group: str, resource: str) -> bool:
    def has(values: Any, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    return any(has(r.get("apiGroups"), group) and has(r.get("resources"), resource) and has(r.get("verbs"), verb)
               for r in rules)


def _where(ns: str | None) -> str:
    return f'in the namespace "{ns}"' if ns else "at the cluster scope"


class Authorizer:
    """``rules``: User-Agent prefix -> PolicyRules (a ClusterRole's ``rules``)."""

    def __init__(self, rules: Mapping[str, list[Mapping[str, Any]]], *, owner_references: bool = False):
        self.rules = dict(rules)
        self.owner_references = owner_references

    def rules_for(self, agent: str) -> list[Mapping[str, Any]] | None:
        return next((r for prefix, r in self.rules.items() if agent.startswith(prefix)), None)

    def check(self, agent: str, verb: str, group: str, resource: str, ns: str | None, name: str) -> None:
        rules = self.rules_for(agent)
        if rules is None or allows(rules, verb, group, resource):
            return
        what = f'{resource.split("/")[0]}{"." + group if group else ""}' + (f' "{name}"' if name else "")
        raise ApiStatus(403, "Forbidden", f'{what} is forbidden: User "{agent}" cannot {verb} resource '
                                          f'"{resource}" in API group "{group}" {_where(ns)}',
                        {"name": name, "group": group, "kind": resource.split("/")[0]})

    def check_owner_references(self, agent: str, plural_of: Callable[[str, str], str | None], group: str,
                               plural: str, ns: str | None, obj: Mapping[str, Any],
                               old: Mapping[str, Any] | None) -> None:
        rules = self.rules_for(agent)
        if not self.owner_references or rules is None:
            return
        name = (obj.get("metadata") or {}).get("name", "")
        new_refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        old_refs = ((old or {}).get("metadata") or {}).get("ownerReferences") or []
        if new_refs == old_refs:
            return
        what = f'{plural}{"." + group if group else ""} "{name}" is forbidden: '
        if not allows(rules, "delete", group, plural):
            raise ApiStatus(403, "Forbidden", what + "cannot set an ownerRef on a resource you can't delete: "
                            f'User "{agent}" cannot delete resource "{plural}" in API group "{group}" {_where(ns)}')
        for ref in new_refs:
            if not ref.get("blockOwnerDeletion") or ref in old_refs:
                continue
            owner_group = ref.get("apiVersion", "").rpartition("/")[0]
            owner_plural = plural_of(ref.get("apiVersion", ""), ref.get("kind", "")) or ref.get("kind", "").lower()
            if not allows(rules, "update", owner_group, f"{owner_plural}/finalizers"):
                raise ApiStatus(403, "Forbidden", what + "cannot set blockOwnerDeletion if an ownerReference refers "
                                f"to a resource you can't set finalizers on: User \"{agent}\" cannot update resource "
                                f'"{owner_plural}/finalizers" in API group "{owner_group}" {_where(ns)}, {ref}')
