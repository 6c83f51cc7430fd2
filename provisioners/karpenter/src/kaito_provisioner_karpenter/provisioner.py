"""The Karpenter provisioner: NodeClaims (or one NodePool) per Workspace, through the KubeAPI only."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kaito_core.types import NodeRequest, NodeState, ProvisionerContext

from kaito_provisioner_karpenter import builders
from kaito_provisioner_karpenter.settings import KarpenterSettings
from kaito_provisioner_karpenter.status import nodeclaim_state

API_VERSION = builders.API_VERSION


def _is_not_found(exc: BaseException) -> bool:
    """A 404 from any Kubernetes client (kubernetes' ApiException, kopf/aiohttp errors).

    Used on delete only: when the Karpenter CRDs are missing there can be no NodeClaims left,
    and deleting a Workspace must never hang on that (upstream kaito-project/kaito#1899).
    """
    for attr in ("status", "status_code", "code"):
        if getattr(exc, attr, None) == 404:
            return True
    return False


class KarpenterProvisioner:
    """``karpenter``: one ``karpenter.sh/v1`` NodeClaim per node, or one NodePool per Workspace.

    Settings (the operator's settings, else the environment): ``CLOUD_PROVIDER`` (azure|aws),
    ``KARPENTER_NODECLASS_KIND`` / ``_GROUP`` / ``_NAME``, ``KARPENTER_MODE`` (nodeclaim|nodepool),
    ``KARPENTER_NODEPOOL_LABEL``, ``KARPENTER_NODEPOOL_STATIC``. The pure methods use the
    settings the provisioner was made with; ``ensure`` uses the context's on top of them.
    """

    name = "karpenter"

    def __init__(self, settings: KarpenterSettings | Mapping[str, str] | None = None) -> None:
        self._base: Mapping[str, str] = {} if isinstance(settings, KarpenterSettings) or settings is None \
            else dict(settings)
        self.settings = settings if isinstance(settings, KarpenterSettings) \
            else KarpenterSettings.from_mapping(self._base)

    def _settings(self, ctx: ProvisionerContext | None) -> KarpenterSettings:
        if ctx is None or not ctx.settings:
            return self.settings
        return KarpenterSettings.from_mapping({**self._base, **dict(ctx.settings)})

    # -- pure: the core builds the NodeRequests; this only turns them into objects --------

    def cloud_of(self, settings: Mapping[str, str] | None = None) -> str:
        """The cloud whose instance types this provisioner can create (``CLOUD_PROVIDER``):
        the planner places Workspaces only on that cloud's catalog."""
        return self._settings(None).cloud if not settings else KarpenterSettings.from_mapping(
            {**self._base, **dict(settings)}).cloud

    def desired_objects(self, *, requests: Sequence[NodeRequest]) -> list[dict]:
        return builders.desired_objects(requests, self.settings)

    # -- I/O -----------------------------------------------------------------------------

    def ensure(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        kube = _kube(ctx)
        settings = self._settings(ctx)
        if settings.mode == "nodepool":
            for obj in builders.desired_objects(requests, settings):
                _create_once(kube, obj)
            return self._observe(requests, kube, settings)
        # One LIST of the Workspace's claims (the operator answers it from its watch cache)
        # serves adoption, "exists already" and the states: a pass used to list twice and GET
        # each claim besides.
        claims = _claims_of(requests, kube)
        adopted = _adopted(requests, claims)
        by_name = {c["metadata"]["name"]: c for c in claims}
        for obj in builders.desired_objects([r for r in requests if r.name not in adopted], settings):
            name = obj["metadata"]["name"]
            if name not in by_name:  # the deterministic name: present means ours, from an earlier pass
                by_name[name] = _create_once(kube, obj)
        return [nodeclaim_state(r.name, adopted.get(r.name) or by_name.get(r.name)) for r in requests]

    def observe(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]:
        return self._observe(requests, _kube(ctx), self._settings(ctx))

    def _observe(self, requests: Sequence[NodeRequest], kube: Any, settings: KarpenterSettings) -> list[NodeState]:
        if not requests:
            return []
        if settings.mode == "nodepool":
            pool = builders.nodepool_name(requests[0].namespace, requests[0].workspace)
            claims = kube.list(api_version=API_VERSION, kind="NodeClaim", labels={builders.NODEPOOL_LABEL: pool})
            # Karpenter names these claims itself: hand them to the requests oldest first.
            claims.sort(key=lambda c: (c["metadata"].get("creationTimestamp") or "", c["metadata"]["name"]))
            return [nodeclaim_state(r.name, claims[i] if i < len(claims) else None)
                    for i, r in enumerate(requests)]
        claims = _claims_of(requests, kube)
        adopted = _adopted(requests, claims)
        by_name = {c["metadata"]["name"]: c for c in claims}
        return [nodeclaim_state(r.name, adopted.get(r.name) or by_name.get(r.name)
                                or kube.get(api_version=API_VERSION, kind="NodeClaim", name=r.name))
                for r in requests]

    def release(self, *, workspace: Any, ctx: ProvisionerContext) -> None:
        """Delete this Workspace's NodePool (NodePool mode) and every NodeClaim it owns.

        Both kinds are cleaned whatever the current mode, so switching modes leaks nothing.
        """
        kube = _kube(ctx)
        labels = builders.workspace_labels(workspace.metadata.name, workspace.metadata.namespace or "default")
        for kind in ("NodePool", "NodeClaim"):
            try:
                found = kube.list(api_version=API_VERSION, kind=kind, labels=labels)
            except Exception as exc:
                if _is_not_found(exc):
                    continue  # the CRD is not installed: nothing of this kind can exist
                raise
            for obj in found:
                try:
                    kube.delete(api_version=API_VERSION, kind=kind, name=obj["metadata"]["name"])
                except Exception as exc:
                    if not _is_not_found(exc):
                        raise


def _instance_type(claim: Mapping[str, Any]) -> str | None:
    for req in (claim.get("spec") or {}).get("requirements") or []:
        if req.get("key") == builders.INSTANCE_TYPE_LABEL and req.get("values"):
            return req["values"][0]
    return ((claim.get("metadata") or {}).get("labels") or {}).get(builders.INSTANCE_TYPE_LABEL)


def _create_once(kube: Any, obj: dict) -> dict | None:
    """Create ``obj``; when that fails because it exists (409: a race with another pass, or an
    unlabelled object of our deterministic name), the object that is there."""
    try:
        made = kube.create(obj)
    except Exception:
        found = kube.get(api_version=API_VERSION, kind=obj["kind"], name=obj["metadata"]["name"])
        if found is None:
            raise
        return found
    if isinstance(made, dict) and made.get("metadata"):
        return made
    return kube.get(api_version=API_VERSION, kind=obj["kind"], name=obj["metadata"]["name"])


def _claims_of(requests: Sequence[NodeRequest], kube: Any) -> list[dict]:
    """Every NodeClaim carrying the Workspace's labels (ours and upstream KAITO's)."""
    if not requests:
        return []
    first = requests[0]
    try:
        return kube.list(api_version=API_VERSION, kind="NodeClaim",
                         labels=builders.workspace_labels(first.workspace, first.namespace))
    except Exception as exc:
        if _is_not_found(exc):
            return []  # no Karpenter CRDs: nothing to adopt (creating reports the missing CRD)
        raise


def _adopted(requests: Sequence[NodeRequest], claims: Sequence[dict]) -> dict[str, dict]:
    """NodeClaims another controller (upstream KAITO) made for this Workspace, handed to the
    requests that have no claim of their own name: upstream names claims from the time, we from
    the uid, so a migrated Workspace would otherwise get its nodes twice (issue 17).

    A claim is the Workspace's when it carries upstream's labels ``kaito.sh/workspace`` and
    ``kaito.sh/workspacenamespace`` (``claims``: those :func:`_claims_of` found) and asks for
    the requests' instance type; oldest first.
    """
    if not requests:
        return {}
    first = requests[0]
    ours = {r.name for r in requests}
    pool = builders.nodepool_name(first.namespace, first.workspace)  # our NodePool mode's claims
    foreign = sorted((c for c in claims if c["metadata"]["name"] not in ours
                      and (c["metadata"].get("labels") or {}).get(builders.NODEPOOL_LABEL) != pool
                      and _instance_type(c) == first.instance_type
                      and not c["metadata"].get("deletionTimestamp")),
                     key=lambda c: (c["metadata"].get("creationTimestamp") or "", c["metadata"]["name"]))
    existing = {c["metadata"]["name"] for c in claims}
    out: dict[str, dict] = {}
    for req in requests:
        if req.name in existing or not foreign:
            continue
        out[req.name] = foreign.pop(0)
    return out


def _kube(ctx: ProvisionerContext) -> Any:
    if ctx is None or ctx.kube is None:
        raise ValueError("karpenter provisioner: ProvisionerContext.kube is None; the provisioner creates "
                         "NodeClaims through the Kubernetes API and needs one (the operator passes it)")
    return ctx.kube
