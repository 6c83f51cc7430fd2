"""The operator Deployment: the settings the operator and provisioners read from its environment,
least-privilege security contexts, image references, plugin checks and scheduling values."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kaito_core import images
from kaito_core.operator.settings import Settings
from kaito_core.plugins import DISABLE_ENV
from tests.chart.conftest import AKS, one

# KAITO_* names the chart sets that no settings module reads yet (the operator's metrics and
# health servers); kept explicit so a typo in any other name fails below.
PENDING_ENV: set[str] = set()


def pod(objects):
    return one(objects, "Deployment")["spec"]["template"]


def env_of(container) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_operator_reads_its_settings_from_the_rendered_env(render):
    objects = render({"provisioner": "byo", "logLevel": "debug", "watchNamespaces": ["team-a", "team-b"],
                      "webhook": {"port": 9555}})
    container = pod(objects)["spec"]["containers"][0]
    assert container["command"] == ["kaito", "operator"]
    settings = Settings.from_env(env_of(container))
    assert settings.provisioner == "byo"
    assert settings.log_level == "DEBUG"
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.webhook is True and settings.webhook_port == 9555 and not settings.webhook_managed
    probe = container["livenessProbe"]["httpGet"]
    health = next(p for p in container["ports"] if p["name"] == probe["port"])
    assert env_of(container)["KAITO_LIVENESS"] == f"http://0.0.0.0:{health['containerPort']}{probe['path']}"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert settings.webhook_cert == f"{mounts['webhook-cert']}/tls.crt"
    assert settings.webhook_key == f"{mounts['webhook-cert']}/tls.key"


@pytest.mark.parametrize("values", [{}, AKS, {"provisioner": "byo", "plugins": {"disabled": ["falcon"]}}],
                         ids=["karpenter", "aks", "byo"])
def test_every_kaito_variable_is_one_the_code_reads(render, values):
    # KAITO_LIVENESS is a `kaito operator` flag's variable (kopf's liveness endpoint).
    known = set(Settings.ENV.values()) | {"KAITO_REGISTRY", "KAITO_LIVENESS", DISABLE_ENV} | PENDING_ENV
    env = env_of(pod(render(values))["spec"]["containers"][0])
    unknown = {k for k in env if k.startswith("KAITO_")} - known
    assert not unknown, f"the chart sets variables no code reads: {sorted(unknown)}"


def test_karpenter_settings_from_the_rendered_env(render):
    from kaito_provisioner_karpenter.settings import KarpenterSettings

    env = env_of(pod(render({"cloud": "aws", "karpenter": {"nodeClass": {"name": "gpu"}}}))["spec"]["containers"][0])
    settings = KarpenterSettings.from_mapping(environ=env)
    assert settings.node_class_ref == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"}
    assert not any(k.startswith(("ARM_", "AZURE_")) for k in env), "no Azure settings on AWS"


def test_aks_settings_from_the_rendered_env(render):
    aks = pytest.importorskip("kaito_provisioner_aks.settings", reason="provisioners/aks not installed: make setup")
    env = env_of(pod(render({**AKS, "azure": {**AKS["azure"], "osSku": "AzureLinux"}}))["spec"]["containers"][0])
    settings = aks.AKSSettings.from_mapping(environ=env)
    settings.require_cluster()
    assert (settings.subscription_id, settings.resource_group, settings.cluster_name, settings.location,
            settings.os_sku) == ("8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8", "rg-kaito", "kaito-demo", "eastus",
                                 "AzureLinux")
    assert Settings.from_env(env).provisioner == "aks"


def test_security_contexts_are_least_privilege(render):
    spec = pod(render({"plugins": {"required": ["phi3"]}}))["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = spec["containers"] + spec["initContainers"]
    assert len(containers) == 2
    for c in containers:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True and sc["privileged"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
        assert c["resources"]["limits"]["memory"], c["name"]
    # With a read-only root filesystem, Python and kopf write only to the /tmp volume.
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert "/tmp" in mounts and env_of(spec["containers"][0])["HOME"] == "/tmp"


def test_image_references(render):
    objects = render()
    container = pod(objects)["spec"]["containers"][0]
    assert container["image"] == images.operator_image()
    assert env_of(container)["KAITO_REGISTRY"] == images.DEFAULT_REGISTRY
    digest = "sha256:" + "ab" * 32
    custom = render({"image": {"registry": "myacr.azurecr.io/kaito/", "tag": "0.1.0-rc1", "digest": digest},
                     "workloadRegistry": "mirror.example.com/kaito", "imagePullSecrets": [{"name": "acr"}]})
    spec = pod(custom)["spec"]
    assert spec["containers"][0]["image"] == f"myacr.azurecr.io/kaito/operator@{digest}"
    assert env_of(spec["containers"][0])["KAITO_REGISTRY"] == "mirror.example.com/kaito"
    assert spec["imagePullSecrets"] == [{"name": "acr"}]
    tagged = pod(render({"image": {"tag": "0.1.0-rc1"}}))["spec"]["containers"][0]["image"]
    assert tagged == f"{images.DEFAULT_REGISTRY}/operator:0.1.0-rc1"


def _check_plugins_script(objects) -> list[str]:
    (init,) = pod(objects)["spec"]["initContainers"]
    assert init["name"] == "check-plugins" and init["image"] == pod(objects)["spec"]["containers"][0]["image"]
    assert init["command"][:2] == ["python", "-c"]
    return init["command"][2:]


def test_admin_policy_values_reach_the_operator(render):
    """Finding 5/9: who may choose what is the admin's (chart values -> KAITO_* -> Settings)."""
    default = Settings.from_env(env_of(pod(render())["spec"]["containers"][0]))
    assert default.allowed_provisioners == () and default.drift == "revert"
    assert not (default.allow_host_path or default.allow_templates or default.allow_local_weights)
    objects = render({"allowedProvisioners": ["byo", "aks"], "drift": "report",
                      "admission": {"allowHostPath": True, "allowTemplates": True, "allowLocalWeights": True}})
    settings = Settings.from_env(env_of(pod(objects)["spec"]["containers"][0]))
    assert settings.allowed_provisioners == ("byo", "aks") and settings.drift == "report"
    assert settings.allow_host_path and settings.allow_templates and settings.allow_local_weights


def test_required_plugins_check_passes_and_fails_for_real(render):
    # The init container's script runs here against the installed distributions.
    ok = _check_plugins_script(render({"plugins": {"required": ["phi3", "llama", "karpenter"]}}))
    proc = subprocess.run([sys.executable, "-c", *ok], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "phi3, llama, karpenter" in proc.stdout
    missing = _check_plugins_script(render({"plugins": {"required": ["phi3", "notaplugin"]}}))
    proc = subprocess.run([sys.executable, "-c", *missing], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "['notaplugin'] not installed" in proc.stderr and "EXTRA_PLUGINS" in proc.stderr
    assert "initContainers" not in pod(render())["spec"]


def test_disabled_plugins_and_workload_identity(render):
    objects = render({**AKS, "plugins": {"disabled": ["falcon", "llama"]},
                      "azure": {**AKS["azure"], "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                                "workloadIdentity": {"enabled": True,
                                                     "clientId": "0f6fbc5a-bf15-4e6a-9c3a-5d1a7e5b0c11"}}})
    template = pod(objects)
    assert env_of(template["spec"]["containers"][0])[DISABLE_ENV] == "falcon,llama"
    assert template["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    annotations = one(objects, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["azure.workload.identity/client-id"] == "0f6fbc5a-bf15-4e6a-9c3a-5d1a7e5b0c11"
    assert annotations["azure.workload.identity/tenant-id"] == "72f988bf-86f1-41af-91ab-2d7cd011db47"


def test_scheduling_values_pass_through(render):
    tolerations = [{"key": "CriticalAddonsOnly", "operator": "Exists", "effect": "NoSchedule"}]
    spec = pod(render({"nodeSelector": {"agentpool": "system"}, "tolerations": tolerations,
                       "priorityClassName": "system-cluster-critical",
                       "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}}}))[
        "spec"]
    # Helm merges maps with the defaults: the linux selector stays.
    assert spec["nodeSelector"] == {"agentpool": "system", "kubernetes.io/os": "linux"}
    assert spec["tolerations"] == tolerations
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["containers"][0]["resources"]["limits"] == {"memory": "1Gi"}
    deployment_strategy = one(render(), "Deployment")["spec"]
    assert deployment_strategy["replicas"] == 1 and deployment_strategy["strategy"] == {"type": "Recreate"}
