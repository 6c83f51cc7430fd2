"""The conformance suite catches broken provisioners (and passes a correct one).

A small reference provisioner (one ConfigMap per node request) is run through every test of
:class:`ProvisionerConformance`, once correct and once with each defect a real plugin could
have; each defect must make the suite fail where it should, with a message naming the rule.
"""

import inspect
import uuid

import pytest

from kaito_core.testing import FakeKube
from kaito_core.testing.conformance import ProvisionerConformance
from kaito_core.types import NodeState, ProvisionerContext


class Reference:
    name = "reference"
    cloud = "azure"

    def __init__(self, defect=None):
        self.defect = defect
        self.made = set()  # "memory_only" trusts this instead of the API: a restart forgets it

    def desired_objects(self, *, requests):
        extra = {"set": {1}} if self.defect == "not_plain_data" else {}
        if self.defect == "ignores_count":
            requests = requests[:1]  # e.g. reads a node count of its own instead of the requests
        out = []
        for r in requests:
            if self.defect == "crashes_on_template" and r.disk_gib <= 80:
                # a plugin that still reads the preset's sizing, absent for a template Workspace
                raise AttributeError("'NoneType' object has no attribute 'node_count'")
            labels = {"ws": r.workspace} if self.defect == "drops_labels" else {**dict(r.labels), "ws": r.workspace}
            name = f"{r.name}-{uuid.uuid4().hex[:4]}" if self.defect == "unstable_names" else r.name
            out.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "namespace": r.namespace, "labels": labels},
                        "data": {"index": str(r.index)}, **extra})
        return out

    def ensure(self, *, requests, ctx):
        objects = self.desired_objects(requests=requests)
        if self.defect == "render_differs":
            objects += [dict(objects[0], metadata={**objects[0]["metadata"], "name": objects[0]["metadata"]["name"]
                                                   + "-spare"})]
        for obj in objects:
            if self.defect == "duplicates":
                obj["metadata"]["name"] += uuid.uuid4().hex[:4]
            elif self.defect == "memory_only":
                if obj["metadata"]["name"] in self.made:
                    continue
                self.made.add(obj["metadata"]["name"])
                obj["metadata"]["name"] += "-" + uuid.uuid4().hex[:4]  # e.g. a cloud that names VMs itself
            elif ctx.kube.get(api_version="v1", kind="ConfigMap", name=obj["metadata"]["name"],
                              namespace=obj["metadata"]["namespace"]):
                continue
            ctx.kube.create(obj)
        return self.observe(requests=requests, ctx=ctx)

    def observe(self, *, requests, ctx):
        out = []
        for r in requests:
            obj = ctx.kube.get(api_version="v1", kind="ConfigMap", name=r.name, namespace=r.namespace)
            phase = ((obj or {}).get("status") or {}).get("phase")
            if self.defect == "ready_at_once" and obj is not None:
                phase = "Up"
            if phase == "Up":
                out.append(NodeState(name=r.name, ready=True))
            elif phase == "Broken" and self.defect != "hides_failures":
                reason = "out of quota" if self.defect == "prose_reason" else "OutOfQuota"
                message = "" if self.defect == "no_message" else "no quota left"
                out.append(NodeState(name=r.name, ready=False, failed=True, reason=reason, message=message))
            else:
                out.append(NodeState(name=r.name, ready=False))
        return out

    def release(self, *, workspace, ctx):
        labels = None if self.defect == "release_all" else {"ws": workspace.metadata.name}
        found = ctx.kube.list(api_version="v1", kind="ConfigMap", labels=labels)
        if self.defect == "release_twice_fails" and not found:
            raise RuntimeError("nothing to release")
        for obj in found:
            ctx.kube.delete(api_version="v1", kind="ConfigMap", name=obj["metadata"]["name"],
                            namespace=obj["metadata"]["namespace"])


class Harness:
    def __init__(self):
        self.kube = FakeKube()

    def context(self):
        return ProvisionerContext(kube=self.kube)

    def backing(self, workspace):
        return self.kube.names(api_version="v1", kind="ConfigMap", labels={"ws": workspace.metadata.name})

    def _status(self, request, phase):
        self.kube.set_status(api_version="v1", kind="ConfigMap", name=request.name, namespace=request.namespace,
                             status={"phase": phase})

    def make_ready(self, request):
        self._status(request, "Up")

    def fail(self, request):
        self._status(request, "Broken")
        return "OutOfQuota"


SUITE = sorted(n for n in dir(ProvisionerConformance) if n.startswith("test_"))


def run_suite(provisioner, messages=False):
    """Every suite test on a fresh harness; the names of the tests that failed (with
    ``messages``: name -> failure text)."""
    failed = {}
    suite = ProvisionerConformance()
    for name in SUITE:
        method = getattr(suite, name)
        kwargs = {"provisioner": provisioner, "harness": Harness(),
                  "restarted_provisioner": Reference(provisioner.defect)}
        params = inspect.signature(method).parameters
        try:
            method(**{k: v for k, v in kwargs.items() if k in params})
        except (AssertionError, pytest.fail.Exception, Exception) as exc:  # noqa: BLE001
            failed[name] = str(exc)
    return failed if messages else list(failed)


def test_a_correct_provisioner_passes_everything():
    assert len(SUITE) >= 8
    assert run_suite(Reference()) == []


@pytest.mark.parametrize("defect, caught_by", [
    ("unstable_names", "test_render_is_stable_and_named_after_requests"),
    ("ignores_count", "test_ensure_creates_one_backing_resource_per_request"),
    ("ignores_count", "test_template_workspace_is_provisioned"),
    ("drops_labels", "test_objects_carry_the_request_labels"),
    ("crashes_on_template", "test_template_workspace_is_provisioned"),
    ("render_differs", "test_render_equals_what_ensure_creates"),
    ("not_plain_data", "test_desired_objects_are_serialisable"),
    ("duplicates", "test_ensure_is_idempotent"),
    ("memory_only", "test_ensure_is_idempotent"),
    ("ready_at_once", "test_ensure_creates_one_backing_resource_per_request"),
    ("hides_failures", "test_failure_becomes_a_reason"),
    ("prose_reason", "test_failure_becomes_a_reason"),
    ("no_message", "test_failure_becomes_a_reason"),
    ("release_all", "test_release_removes_only_this_workspace"),
    ("release_twice_fails", "test_release_removes_only_this_workspace"),
])
def test_each_defect_is_caught(defect, caught_by):
    assert caught_by in run_suite(Reference(defect))


@pytest.mark.parametrize("defect, rule", [("ignores_count", "count"), ("drops_labels", "labels"),
                                          ("unstable_names", "stable-names"), ("crashes_on_template", "template"),
                                          ("render_differs", "render-equals-ensure")])
def test_the_failure_names_the_rule(defect, rule):
    messages = run_suite(Reference(defect), messages=True)
    assert any(f"conformance rule '{rule}'" in m for m in messages.values()), messages


def test_a_subclass_without_fixtures_is_told_what_to_add():
    suite = ProvisionerConformance()
    with pytest.raises(pytest.fail.Exception, match="must define a `provisioner` fixture"):
        ProvisionerConformance.provisioner.__wrapped__(suite)
