"""values.schema.json: wrong values fail at install with the field named; NOTES tell the next step."""

from __future__ import annotations

import re
import subprocess
import textwrap

import pytest
import yaml

from kaito_core.api.parse import parse_workspace
from kaito_core.api.validation import validate_workspace
from tests.chart.conftest import AKS, CHART, NAMESPACE, RELEASE

BAD = [
    ({"provisioner": "gke"}, "/provisioner", "karpenter"),
    ({"cloud": "gcp"}, "/cloud", "azure"),
    ({"provisioner": "aks"}, "/azure/subscriptionId", "minLength"),
    ({**AKS, "cloud": "aws"}, "/cloud", "azure"),
    ({"azure": {"subscriptionId": "not-a-guid"}}, "/azure/subscriptionId", ""),
    ({"logLevel": "verbose"}, "/logLevel", "debug"),
    ({"logLvl": "debug"}, "", "logLvl"),
    ({"image": {"digest": "sha256:abc"}}, "/image/digest", ""),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "IfNotPresent"),
    ({"webhook": {"port": 443}}, "/webhook/port", "minimum"),
    ({"webhook": {"failurePolicy": "Retry"}}, "/webhook/failurePolicy", "Fail"),
    ({"webhook": {"timeoutSeconds": 60}}, "/webhook/timeoutSeconds", "maximum"),
    ({"webhook": {"certManager": {"enabled": "yes"}}}, "/webhook/certManager/enabled", "boolean"),
    ({"securityContext": {"allowPrivilegeEscalation": True}}, "/securityContext/allowPrivilegeEscalation", "false"),
    ({"securityContext": {"privileged": True}}, "/securityContext/privileged", "false"),
    ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot", "true"),
    ({"plugins": {"required": ["Not A Name"]}}, "/plugins/required/0", ""),
    ({"azure": {"workloadIdentity": {"enabled": True}}}, "/azure/workloadIdentity/clientId", ""),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval", ""),
]


@pytest.mark.parametrize("values,path,hint", BAD, ids=[p or "root" for _, p, _ in BAD])
def test_wrong_values_fail_naming_the_field(render, values, path, hint):
    proc = render.run(values)
    assert proc.returncode != 0, f"{values} was accepted"
    assert "don't meet the specifications of the schema" in proc.stderr
    assert f"at '{path}'" in proc.stderr, proc.stderr
    assert hint in proc.stderr, proc.stderr


def test_every_default_value_is_described_by_the_schema():
    # The schema refuses unknown keys, so values.yaml itself must pass (helm lint checks too).
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(defaults) <= set(schema["properties"])


def _notes(helm: str, values: dict) -> str:
    proc = subprocess.run([helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                           "-f", "-"], input=yaml.safe_dump(values), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:\n", 1)[1]


@pytest.mark.parametrize("values", [{}, {"cloud": "aws"}, AKS, {"provisioner": "byo"}],
                         ids=["karpenter-azure", "karpenter-aws", "aks", "byo"])
def test_notes_give_a_workspace_that_validates(helm, values):
    notes = _notes(helm, values)
    assert f"rollout status deployment/{RELEASE}" in notes
    block = re.search(r"cat <<'YAML' \| kubectl apply -f -\n(.*?)\n\s*YAML\n", notes, re.S)
    assert block, notes
    ws = parse_workspace(yaml.safe_load(textwrap.dedent(block.group(1))))
    result = validate_workspace(ws)
    assert result.ok, [str(e) for e in result.errors]
    assert f"kubectl get workspace {ws.metadata.name}" in notes
    if values.get("provisioner", "karpenter") == "karpenter":
        kind = "EC2NodeClass" if values.get("cloud") == "aws" else "AKSNodeClass"
        assert f"{kind} named default" in notes
