"""The operator against Karpenter's real CRDs (tests/data/reference/crds): the NodeClaims it
creates pass their structural schema, and Karpenter's status writes survive pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_core.testing.emulator import Emulator
from tests.emulator.conftest import NAMESPACES, wait_for
from tests.emulator.operator_kit import Cluster, Operator, workspace_body

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference" / "crds"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    crds = [yaml.safe_load((REFERENCE / f"karpenter.sh_{n}.yaml").read_text()) for n in ("nodeclaims", "nodepools")]
    with Emulator(crds=crds, namespaces=NAMESPACES) as emu:
        op = Operator(emu.url, tmp_path_factory.mktemp("op") / "operator.log", env={"KAITO_RESYNC_SECONDS": "4"})
        yield emu, Cluster(emu.url), op
        op.stop()


def test_node_claims_pass_karpenters_schema_and_workspace_gets_ready(setup):
    _, cluster, op = setup
    cluster.kube.create(workspace_body("real", "crd1"))
    status = cluster.make_ready("real", "crd1")
    assert status["workerNodes"] == ["node-real"]
    claim = cluster.claims("real")[0]
    assert claim["spec"]["nodeClassRef"]["kind"] and claim["status"]["nodeName"] == "node-real"
    assert "HTTP 422" not in op.text()


def test_steady_state_writes_nothing(setup):
    """The stored status is what the operator wrote (nothing pruned by the CRD schema), so a
    steady Workspace costs no writes: resync passes (every 4 s) find nothing to change."""
    import time

    emu, cluster, _ = setup
    cluster.kube.create(workspace_body("steady", "crd2"))
    cluster.make_ready("steady", "crd2")
    time.sleep(1)  # the write that made it Ready has landed

    def writes() -> int:
        return sum(n for (verb, _group, _res, agent), n in emu.calls.items()
                   if verb in ("create", "update", "patch", "delete") and agent.startswith(("kopf/", "kaito-operator"))
                   and _res != "events")

    before = writes()
    time.sleep(9)  # two resync passes
    assert writes() == before


def test_a_running_tuning_job_costs_no_writes(setup):
    """The Job comes back defaulted (its generated controller-uid selector and template labels,
    backoffLimit, pod defaults): resync passes must not take that for drift and write to it."""
    import time

    emu, cluster, _ = setup
    body = workspace_body("tune", "crd4")
    body.pop("inference")
    body["tuning"] = {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                      "input": {"urls": ["https://example.com/data.parquet"]},
                      "output": {"image": "registry.example.com/adapters/phi:1", "imagePushSecret": "push"}}
    cluster.kube.create(body)
    claim = wait_for("the tuning NodeClaim", lambda: cluster.claims("tune"))[0]
    cluster.controllers.launch(claim, "node-tune")
    job = wait_for("the Job", lambda: cluster.get("batch/v1", "Job", "tune", "crd4"))
    assert job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"] == job["metadata"]["uid"]
    time.sleep(1)

    def writes() -> int:
        return sum(n for (verb, _group, res, agent), n in emu.calls.items()
                   if verb in ("create", "update", "patch", "delete") and agent.startswith(("kopf/", "kaito-operator"))
                   and res in ("jobs", "configmaps", "services", "nodeclaims"))

    before = writes()
    time.sleep(9)  # two resync passes
    assert writes() == before


def test_node_pools_pass_karpenters_schema_and_rules(tmp_path):
    crds = [yaml.safe_load((REFERENCE / f"karpenter.sh_{n}.yaml").read_text()) for n in ("nodeclaims", "nodepools")]
    with Emulator(crds=crds, namespaces=NAMESPACES) as emu:
        op = Operator(emu.url, tmp_path / "operator.log", env={"KARPENTER_MODE": "nodepool"})
        try:
            cluster = Cluster(emu.url)
            cluster.kube.create(workspace_body("pooled", "crd3"))
            from tests.emulator.conftest import wait_for

            pools = wait_for("a NodePool", lambda: cluster.kube.list(api_version="karpenter.sh/v1", kind="NodePool"))
            assert pools[0]["spec"]["template"]["spec"]["nodeClassRef"]["kind"]
            assert "HTTP 422" not in op.text()
        finally:
            op.stop()
