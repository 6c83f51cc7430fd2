"""The conformance suite every provisioner plugin runs against itself.

Subclass :class:`ProvisionerConformance` in a test module (its name must start with ``Test``)
and give it two fixtures: ``provisioner`` (the object your plugin registers, preferably fetched
through its installed entry point with :func:`installed_provisioner`) and ``harness`` (a
:class:`Harness`: how the suite plays the cloud behind your provisioner)::

    from kaito_core.testing.conformance import ProvisionerConformance, installed_provisioner

    class TestMyProvisioner(ProvisionerConformance):
        entry_point = "mycloud"

        @pytest.fixture
        def provisioner(self):
            return installed_provisioner("mycloud")

        @pytest.fixture
        def harness(self, kaito_kube):
            return MyHarness(kaito_kube)

The core's planner builds the :class:`NodeRequest`s (names, count, instance type, labels,
taints); the suite hands the provisioner those and checks what the operator relies on, each
failure naming its rule:

- ``catalog``: the provisioner declares what it can create, and the suite's type is in it;
- ``count``: one backing resource per request, for 2 nodes and for a template's 3;
- ``labels``: every request's labels (the Workspace's + the labelSelector's) reach its object;
- ``stable-names``: render and ``ensure`` give the same names on every call and after a restart;
- ``template``: an ``inference.template`` Workspace plans and provisions without a crash;
- ``render-equals-ensure``: ``ensure`` creates exactly what ``desired_objects`` (``kaito
  render``) shows;
- ``idempotent``, ``observe``, ``failure-reason``, ``release``: a second ``ensure`` adopts, ready
  nodes are counted, backend failures become CamelCase reasons with the provider's words, and
  ``release`` removes one Workspace's nodes and nothing else, twice without error.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, Sequence

import pytest

from kaito_core.testing.factories import make_node_requests, make_requirement, make_workspace
from kaito_core.types import DNS1123_LABEL, NodeRequest, NodeState, Provisioner, ProvisionerContext

__all__ = ["Harness", "ProvisionerConformance", "installed_provisioner", "CAMEL_CASE_REASON"]

# Kubernetes condition reasons: CamelCase identifiers (metav1.Condition's pattern).
CAMEL_CASE_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")


class Harness(Protocol):
    """How the suite plays the backend (a cloud, Karpenter, a fake of either) behind a provisioner.

    A harness must be fresh per test: the suite's fixtures are function-scoped.
    """

    def context(self) -> ProvisionerContext:
        """The context the operator would pass (a Kubernetes API, settings)."""

    def backing(self, workspace: Any) -> list[str]:
        """Names of the backend resources that exist for ``workspace`` (claims, pools, VMs)."""

    def make_ready(self, request: NodeRequest) -> None:
        """Make the backend report ``request``'s node as up and ready (as the cloud would)."""

    def fail(self, request: NodeRequest) -> str:
        """Make the backend fail ``request``'s node; return the reason ``observe`` must report."""


def installed_provisioner(name: str) -> Provisioner:
    """The provisioner registered as ``name`` by an INSTALLED entry point (not a private import).

    Fails with a message naming what is missing when the distribution is not installed, the
    plugin is broken, or the name comes from somewhere else.
    """
    from kaito_core.plugins import get_plugin_manager

    pm = get_plugin_manager(cached=False)
    registry = pm.registry
    if name not in registry.provisioners:
        broken = {p: errs for p, errs in registry.errors}
        pytest.fail(f"no provisioner {name!r} is registered (known: {sorted(registry.provisioners)}); "
                    f"plugin errors: {broken or 'none'}. Is the distribution installed (pip install -e ...)?")
    plugin = registry.plugin_of("provisioners", name)
    info = pm.infos.get(plugin or "")
    if info is None or info.builtin or not info.distribution:
        pytest.fail(f"provisioner {name!r} was registered by {plugin!r}, not by an installed entry point")
    return registry.provisioners[name]


def _by_name(states: Sequence[NodeState]) -> dict[str, NodeState]:
    return {s.name: s for s in states}


def _labels_in(obj: Any) -> dict[str, str]:
    """Every ``labels`` / ``nodeLabels`` map anywhere in an object, merged (a NodeClaim's
    metadata, an AKS pool's properties, a NodePool's template)."""
    found: dict[str, str] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("labels", "nodeLabels") and isinstance(value, dict):
                found.update({k: v for k, v in value.items() if isinstance(v, str)})
            else:
                found.update(_labels_in(value))
    elif isinstance(obj, list):
        for item in obj:
            found.update(_labels_in(item))
    return found


def _object_names(objects: Sequence[dict]) -> list[str]:
    return sorted(str((o.get("metadata") or {}).get("name") or o.get("name")) for o in objects)


def rule(name: str, ok: bool, message: str) -> None:
    """Fail with the rule's name first, so a plugin author knows what to fix."""
    if not ok:
        pytest.fail(f"conformance rule '{name}': {message}", pytrace=False)


# Upstream's custom-model example (examples/custom-model-integration): a pod template, no preset.
def template_workspace(name: str, namespace: str, instance_type: str, count: int) -> Any:
    from kaito_core.api.models import Workspace

    return Workspace.model_validate({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace, "uid": f"00000000-0000-4000-8000-{count:012d}"},
        "resource": {"instanceType": instance_type, "count": count, "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"template": {"spec": {"containers": [{
            "name": "custom", "image": "mcr.microsoft.com/aks/kaito/kaito-base:0.0.8",
            "command": ["python", "-m", "server"], "ports": [{"containerPort": 5000}]}]}}}})


class ProvisionerConformance:
    """The suite. Override the class attributes to fit your backend's instance types."""

    instance_type = "Standard_NC24ads_A100_v4"
    node_count = 2
    gpus_per_node = 1
    disk_gib = 120
    #: the entry-point name the plugin is published under (checked when set)
    entry_point: str | None = None

    # -- fixtures a subclass provides ----------------------------------------------------

    @pytest.fixture
    def provisioner(self) -> Provisioner:
        pytest.fail(f"{type(self).__name__} must define a `provisioner` fixture (see kaito_core.testing.conformance)")

    @pytest.fixture
    def harness(self) -> Harness:
        pytest.fail(f"{type(self).__name__} must define a `harness` fixture (see kaito_core.testing.conformance)")

    @pytest.fixture
    def restarted_provisioner(self) -> Provisioner | None:
        """Optional: a second, independent instance, as a restarted operator would make (e.g.
        ``installed_provisioner(name)`` again). ``ensure`` through it must adopt, not duplicate."""
        return None

    # -- helpers -------------------------------------------------------------------------

    def workspace(self, name: str = "conformance", namespace: str = "team-a") -> Any:
        return make_workspace(name, namespace, instance_type=self.instance_type,
                              match_labels={"apps": name})

    def requirement(self) -> Any:
        return make_requirement(self.instance_type, node_count=self.node_count,
                                gpus_per_node=self.gpus_per_node, disk_gib=self.disk_gib)

    def plan(self, provisioner: Provisioner, workspace: Any | None = None) -> list[NodeRequest]:
        """The requests the core's planner hands the provisioner (the provisioner builds none)."""
        ws = workspace if workspace is not None else self.workspace()
        return make_node_requests(workspace=ws, requirement=self.requirement())

    # -- planning is pure ----------------------------------------------------------------

    def test_satisfies_protocol(self, provisioner: Provisioner) -> None:
        assert isinstance(provisioner, Provisioner), "the object lacks part of kaito_core.types.Provisioner"
        assert isinstance(provisioner.name, str) and DNS1123_LABEL.fullmatch(provisioner.name), provisioner.name
        if self.entry_point is not None:
            assert installed_provisioner(self.entry_point).name == provisioner.name

    def test_declares_a_catalog(self, provisioner: Provisioner, harness: Harness) -> None:
        from kaito_core.plugins import get_registry
        from kaito_core.reconcile.catalog import catalog_for

        declared = (getattr(provisioner, "instance_types", None) or getattr(provisioner, "cloud", None)
                    or callable(getattr(provisioner, "cloud_of", None))
                    or getattr(provisioner, "creates_nodes", True) is False)
        rule("catalog", bool(declared), f"{provisioner.name!r} declares neither `instance_types`, `cloud` nor "
             f"`cloud_of(settings)`: placement could pick a type it cannot create")
        catalog, problem = catalog_for(provisioner, get_registry(), settings=harness.context().settings)
        rule("catalog", problem is None and self.instance_type in catalog,
             f"the suite's instance type {self.instance_type!r} is not in {provisioner.name!r}'s catalog "
             f"({problem or sorted(catalog)[:6]}); set `instance_type` on your test class")

    def test_render_is_stable_and_named_after_requests(self, provisioner: Provisioner,
                                                       restarted_provisioner: Provisioner | None) -> None:
        requests = self.plan(provisioner)
        first = provisioner.desired_objects(requests=requests)
        rule("stable-names", first == provisioner.desired_objects(requests=requests),
             "desired_objects gave different objects for the same requests")
        if restarted_provisioner is not None:
            rule("stable-names", first == restarted_provisioner.desired_objects(requests=requests),
                 "a restarted provisioner renders other objects for the same requests")
        names = set(_object_names(first))
        per_request = [r.name for r in requests if r.name in names]
        rule("stable-names", not first or len(per_request) in (0, len(requests)),
             f"objects {sorted(names)} name only some of the requests {[r.name for r in requests]}")

    def test_desired_objects_are_serialisable(self, provisioner: Provisioner) -> None:
        requests = self.plan(provisioner)
        objects = provisioner.desired_objects(requests=requests)
        assert objects == provisioner.desired_objects(requests=requests)
        json.dumps(objects)  # what `kaito render` prints must be plain data
        for obj in objects:
            assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj

    def test_objects_carry_the_request_labels(self, provisioner: Provisioner) -> None:
        requests = self.plan(provisioner)
        objects = provisioner.desired_objects(requests=requests)
        for req in requests:
            owner = [o for o in objects if _object_names([o]) == [req.name]] or objects
            carried = {}
            for o in owner:
                carried.update(_labels_in(o))
            missing = {k: v for k, v in req.labels.items() if carried.get(k) != v}
            rule("labels", not missing, f"node request {req.name!r}: its objects lack the labels {missing} "
                 "(the pods' node affinity selects nodes by them)")

    def test_template_workspace_is_provisioned(self, provisioner: Provisioner, harness: Harness) -> None:
        from kaito_core.plugins import get_registry
        from kaito_core.reconcile import plan_workspace

        count = self.node_count + 1
        ws = template_workspace("custom", "team-a", self.instance_type, count)
        try:
            p = plan_workspace(ws, registry=get_registry(), provisioner=provisioner,
                               settings=harness.context().settings)
        except Exception as exc:  # noqa: BLE001 - the planner must never raise; say so
            rule("template", False, f"planning an inference.template Workspace raised {type(exc).__name__}: {exc}")
            return
        rule("template", not p.errors, f"an inference.template Workspace (resource.count {count}) did not plan: "
             f"{p.errors}")
        rule("count", len(p.node_requests) == count, f"{len(p.node_requests)} requests for resource.count {count}")
        states = provisioner.ensure(requests=p.node_requests, ctx=harness.context())
        rule("count", len(states) == count and len(harness.backing(ws)) == count,
             f"resource.count {count}: ensure answered {len(states)} state(s) and made "
             f"{len(harness.backing(ws))} backing resource(s)")

    # -- I/O -----------------------------------------------------------------------------

    def test_observe_before_ensure_is_not_ready(self, provisioner: Provisioner, harness: Harness) -> None:
        states = provisioner.observe(requests=self.plan(provisioner), ctx=harness.context())
        assert len(states) == self.node_count
        assert not any(s.ready for s in states)
        assert not any(s.failed for s in states), "nothing was asked for yet: nothing can have failed"

    def test_ensure_creates_one_backing_resource_per_request(self, provisioner: Provisioner,
                                                             harness: Harness) -> None:
        ws, requests = self.workspace(), self.plan(provisioner)
        states = provisioner.ensure(requests=requests, ctx=harness.context())
        assert {s.name for s in states} == {r.name for r in requests}
        assert not any(s.ready for s in states), "a node cannot be ready the moment it is asked for"
        rule("count", len(harness.backing(ws)) == self.node_count,
             f"{self.node_count} requests made {len(harness.backing(ws))} backing resource(s)")

    def test_render_equals_what_ensure_creates(self, provisioner: Provisioner, harness: Harness) -> None:
        ws, requests = self.workspace(), self.plan(provisioner)
        rendered = _object_names(provisioner.desired_objects(requests=requests))
        provisioner.ensure(requests=requests, ctx=harness.context())
        created = sorted(harness.backing(ws))
        rule("render-equals-ensure", not rendered or created == rendered,
             f"kaito render shows {rendered}, ensure created {created}")

    def test_ensure_is_idempotent(self, provisioner: Provisioner, harness: Harness,
                                  restarted_provisioner: Provisioner | None) -> None:
        ws, requests = self.workspace(), self.plan(provisioner)
        ctx = harness.context()
        provisioner.ensure(requests=requests, ctx=ctx)
        created = sorted(harness.backing(ws))
        provisioner.ensure(requests=requests, ctx=ctx)
        provisioner.ensure(requests=self.plan(provisioner), ctx=harness.context())
        assert sorted(harness.backing(ws)) == created, "a second ensure must adopt, never duplicate"
        if restarted_provisioner is not None:
            assert restarted_provisioner is not provisioner, "the restarted provisioner must be a new instance"
            assert [r.name for r in self.plan(restarted_provisioner)] == [r.name for r in requests]
            restarted_provisioner.ensure(requests=self.plan(restarted_provisioner), ctx=harness.context())
            assert sorted(harness.backing(ws)) == created, "a restarted operator must adopt, never duplicate"

    def test_observe_counts_ready_nodes(self, provisioner: Provisioner, harness: Harness) -> None:
        requests = self.plan(provisioner)
        ctx = harness.context()
        provisioner.ensure(requests=requests, ctx=ctx)
        harness.make_ready(requests[0])
        states = _by_name(provisioner.observe(requests=requests, ctx=ctx))
        assert states[requests[0].name].ready
        assert sum(s.ready for s in states.values()) == 1
        for req in requests[1:]:
            harness.make_ready(req)
        states = _by_name(provisioner.observe(requests=requests, ctx=ctx))
        assert all(states[r.name].ready for r in requests)
        assert not any(s.failed for s in states.values())

    def test_failure_becomes_a_reason(self, provisioner: Provisioner, harness: Harness) -> None:
        ws, requests = self.workspace(), self.plan(provisioner)
        ctx = harness.context()
        provisioner.ensure(requests=requests, ctx=ctx)
        expected = harness.fail(requests[0])
        states = _by_name(provisioner.observe(requests=requests, ctx=ctx))
        bad = states[requests[0].name]
        assert bad.failed and not bad.ready
        assert bad.reason == expected, f"reason {bad.reason!r}, expected {expected!r}"
        assert bad.reason and CAMEL_CASE_REASON.fullmatch(bad.reason), f"{bad.reason!r} is not a CamelCase reason"
        assert bad.message, "a failure needs the provider's words in `message`"
        assert not any(states[r.name].failed for r in requests[1:]), "one failure must not taint the others"
        # a retry after a failure must not make a second node for the same request
        provisioner.ensure(requests=requests, ctx=ctx)
        assert len(harness.backing(ws)) == self.node_count

    def test_release_removes_only_this_workspace(self, provisioner: Provisioner, harness: Harness) -> None:
        mine, theirs = self.workspace("mine"), self.workspace("theirs")
        ctx = harness.context()
        provisioner.ensure(requests=self.plan(provisioner, mine), ctx=ctx)
        provisioner.ensure(requests=self.plan(provisioner, theirs), ctx=ctx)
        kept = sorted(harness.backing(theirs))
        provisioner.release(workspace=mine, ctx=ctx)
        assert harness.backing(mine) == []
        assert sorted(harness.backing(theirs)) == kept
        provisioner.release(workspace=mine, ctx=ctx)  # a second release is a no-op, not an error
        states = provisioner.observe(requests=self.plan(provisioner, mine), ctx=ctx)
        assert not any(s.ready for s in states)
