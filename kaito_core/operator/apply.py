"""One reconcile pass, synchronous and kopf-free: observe, plan (pure), apply, report.

The kopf handlers (:mod:`kaito_core.operator.handlers`) are thin wrappers around
:class:`Reconciler`; the benchmark and tests drive it the same way.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from kaito_core.api import parse_workspace
from kaito_core.errors import KaitoError, WorkspaceInvalid
from kaito_core.operator.admission import Policy, policy_problems
from kaito_core.operator.children import adoptable, apply_object, object_digest  # noqa: F401 - re-exported
from kaito_core.operator.configmaps import CONFIGMAP_MISSING, hold_for_configmaps, read_configmaps
from kaito_core.operator.drift import drift_status
from kaito_core.operator.kube import ApiError, KubeClient
from kaito_core.operator.settings import Settings
from kaito_core.reconcile import Observed, Plan, invalid, names, plan_workspace
from kaito_core.reconcile.status import Event, refused as refused_status
from kaito_core.types import ProvisionerContext

log = logging.getLogger("kaito.operator")
ANNOTATION_PROVISIONER = "kaito.sh/provisioner"
VOLATILE_ANNOTATIONS = ("operator.kaito.sh/", "kopf.zalando.org/", "kubectl.kubernetes.io/")


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    plan: Plan | None = None
    actions: dict[str, str] = field(default_factory=dict)  # "Kind/name" -> created|updated|...


class Reconciler:
    """Everything one operator process holds: the API client, plugins, settings, locks."""

    def __init__(self, kube: KubeClient, registry: Any, settings: Settings,
                 clock: Callable[[], str] = now_rfc3339):
        self.kube = kube
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        # (workspace uid, "Kind/name") -> object hash last created/patched/seen unchanged. A
        # pass woken by a watch event skips the GET for children whose hash is unchanged; the
        # periodic resync (verify=True) checks every child again, and a watched child's
        # deletion drops its entry (forget_object).
        self._applied: dict[tuple[str, str], str] = {}
        # Workspace uid -> (hash of what the pre-observation plan depends on, that plan).
        self._first: dict[str, tuple[str, Plan]] = {}

    def lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def forget(self, key: str) -> None:
        with self._guard:
            self._locks.pop(key, None)
            self._first.pop(key, None)
            for k in [k for k in self._applied if k[0] == key]:
                del self._applied[k]

    def forget_object(self, uid: str, kind: str, name: str) -> None:
        """A child was deleted (watch event): the next pass must look at it again."""
        with self._guard:
            self._applied.pop((uid, f"{kind}/{name}"), None)

    # -- inputs ---------------------------------------------------------------------------

    def default_provisioner_name(self) -> str:
        return self.settings.provisioner or default_provisioner(self.registry)

    def provisioner_name(self, ws: Any, *, releasing: bool = False) -> str:
        """The admin's provisioner, or the one a ``kaito.sh/provisioner`` annotation picks among
        those the admin allows (``KAITO_ALLOWED_PROVISIONERS``). Releasing honours any
        annotation: giving nodes back is never a privilege, and the admin may have narrowed the
        list after the nodes were made."""
        default = self.default_provisioner_name()
        chosen = ws.annotations.get(ANNOTATION_PROVISIONER)
        if not chosen or chosen == default:
            return default
        if not releasing and chosen not in self.settings.allowed_provisioners:
            allowed = ", ".join(sorted({default, *self.settings.allowed_provisioners}))
            raise KaitoError(f"annotation {ANNOTATION_PROVISIONER}={chosen!r} is not allowed by the cluster admin "
                             f"(allowed: {allowed}); remove the annotation or ask the admin to add {chosen!r} to "
                             "the chart value allowedProvisioners (KAITO_ALLOWED_PROVISIONERS)")
        return chosen

    def provisioner_for(self, ws: Any, *, releasing: bool = False) -> Any:
        name = self.provisioner_name(ws, releasing=releasing)
        prov = self.registry.provisioners.get(name)
        if prov is None:
            from kaito_core.operator.release import ProvisionerMissing

            installed = ", ".join(sorted(self.registry.provisioners)) or "none"
            raise ProvisionerMissing(f"provisioner {name!r} is not installed (installed: {installed}); install "
                             f"kaito-provisioner-{name} or set KAITO_PROVISIONER / annotation {ANNOTATION_PROVISIONER}")
        return prov

    def context_for(self, ws: Any, *, uncached: bool = False) -> ProvisionerContext:
        """``uncached``: the provisioner reads the API server itself, never the watch cache
        (releasing must see every node object, even one whose event is still on its way)."""
        extra = {"workspace.name": ws.name, "workspace.namespace": ws.namespace}
        if ws.resource is not None and ws.resource.label_selector is not None:
            extra["workspace.labelSelector"] = json.dumps(ws.resource.label_selector.to_k8s(), sort_keys=True)
        if ws.resource is not None and ws.resource.preferred_nodes:
            extra["workspace.preferredNodes"] = ",".join(ws.resource.preferred_nodes)
        kube = getattr(self.kube, "uncached", self.kube) if uncached else self.kube
        return ProvisionerContext(kube=kube, settings={**self.settings.provisioner_settings, **extra})

    @staticmethod
    def parse(body: Mapping[str, Any]) -> Any:
        raw = json.loads(json.dumps(dict(body), default=dict))
        return parse_workspace(raw)

    # -- one pass -------------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any], *, pods: list[Mapping[str, Any]] | None = None,
                  verify: bool = True) -> Outcome:
        """One pass. ``pods``: the Workspace's pods from the operator's watch (None: list them).
        ``verify=False``: trust the memo of applied children (a pass woken by a watch event)."""
        now = self.clock()
        raw = json.loads(json.dumps(dict(body), default=dict))
        try:
            ws = parse_workspace(raw)
        except WorkspaceInvalid as exc:
            return self._invalid_body(body, [str(e) for e in exc.errors], now)
        with self.lock(ws.metadata.uid or f"{ws.namespace}/{ws.name}"):
            return self._reconcile(ws, now, pods=pods, verify=verify, spec_key=spec_key(raw))

    def _invalid_body(self, body: Mapping[str, Any], problems: list[str], now: str) -> Outcome:
        status = {"conditions": [{"type": "ResourceReady", "status": "False", "reason": "InvalidWorkspace",
                                  "message": "; ".join(problems), "lastTransitionTime": now}],
                  "state": "Failed", "workerNodes": []}
        return Outcome(status, [Event("Warning", "InvalidWorkspace", "; ".join(problems))])

    def configmaps_for(self, ws: Any) -> tuple[dict[str, Any], list[str]]:
        return read_configmaps(self.kube, ws)

    def plan_for(self, ws: Any, prov: Any, configmaps: Mapping[str, Any], observed: Observed) -> Plan:
        """The one planner (:func:`kaito_core.reconcile.plan_workspace`), as ``kaito plan`` and
        ``kaito render`` call it, with the operator's provisioner settings."""
        return plan_workspace(ws, registry=self.registry, provisioner=prov, configmaps=configmaps,
                              observed=observed, settings=self.settings.provisioner_settings or None)

    def first_plan(self, ws: Any, prov: Any, configmaps: Mapping[str, Any], now: str,
                   key: str | None) -> Plan:
        """The plan before observing (for its node requests). It depends only on the Workspace's
        spec, metadata and ConfigMaps and the provisioner, so a pass whose inputs hash as the
        last one's reuses it (a pass plans once instead of twice); a plan with errors is
        never reused (its status is stamped with this pass's clock)."""
        memo = self._memo_key(ws)
        if key is not None:
            key = names.stable_hash([key, getattr(prov, "name", "?"),
                                     {n: getattr(cm, "data", None) for n, cm in sorted(configmaps.items())}])
            with self._guard:
                hit = self._first.get(memo)
            if hit is not None and hit[0] == key:
                return hit[1]
        first = self.plan_for(ws, prov, configmaps, Observed(now=now))
        with self._guard:
            if key is not None and not first.errors:
                self._first[memo] = (key, first)
            else:
                self._first.pop(memo, None)
        return first

    @staticmethod
    def _memo_key(ws: Any) -> str:
        return ws.metadata.uid or f"{ws.namespace}/{ws.name}"

    def _reconcile(self, ws: Any, now: str, *, pods: list[Mapping[str, Any]] | None = None,
                   verify: bool = True, spec_key: str | None = None) -> Outcome:
        # The admin's policy holds without the webhook too (failurePolicy Ignore, webhook off).
        refused = policy_problems(ws, Policy.from_settings(self.settings, provisioner=self.default_provisioner_name()))
        if refused:
            p = invalid(ws, [str(e) for e in refused], now=now)
            return Outcome(p.status, p.events, p)
        try:
            prov = self.provisioner_for(ws)
        except (KaitoError, ValueError) as exc:
            p = invalid(ws, [str(exc)], now=now, reason="ProvisioningError")
            return Outcome(p.status, p.events, p)
        configmaps, missing = self.configmaps_for(ws)
        first = self.first_plan(ws, prov, configmaps, now, spec_key)
        if first.errors:
            return Outcome(first.status, first.events, first)
        observed = self.observe(ws, prov, first, now, pods=pods)
        final = self.plan_for(ws, prov, configmaps, observed)
        if final.errors:
            return Outcome(final.status, final.events, final)
        events = list(final.events)
        status = final.status
        if missing:
            # Nodes go ahead (they do not depend on the ConfigMap); the workload waits for it,
            # so a pod never runs without the user's settings.
            final, status = hold_for_configmaps(final, missing, now, ws.status.to_k8s() if ws.status else None)
            events.append(Event("Warning", CONFIGMAP_MISSING, "; ".join(missing)))
        actions: dict[str, str] = {}
        memo_key = ws.metadata.uid or f"{ws.namespace}/{ws.name}"
        if observed.workload is None:
            # the workload is gone (or never was): whatever the memo says, apply it again
            for kind in ("StatefulSet", "Job"):
                self.forget_object(memo_key, kind, ws.name)
        notes: list[str] = []
        failures: dict[str, tuple[int | None, str]] = {}
        for obj in final.objects:
            key = f"{obj['kind']}/{obj['metadata']['name']}"
            actions[key] = self._apply_one(ws, obj, final.uid, memo_key, verify, notes, events, failures)
        if failures:
            status, refusal_events = refused_status(status, failures, mode=ws.mode, now=now,
                                             previous=ws.status.to_k8s() if ws.status else None)
            events.extend(refusal_events)
        if notes:
            status = drift_status(status, notes, actions, self.settings.drift, now)
            reason = "DriftReverted" if self.settings.drift == "revert" else "Drifted"
            events.append(Event("Warning", reason, "; ".join(notes)[:1000]))
        return Outcome(status, events, final, actions)

    def _apply_one(self, ws: Any, obj: Mapping[str, Any], uid: str, memo_key: str, verify: bool,
                   notes: list[str], events: list[Event], failures: dict[str, tuple[int | None, str]]) -> str:
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        digest = object_digest(obj)
        if not verify and self._applied.get((memo_key, key)) == digest:
            return "unchanged"
        before = len(notes)
        try:
            action = apply_object(self.kube, obj, uid, drift=self.settings.drift, notes=notes, digest=digest)
        except ApiError as exc:
            action = "error"
            body = exc.body if isinstance(exc.body, dict) else {}
            failures[key] = (exc.status, str(body.get("message") or exc))
            log.warning("workspace %s/%s: cannot apply %s: %s", ws.namespace, ws.name, key, exc)
        with self._guard:
            if action in ("created", "updated", "unchanged", "reverted", "adopted"):
                self._applied[(memo_key, key)] = digest
            else:
                self._applied.pop((memo_key, key), None)  # look again next pass
        if action == "conflict":
            why = notes.pop() if len(notes) > before else f"{key} exists and is not owned by this Workspace"
            events.append(Event("Warning", "NameConflict", why))
        elif action == "adopted":
            events.append(Event("Normal", "Adopted", f"{key}: made by upstream KAITO for this Workspace; now "
                                                     "managed by kaito (updated to the desired spec)"))
        return action

    def observe(self, ws: Any, prov: Any, first: Plan, now: str,
                pods: list[Mapping[str, Any]] | None = None) -> Observed:
        error = None
        states: tuple = ()
        try:
            states = tuple(prov.ensure(requests=first.node_requests, ctx=self.context_for(ws)))
        except Exception as exc:  # noqa: BLE001 - any provider failure becomes a visible condition
            error = f"provisioner {prov.name!r}: {exc}"
            log.warning("workspace %s/%s: %s", ws.namespace, ws.name, error)
        nodes = []
        for s in states:
            if s.node_name:
                node = self.kube.get(api_version="v1", kind="Node", name=s.node_name)
                if node is not None:
                    nodes.append(node)
        kind, api = ("Job", "batch/v1") if ws.mode == "tuning" else ("StatefulSet", "apps/v1")
        absent = getattr(self.kube, "absent", None)
        if absent is not None and absent(api_version=api, kind=kind, name=ws.name, namespace=ws.namespace):
            workload = None
        else:
            workload = self.kube.get(api_version=api, kind=kind, name=ws.name, namespace=ws.namespace)
        if workload is not None and (workload.get("metadata") or {}).get("labels", {}).get(names.LABEL_UID) != first.uid:
            workload = None  # someone else's object of the same name: not ours to report
        if workload is None:
            pods = []
        elif pods is None:
            pods = self.kube.list(api_version="v1", kind="Pod", namespace=ws.namespace,
                                  labels={names.LABEL_UID: first.uid})
        else:
            pods = [p for p in pods if (p.get("metadata") or {}).get("namespace") in (None, ws.namespace)]
        return Observed(node_states=states, nodes=tuple(nodes), workload=workload, pods=tuple(pods),
                        provisioner_error=error, now=now)

    # -- delete ---------------------------------------------------------------------------

    def release(self, body: Mapping[str, Any]) -> list[str]:
        """Give the nodes back and delete the children. Raises if the provisioner fails."""
        ws = self.parse(body)
        with self.lock(ws.metadata.uid or f"{ws.namespace}/{ws.name}"):
            prov = self.provisioner_for(ws, releasing=True)
            prov.release(workspace=ws, ctx=self.context_for(ws, uncached=True))
            deleted = self.delete_children(ws)
        self.forget(ws.metadata.uid or f"{ws.namespace}/{ws.name}")
        return deleted

    def delete_children(self, ws: Any) -> list[str]:
        """Delete what the Workspace owns (the garbage collector would too; emulators and
        clusters without GC must not keep orphans)."""
        uid = names.uid_of(ws.namespace, ws.name, ws.metadata.uid)
        wanted = [("apps/v1", "StatefulSet", ws.name), ("batch/v1", "Job", ws.name), ("v1", "Service", ws.name),
                  ("v1", "Service", names.headless_name(ws.name)),
                  ("v1", "ConfigMap", names.config_name(ws.name, "inference")),
                  ("v1", "ConfigMap", names.config_name(ws.name, "tuning"))]
        deleted = []
        for api, kind, name in wanted:
            cur = self.kube.get(api_version=api, kind=kind, name=name, namespace=ws.namespace)
            if cur is None or ((cur.get("metadata") or {}).get("labels") or {}).get(names.LABEL_UID) != uid:
                continue
            if self.kube.delete(api_version=api, kind=kind, name=name, namespace=ws.namespace):
                deleted.append(f"{kind}/{name}")
        return deleted


def spec_key(raw: Mapping[str, Any]) -> str:
    """What a Workspace's plan depends on, besides its ConfigMaps, the provisioner and what is
    observed: the spec and the identity, labels and annotations (not its status, finalizers or
    resourceVersion)."""
    meta = dict(raw.get("metadata") or {})
    # kopf's progress annotations change on every handler run; they never change a plan
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items()
                           if not k.startswith(VOLATILE_ANNOTATIONS)}
    return names.stable_hash({"spec": {k: raw.get(k) for k in ("resource", "inference", "tuning")},
                              "meta": {k: meta.get(k) for k in ("name", "namespace", "uid", "generation",
                                                                 "labels", "annotations")}}, length=32)


def default_provisioner(registry: Any) -> str:
    """karpenter when installed (upstream's default), else byo (existing nodes)."""
    return "karpenter" if "karpenter" in registry.provisioners else "byo"
