"""`helm lint --strict` and `helm template` for every provisioner, with and without cert-manager;
every rendered object validated against the Kubernetes 1.30 and 1.35 schemas (strict)."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest

from tests.chart.conftest import AKS, CHART, one

K8S_VERSIONS = ["1.30", "1.35"]
# Kinds that are not built into Kubernetes: their CRDs belong to cert-manager and the Prometheus
# operator. Schema validation is skipped for exactly these; the tests assert they are rendered.
CUSTOM_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate"),
                ("monitoring.coreos.com/v1", "ServiceMonitor")}
PROVISIONERS = {"karpenter": {"provisioner": "karpenter"}, "aks": AKS, "byo": {"provisioner": "byo"}}
BASE_KINDS = {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
              "Deployment", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}


def combo(provisioner: str, cert_manager: bool, service_monitor: bool = False) -> dict:
    values = dict(PROVISIONERS[provisioner])
    values["webhook"] = {"certManager": {"enabled": cert_manager}}
    values["metrics"] = {"serviceMonitor": {"enabled": service_monitor}}
    return values


COMBOS = [(p, cm) for p in PROVISIONERS for cm in (False, True)]


def test_helm_lint_strict(helm):
    for values in ([], ["--set", "provisioner=byo", "--set", "webhook.certManager.enabled=true"]):
        proc = subprocess.run([helm, "lint", "--strict", str(CHART), *values], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("provisioner,cert_manager", COMBOS,
                         ids=[f"{p}-{'certmanager' if cm else 'selfsigned'}" for p, cm in COMBOS])
def test_every_object_validates(render, provisioner, cert_manager):
    objects = render(combo(provisioner, cert_manager, service_monitor=cert_manager))
    kinds = {o["kind"] for o in objects}
    expected = set(BASE_KINDS)
    if cert_manager:
        expected |= {"Issuer", "Certificate", "ServiceMonitor"}
    else:
        expected |= {"Secret"}
    assert kinds == expected
    validated = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            assert obj["metadata"]["namespace"] == "kaito-system"
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: "
                            f"{exc.message} at {list(exc.path)}")
        validated += 1
    assert validated == len(objects) - len(kinds & {"Issuer", "Certificate", "ServiceMonitor"})


def test_validation_catches_a_broken_object(render):
    # The check above can fail: a field Kubernetes does not know is rejected in strict mode.
    deployment = one(render(), "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.35", strict=True)


def test_crd_is_the_generated_workspace_crd(render):
    crd = one(render(), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "workspaces.kaito.sh"
    assert crd["spec"]["group"] == "kaito.sh"
    # Karpenter's NodeClaim CRD ships with Karpenter, not here.
    assert [o for o in render() if o["kind"] == "CustomResourceDefinition"] == [crd]


def test_service_monitor_selects_the_metrics_service(render):
    objects = render(combo("karpenter", False, service_monitor=True))
    monitor = one(objects, "ServiceMonitor")
    services = [s for s in objects if s["kind"] == "Service"
                and monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert len(services) == 1
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert services[0]["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}


def test_metrics_off_renders_no_metrics_service(render):
    objects = render({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    assert not [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert [s["metadata"]["name"] for s in objects if s["kind"] == "Service"] == ["kaito-webhook"]
