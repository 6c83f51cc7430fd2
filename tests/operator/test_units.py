"""Settings, the REST client against the emulator, the BYO provisioner, RBAC truthfulness."""

from __future__ import annotations

import ast
import pathlib

import pytest

from kaito_core.builtins.byo import PROVISIONER as BYO, select_nodes
from kaito_core.operator import rbac
from kaito_core.operator.kube import ApiError, KubeClient, plural, resource_path
from kaito_core.operator.settings import Settings, SettingsError
from kaito_core.reconcile import fake_node
from kaito_core.types import NodeRequest, ProvisionerContext


def test_settings_from_env_and_errors_name_the_variable():
    s = Settings.from_env({"KAITO_RESYNC_SECONDS": "2.5", "KAITO_NAMESPACES": "a, b", "KAITO_WEBHOOK": "true",
                           "ARM_SUBSCRIPTION_ID": "sub", "HOME": "/root"})
    assert s.resync_seconds == 2.5 and s.namespaces == ("a", "b") and s.webhook is True
    assert s.provisioner_settings == {"ARM_SUBSCRIPTION_ID": "sub"}
    with pytest.raises(SettingsError, match="KAITO_WORKERS is 'many'"):
        Settings.from_env({"KAITO_WORKERS": "many"})
    with pytest.raises(SettingsError, match="KAITO_WEBHOOK is 'maybe'"):
        Settings.from_env({"KAITO_WEBHOOK": "maybe"})
    with pytest.raises(SettingsError, match="KAITO_WEBHOOK_CERT and KAITO_WEBHOOK_KEY"):
        Settings.from_env({"KAITO_WEBHOOK_CERT": "/x.crt"})
    assert Settings.from_env(s.to_env()).describe() == s.describe()


def test_cli_flags_override_env():
    from kaito_core.cli import build_parser
    from kaito_core.cli.cmd_operator import effective_env

    args = build_parser().parse_args(["operator", "--resync-seconds", "7", "--webhook", "--provisioner", "byo"])
    env = effective_env(args, {"KAITO_RESYNC_SECONDS": "3"})
    s = Settings.from_env(env)
    assert (s.resync_seconds, s.webhook, s.provisioner) == (7.0, True, "byo")


def test_paths_and_plurals():
    assert plural("NodeClaim") == "nodeclaims" and plural("NodeClass") == "nodeclasses"
    assert plural("Policy") == "policies" and plural("Endpoints") == "endpoints"
    assert resource_path("v1", "Pod", "ns", "p") == "/api/v1/namespaces/ns/pods/p"
    assert resource_path("karpenter.sh/v1", "NodeClaim", None, "x") == "/apis/karpenter.sh/v1/nodeclaims/x"


def test_client_against_emulator(emulator):
    kube = KubeClient(emulator.url)
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "namespace": "u", "labels": {"a": "1"}}}
    kube.create(obj)
    with pytest.raises(ApiError) as err:
        kube.create(obj)
    assert err.value.status == 409
    assert kube.get(api_version="v1", kind="ConfigMap", name="c1", namespace="u")["metadata"]["labels"] == {"a": "1"}
    assert kube.get(api_version="v1", kind="ConfigMap", name="nope", namespace="u") is None
    assert [o["metadata"]["name"] for o in kube.list(api_version="v1", kind="ConfigMap", namespace="u",
                                                     labels={"a": "1"})] == ["c1"]
    assert kube.list(api_version="v1", kind="ConfigMap", namespace="u", labels={"a": "2"}) == []
    kube.patch(api_version="v1", kind="ConfigMap", name="c1", namespace="u", patch={"data": {"k": "v"}})
    assert kube.get(api_version="v1", kind="ConfigMap", name="c1", namespace="u")["data"] == {"k": "v"}
    assert kube.delete(api_version="v1", kind="ConfigMap", name="c1", namespace="u") is True
    assert kube.delete(api_version="v1", kind="ConfigMap", name="c1", namespace="u") is False
    with pytest.raises(ApiError) as err:  # a resource the server does not serve is not "absent"
        kube.list(api_version="example.com/v1", kind="Widget")
    assert err.value.status == 404


def test_operator_refusals_keep_only_what_a_working_operator_is_never_answered(emulator):
    """The check the system tests end with: a schema refusal (422) of an operator's request is
    reported; a 404 GET, a 409 create and the test's own requests (another User-Agent) are not."""
    from tests.operator.conftest import operator_refusals

    kube = KubeClient(emulator.url)  # User-Agent kaito-operator, as the operator's
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "refused", "namespace": "rf"},
          "resource": {"count": "two"}, "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}
    before = len(operator_refusals(emulator))
    assert kube.get(api_version="v1", kind="ConfigMap", name="absent", namespace="rf") is None
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "twice", "namespace": "rf"}}
    kube.create(cm)
    with pytest.raises(ApiError):
        kube.create(cm)
    other = KubeClient(emulator.url)
    other.headers["User-Agent"] = "kaito-tests"
    with pytest.raises(ApiError):
        other.create(ws)
    assert len(operator_refusals(emulator)) == before
    with pytest.raises(ApiError) as err:
        kube.create(ws)
    assert err.value.status == 422
    new = operator_refusals(emulator)[before:]
    assert [(r[0], r[3], r[4]) for r in new] == [("POST", 422, "Invalid")] and "resource.count" in new[0][5]
    # a field the CRD prunes: accepted, and lost on a cluster (the 299 warning says so)
    kube.create({**ws, "metadata": {"name": "pruned", "namespace": "rf"}, "madeUp": True,
                 "resource": {"count": 1, "labelSelector": {"matchLabels": {"a": "b"}}}})
    assert [(r[3], r[5]) for r in operator_refusals(emulator)[before + 1:]] == [(299, 'unknown field "madeUp"')]


def test_byo_selects_ready_gpu_nodes_preferred_first(emulator):
    kube = KubeClient(emulator.url)
    for name, gpus, ready, labels in (("b-node", 1, True, {"pool": "gpu"}), ("a-node", 1, True, {"pool": "gpu"}),
                                      ("c-node", 0, True, {"pool": "gpu"}), ("d-node", 1, False, {"pool": "gpu"}),
                                      ("e-node", 1, True, {"pool": "cpu"})):
        kube.create(fake_node(name, gpus, labels=labels, ready=ready))
    reqs = [NodeRequest(name=f"ws{i}", workspace="w", namespace="n", instance_type="", index=i,
                        labels={"kaito.sh/workspace": "w", "pool": "gpu"}, gpu_count=1) for i in range(3)]
    ctx = ProvisionerContext(kube=kube, settings={"workspace.labelSelector": '{"matchLabels": {"pool": "gpu"}}',
                                                  "workspace.preferredNodes": "b-node"})
    states = BYO.ensure(requests=reqs, ctx=ctx)
    assert [s.node_name for s in states[:2]] == ["b-node", "a-node"]
    assert states[2].ready is False and states[2].reason == "NoMatchingNodes"
    assert "c-node has 0 GPU(s)" in states[2].message and "d-node is not Ready" in states[2].message
    assert BYO.desired_objects(requests=reqs) == [] and BYO.release(workspace=None, ctx=ctx) is None


def test_byo_match_expressions():
    nodes = [fake_node("x", 1, labels={"zone": "1"}), fake_node("y", 1, labels={"zone": "2"})]
    usable, _ = select_nodes(nodes, {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["1"]}]},
                             [], 1)
    assert usable == ["y"]


# -- RBAC: every (group, resource, verb) the code uses is granted ------------------------------

# (the full comparison with the calls made is tests/operator/test_rbac_usage.py)
USED = [
    ("kaito.sh", "workspaces", v) for v in ("list", "watch", "patch")] + [
    ("kaito.sh", "workspaces/status", "patch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"), ("", "namespaces", "watch"),
    ("", "events", "create"),
    ("karpenter.sh", "nodeclaims", "create"), ("karpenter.sh", "nodeclaims", "delete"),
    ("karpenter.sh", "nodeclaims", "list"), ("", "nodes", "get"), ("", "nodes", "list"), ("", "pods", "list")]

KIND_RESOURCE = {"ConfigMap": ("", "configmaps"), "Service": ("", "services"), "StatefulSet": ("apps", "statefulsets"),
                 "Job": ("batch", "jobs"), "Pod": ("", "pods"), "Node": ("", "nodes"),
                 "NodeClaim": ("karpenter.sh", "nodeclaims"), "Workspace": ("kaito.sh", "workspaces")}
VERB = {"get": "get", "list": "list", "create": "create", "delete": "delete", "patch": "patch"}


@pytest.mark.parametrize("group,resource,verb", USED)
def test_rbac_grants(group, resource, verb):
    assert rbac.allows(group, resource, verb)


def test_rbac_covers_every_call_in_the_operator_code():
    """Scan kaito_core/operator/*.py for kube.<verb>(... kind="X") calls and check RULES."""
    root = pathlib.Path(rbac.__file__).parent
    found = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in VERB:
                kinds = [k.value.value for k in node.keywords if k.arg == "kind" and isinstance(k.value, ast.Constant)]
                for kind in kinds:
                    found.add((kind, node.func.attr))
    assert ("Node", "get") in found and ("Pod", "list") in found  # the scan sees the code
    for kind, verb in found:
        group, resource = KIND_RESOURCE[kind]
        assert rbac.allows(group, resource, VERB[verb]), (kind, verb)
    for kind in ("ConfigMap", "Service", "StatefulSet", "Job"):  # apply_object: create/patch/delete
        group, resource = KIND_RESOURCE[kind]
        assert all(rbac.allows(group, resource, v) for v in ("get", "create", "patch", "delete"))


class RbacKube:
    """The operator's client, refusing (like the API server would) any call RULES do not grant."""

    def __init__(self, kube):
        self.kube = kube
        self.used = set()

    def _check(self, api_version, kind, verb):
        group = api_version.split("/")[0] if "/" in api_version else ""
        self.used.add((group, plural(kind), verb))
        assert rbac.allows(group, plural(kind), verb), f"RBAC: {verb} {group}/{plural(kind)} is not in RULES"

    def get(self, *, api_version, kind, **kw):
        self._check(api_version, kind, "get")
        return self.kube.get(api_version=api_version, kind=kind, **kw)

    def list(self, *, api_version, kind, **kw):
        self._check(api_version, kind, "list")
        return self.kube.list(api_version=api_version, kind=kind, **kw)

    def create(self, obj):
        self._check(obj["apiVersion"], obj["kind"], "create")
        return self.kube.create(obj)

    def delete(self, *, api_version, kind, **kw):
        self._check(api_version, kind, "delete")
        return self.kube.delete(api_version=api_version, kind=kind, **kw)

    def patch(self, *, api_version, kind, **kw):
        self._check(api_version, kind, "patch")
        return self.kube.patch(api_version=api_version, kind=kind, **kw)


@pytest.mark.parametrize("mode", ["nodeclaim", "nodepool"])
def test_rbac_covers_the_karpenter_provisioner(emulator, mode):
    """A reconcile and a release with the karpenter plugin (both modes) under RULES."""
    from kaito_core.operator.apply import Reconciler
    from kaito_core.plugins import get_registry

    kube = RbacKube(KubeClient(emulator.url))
    settings = Settings(provisioner="karpenter", provisioner_settings={"KARPENTER_MODE": mode})
    rec = Reconciler(kube, get_registry(), settings)
    body = kube.kube.create({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": f"rbac-{mode}", "namespace": "rbac"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": mode}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}})
    outcome = rec.reconcile(body)
    assert outcome.plan is not None and not outcome.plan.errors
    rec.release(body)
    kinds = {r for _g, r, _v in kube.used}
    assert ("nodepools" if mode == "nodepool" else "nodeclaims") in kinds, kube.used
    if mode == "nodepool":
        assert ("karpenter.sh", "nodepools", "create") in kube.used
        assert ("karpenter.sh", "nodepools", "delete") in kube.used


def test_rbac_allows_every_watch():
    from kaito_core.operator.handlers import WATCHED

    for group, _version, resource in WATCHED:
        assert rbac.allows(group, resource, "list") and rbac.allows(group, resource, "watch"), resource


def test_metrics_port_setting():
    assert Settings.from_env({}).metrics_port == 8080
    assert Settings.from_env({"KAITO_METRICS_PORT": "0"}).metrics_port == 0
    with pytest.raises(SettingsError, match="KAITO_METRICS_PORT is 70000"):
        Settings.from_env({"KAITO_METRICS_PORT": "70000"})
    with pytest.raises(SettingsError, match="KAITO_METRICS_PORT is 'x'"):
        Settings.from_env({"KAITO_METRICS_PORT": "x"})


def test_reused_plan_follows_configmap_and_spec_edits(emulator):
    """The pre-observation plan is reused only while its inputs hash the same: editing the
    tuning ConfigMap (batch 1 -> 8) or the spec is planned afresh in the next pass."""
    from kaito_core.operator.apply import Reconciler
    from kaito_core.plugins import get_registry

    kube = KubeClient(emulator.url)
    ns = "memo"

    def cfg(batch: int) -> dict:
        return {"training_config.yaml": f"training_config:\n  TrainingArguments:\n    per_device_train_batch_size: {batch}\n"}

    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tc", "namespace": ns},
                 "data": cfg(1)})
    body = kube.create({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "memo-tune", "namespace": ns},
        "resource": {"instanceType": "Standard_NV36ads_A10_v5", "labelSelector": {"matchLabels": {"a": "m"}}},
        "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora", "config": "tc",
                   "input": {"urls": ["https://example.com/d.jsonl"]}, "output": {"volumeSource": {"emptyDir": {}}}}})
    rec = Reconciler(kube, get_registry(), Settings(provisioner="byo"))
    assert not rec.reconcile(body).plan.errors
    assert not rec.reconcile(body).plan.errors  # reused
    kube.patch(api_version="v1", kind="ConfigMap", name="tc", namespace=ns, patch={"data": cfg(8)})
    out = rec.reconcile(body)
    assert out.plan.errors and out.status["state"] == "Failed", out.status
    kube.patch(api_version="v1", kind="ConfigMap", name="tc", namespace=ns, patch={"data": cfg(1)})
    assert not rec.reconcile(body).plan.errors
    edited = {**body, "resource": {**body["resource"], "instanceType": "Standard_NC6s_v3"}}  # 16 GiB V100
    first = rec.reconcile(edited).plan
    assert first.instance_type == "Standard_NC6s_v3"
