"""docs/provisioners.md: the code it quotes is the code that runs, and it covers every reason."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "provisioners.md"


def test_quoted_code_is_the_examples_code():
    text = DOC.read_text()
    quoted = re.findall(r"<!-- from: (\S+) -->\n```python\n(.*?)```", text, re.S)
    assert len(quoted) >= 2
    for path, code in quoted:
        assert code.strip() in (ROOT / path).read_text(), f"docs quote of {path} is out of date"


def test_every_karpenter_reason_is_documented():
    from kaito_provisioner_karpenter import status

    text = DOC.read_text()
    reasons = {name for name, _ in status._CAUSES} | set(status.STAGE_FAILURE.values())
    assert all(f"`{r}`" in text for r in reasons), sorted(r for r in reasons if f"`{r}`" not in text)


def test_every_aks_reason_is_documented():
    from kaito_provisioner_aks import arm_errors

    text = DOC.read_text()
    reasons = {name for name, _, _ in arm_errors._RULES} | {
        "Throttled", "OperationInProgress", "ClusterNotFound", "LaunchFailed", "ARMUnreachable"}
    assert all(f"`{r}`" in text for r in reasons), sorted(r for r in reasons if f"`{r}`" not in text)
