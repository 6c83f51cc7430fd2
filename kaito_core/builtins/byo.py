"""Built-in ``byo`` provisioner: bring your own GPU nodes, selected by label.

Nothing is created or deleted. Each pass lists the Nodes matching the Workspace's
``resource.labelSelector`` (matchLabels and matchExpressions), keeps the Ready ones that
report enough GPUs (``nvidia.com/gpu`` capacity, or GPU feature discovery's
``nvidia.com/gpu.count`` label), puts ``resource.preferredNodes`` first, and hands one node
to each node request. The operator passes the Workspace's selector in the context settings
(``workspace.labelSelector`` as JSON, ``workspace.preferredNodes`` comma-separated).
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from kaito_core.hookspecs import hookimpl
from kaito_core.reconcile import names
from kaito_core.reconcile.observed import node_gpus, node_is_ready
from kaito_core.types import NodeRequest, NodeState, ProvisionerContext

SETTING_SELECTOR = "workspace.labelSelector"
SETTING_PREFERRED = "workspace.preferredNodes"
_OURS = (names.LABEL_WORKSPACE, names.LABEL_NAMESPACE)


def _expr_ok(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), list(expr.get("values") or [])
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(labels: Mapping[str, str], selector: Mapping[str, Any]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(_expr_ok(labels, e) for e in selector.get("matchExpressions") or [])


def select_nodes(nodes: Sequence[Mapping[str, Any]], selector: Mapping[str, Any], preferred: Sequence[str],
                 gpus: int) -> tuple[list[str], list[str]]:
    """(usable node names in order, reasons other matching nodes were skipped)."""
    usable: list[str] = []
    skipped: list[str] = []
    for node in nodes:
        meta = node.get("metadata") or {}
        if not selector_matches(meta.get("labels") or {}, selector):
            continue
        name = meta.get("name", "")
        if not node_is_ready(node):
            skipped.append(f"{name} is not Ready")
        elif gpus and node_gpus(node) < gpus:
            skipped.append(f"{name} has {node_gpus(node)} GPU(s), {gpus} needed")
        else:
            usable.append(name)
    rank = {n: i for i, n in enumerate(preferred)}
    usable.sort(key=lambda n: (rank.get(n, len(rank)), n))
    return usable, skipped


class ByoProvisioner:
    """``byo``: existing nodes chosen by label; never creates or deletes a node."""

    name = "byo"
    creates_nodes = False  # the nodes exist: any catalog type, and the template needs no instanceType

    def desired_objects(self, *, requests: Sequence[NodeRequest]) -> list[dict]:
        return []

    def ensure(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        return self.observe(requests=requests, ctx=ctx)

    def observe(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        if not requests:
            return []
        if ctx is None or ctx.kube is None:
            raise ValueError("byo provisioner: ProvisionerContext.kube is None; it lists Nodes through the "
                             "Kubernetes API and needs one (the operator passes it)")
        settings = dict(ctx.settings or {})
        if SETTING_SELECTOR in settings:
            selector = json.loads(settings[SETTING_SELECTOR] or "{}") or {}
        else:
            selector = {"matchLabels": {k: v for k, v in requests[0].labels.items() if k not in _OURS}}
        preferred = [p for p in settings.get(SETTING_PREFERRED, "").split(",") if p]
        nodes = ctx.kube.list(api_version="v1", kind="Node", labels=selector.get("matchLabels") or None)
        gpus = max(r.gpu_count for r in requests)
        usable, skipped = select_nodes(nodes, selector, preferred, gpus)
        states: list[NodeState] = []
        for i, req in enumerate(requests):
            if i < len(usable):
                states.append(NodeState(name=req.name, ready=True, node_name=usable[i]))
            else:
                why = f"; skipped: {', '.join(skipped[:3])}" if skipped else ""
                states.append(NodeState(
                    name=req.name, ready=False, reason="NoMatchingNodes",
                    message=f"{len(usable)} of {len(requests)} ready node(s) match resource.labelSelector "
                            f"{json.dumps(selector, sort_keys=True)}{why}; label more GPU nodes or change the selector"))
        return states

    def release(self, *, workspace: Any, ctx: ProvisionerContext) -> None:
        return None  # the nodes are the user's: nothing to give back


PROVISIONER = ByoProvisioner()


@hookimpl
def kaito_register_provisioners(register):
    register(PROVISIONER)
