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

The suite checks what the operator relies on: deterministic, pure planning; ``ensure`` creates
exactly the requested nodes and never a second one (same object, or a fresh one after a restart
when the optional ``restarted_provisioner`` fixture gives one);
``observe`` counts ready nodes and turns backend failures into condition reasons a user can act
on; ``release`` removes everything of one Workspace and nothing of another, and may run twice.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, Sequence

import pytest

from kaito_core.testing.factories import make_requirement, make_workspace
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
        ws = workspace if workspace is not None else self.workspace()
        return list(provisioner.node_requests(workspace=ws, requirement=self.requirement()))

    # -- planning is pure ----------------------------------------------------------------

    def test_satisfies_protocol(self, provisioner: Provisioner) -> None:
        assert isinstance(provisioner, Provisioner), "the object lacks part of kaito_core.types.Provisioner"
        assert isinstance(provisioner.name, str) and DNS1123_LABEL.match(provisioner.name), provisioner.name
        if self.entry_point is not None:
            assert installed_provisioner(self.entry_point).name == provisioner.name

    def test_node_requests_are_deterministic(self, provisioner: Provisioner) -> None:
        first, again = self.plan(provisioner), self.plan(provisioner)
        assert first == again, "node_requests must give the same requests for the same Workspace"
        assert len(first) == self.node_count
        names = [r.name for r in first]
        assert len(set(names)) == len(names), f"request names must be unique: {names}"
        for index, req in enumerate(first):
            assert DNS1123_LABEL.match(req.name), f"{req.name!r} is not a DNS-1123 label"
            assert req.instance_type == self.instance_type
            assert req.workspace == "conformance" and req.namespace == "team-a"
            assert req.index == index
        other = self.plan(provisioner, self.workspace("other"))
        assert not {r.name for r in other} & set(names), "two Workspaces must never share a node name"

    def test_desired_objects_are_serialisable(self, provisioner: Provisioner) -> None:
        requests = self.plan(provisioner)
        objects = provisioner.desired_objects(requests=requests)
        assert objects == provisioner.desired_objects(requests=requests)
        json.dumps(objects)  # what `kaito render` prints must be plain data
        for obj in objects:
            assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), obj

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
        assert len(harness.backing(ws)) == self.node_count

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
        assert bad.reason and CAMEL_CASE_REASON.match(bad.reason), f"{bad.reason!r} is not a CamelCase reason"
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
