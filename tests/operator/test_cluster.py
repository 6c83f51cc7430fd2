"""The same flow against a real cluster (kind, AKS) when KUBECONFIG is set; skipped otherwise.

Needs the Workspace CRD installed (``kaito crd | kubectl apply -f -``) and rights to create
Workspaces in the namespace ``kaito-test``. Uses the ``byo`` provisioner: nothing is bought.
"""

from __future__ import annotations

import os
import uuid

import pytest

from kaito_core.testing.emulator import start_operator, stop_operator
from kaito_core.operator.kube import KubeClient
from tests.operator.conftest import wait_for

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set")]
NS = "kaito-test"


@pytest.fixture()
def kube():
    import kopf

    info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    return KubeClient.from_connection_info(info)


def test_flow_on_a_real_cluster(kube, tmp_path):
    log = tmp_path / "operator.log"
    env = {"KAITO_KUBE_SERVER": "", "KAITO_PROVISIONER": "byo", "KAITO_RESYNC_SECONDS": "2"}
    proc = start_operator("", env=env, log_path=str(log))
    name = f"it-{uuid.uuid4().hex[:6]}"
    try:
        kube.create({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                     "metadata": {"name": name, "namespace": NS},
                     "resource": {"labelSelector": {"matchLabels": {"kaito.sh/test-node": name}}},
                     "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}})
        svc = wait_for("the Service", lambda: kube.get(api_version="v1", kind="Service", name=name, namespace=NS),
                       timeout=60)
        assert svc["spec"]["ports"][0]["port"] == 80
        # BYO reports no NodeClaimReady (as upstream): ResourceReady carries the reason
        cond = wait_for("ResourceReady", lambda: {c["type"]: c for c in (kube.get(
            api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS).get("status") or {}).get(
            "conditions") or []}.get("ResourceReady"), timeout=60)
        assert cond["status"] == "False" and cond["reason"] == "NoMatchingNodes"
    finally:
        kube.delete(api_version="kaito.sh/v1beta1", kind="Workspace", name=name, namespace=NS)
        wait_for("the Workspace to go", lambda: kube.get(api_version="kaito.sh/v1beta1", kind="Workspace",
                                                         name=name, namespace=NS) is None, timeout=60)
        stop_operator(proc)
