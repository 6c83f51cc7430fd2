"""One Plan everywhere: every Workspace we ship or test, through ``kaito plan``, ``kaito render``
with each provisioner, the operator's reconcile and ``kaito up --dry-run``.

Each path must give the same instance type, GPUs per node, node count, replicas, node objects,
TP/PP and container command, or refuse the Workspace, and none may raise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kaito_core.api import ConfigMap, Workspace, load_documents
from kaito_core.cli import main
from kaito_core.reconcile import names

ROOT = Path(__file__).resolve().parents[2]
REF = ROOT / "tests" / "data" / "reference" / "kaito-examples"
PROVISIONERS = ("byo", "local", "karpenter", "aks", "gpumachine")
NODE_KINDS = {"NodeClaim", "AgentPool", "GPUMachine"}

# The tests' own shapes (issue 12's and 13's cases), beside the shipped examples.
FIXTURES = {
    "count-3": """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: phi-count, namespace: team-a}
resource:
  count: 3
  instanceType: Standard_NC24ads_A100_v4
  labelSelector: {matchLabels: {apps: phi, team: blue}}
inference: {preset: {name: phi-3-mini-4k-instruct}}
""",
    "no-instance-type": """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: falcon-auto}
resource: {labelSelector: {matchLabels: {apps: falcon}}}
inference: {preset: {name: falcon-7b-instruct}}
""",
    "v100": """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: phi-v100}
resource: {instanceType: Standard_NC12s_v3, labelSelector: {matchLabels: {apps: v}}}
inference: {preset: {name: phi-3-mini-4k-instruct}}
""",
    "user-tp": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: tp-params}
data:
  inference_config.yaml: |
    vllm:
      tensor-parallel-size: 2
      max-model-len: 2048
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: medium-a10}
resource: {instanceType: Standard_NV72ads_A10_v5, labelSelector: {matchLabels: {apps: m}}}
inference: {preset: {name: phi-3-medium-4k-instruct}, config: tp-params}
""",
    "qlora-batch-8": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: tcfg}
data:
  training_config.yaml: |
    training_config:
      TrainingArguments:
        per_device_train_batch_size: 8
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: tune-a10}
resource: {instanceType: Standard_NV36ads_A10_v5, labelSelector: {matchLabels: {apps: t}}}
tuning:
  preset: {name: phi-3-mini-4k-instruct}
  method: qlora
  config: tcfg
  input: {urls: ["https://example.com/d.jsonl"]}
  output: {volumeSource: {emptyDir: {}}}
""",
    "vllm-adapter-strength": """\
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: falcon-adapter}
resource: {instanceType: Standard_NC24ads_A100_v4, labelSelector: {matchLabels: {apps: f}}}
inference:
  preset: {name: falcon-7b-instruct}
  adapters:
  - source: {name: a1, image: example.com/a1:1}
    strength: "0.2"
""",
}


def sources() -> list:
    files = sorted(REF.glob("*.yaml")) + sorted((REF / "v0.12.0").glob("*.yaml")) + sorted(
        (ROOT / "examples").rglob("*.yaml"))
    out = [pytest.param(f, id=str(f.relative_to(ROOT))) for f in files
           if any(isinstance(d.obj, Workspace) for d in load_documents(str(f)))]
    return out + [pytest.param(name, id=f"fixture:{name}") for name in FIXTURES]


@pytest.fixture
def path(request, tmp_path) -> Path:
    src = request.param
    if isinstance(src, str):
        f = tmp_path / f"{src}.yaml"
        f.write_text(FIXTURES[src])
        return f
    return src


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def view_of_plan(row: dict) -> dict:
    return {"instanceType": row["instanceType"], "gpusPerNode": row["gpusPerNode"], "nodeCount": row["nodeCount"],
            "tp": row.get("tensorParallelSize"), "pp": row.get("pipelineParallelSize"),
            "command": row.get("command") or []}


def render_views(objects: list[dict], workspaces: list) -> dict[str, dict]:
    views = {}
    for ws in workspaces:
        mine = [o for o in objects if ((o.get("metadata") or {}).get("labels") or {}).get(
            names.LABEL_WORKSPACE) == ws.name]
        workload = next((o for o in mine if o["kind"] in ("StatefulSet", "Job")), None)
        c = workload["spec"]["template"]["spec"]["containers"][0] if workload else {}
        env = {e["name"]: e.get("value") for e in c.get("env") or []}
        views[ws.name] = {
            "nodeObjects": sum(o["kind"] in NODE_KINDS for o in mine),
            "replicas": (1 if workload["kind"] == "Job" else workload["spec"]["replicas"]) if workload else None,
            "command": list(c.get("command") or []) + list(c.get("args") or []),
            "tp": env.get("KAITO_TENSOR_PARALLEL_SIZE"), "pp": env.get("KAITO_PIPELINE_PARALLEL_SIZE")}
    return views


def operator_outcome(ws, docs, provisioner: str):
    from kaito_core.operator.apply import Reconciler
    from kaito_core.operator.settings import Settings
    from kaito_core.plugins import get_registry
    from kaito_core.testing import FakeKube

    kube = FakeKube()
    for d in docs:
        if isinstance(d.obj, ConfigMap):
            cm = d.obj.to_k8s() if hasattr(d.obj, "to_k8s") else dict(d.raw)
            cm.setdefault("metadata", {})["namespace"] = ws.namespace
            kube.create(cm)
    body = ws.to_k8s()
    body["metadata"]["namespace"] = ws.namespace
    body["metadata"]["uid"] = names.uid_of(ws.namespace, ws.name, None)  # what render uses
    settings = Settings(provisioner=provisioner, allow_templates=True, allow_host_path=True)
    return Reconciler(kube, get_registry(), settings).reconcile(body)


def plan_rows(capsys, path, provisioner) -> dict[str, dict]:
    rc, out, _ = run_cli(capsys, "plan", str(path), "-o", "json", "--provisioner", provisioner)
    return {r["name"]: r for r in json.loads(out)}


@pytest.mark.parametrize("path", sources(), indirect=True)
@pytest.mark.parametrize("provisioner", PROVISIONERS)
def test_render_applies_the_plan(path, provisioner, capsys):
    docs = load_documents(str(path))
    workspaces = [d.obj for d in docs if isinstance(d.obj, Workspace)]
    rows = plan_rows(capsys, path, provisioner)
    rc_r, out_r, err_r = run_cli(capsys, "render", str(path), "--provisioner", provisioner)
    rendered = render_views([o for o in yaml.safe_load_all(out_r) if o], workspaces)
    for ws in workspaces:
        row = rows[ws.name]
        refused = bool(row["errors"])
        # kaito render refuses exactly what kaito plan refuses, naming the Workspace
        assert (f"Workspace {ws.name!r}" in err_r) == refused, (row["errors"], err_r)
        if refused:
            continue
        want = view_of_plan(row)
        r = rendered[ws.name]
        assert r["nodeObjects"] == row["nodeObjects"] == (0 if provisioner in ("byo", "local") else row["nodeCount"]), r
        assert r["replicas"] == row["replicas"] and row["replicas"] in (row["nodeCount"], 1)
        assert r["command"] == want["command"], "render's container command differs from kaito plan's"
        if row["runtime"] == "vllm":
            assert (r["tp"], r["pp"]) == (str(want["tp"]), str(want["pp"]))


@pytest.mark.parametrize("path", sources(), indirect=True)
@pytest.mark.parametrize("provisioner", PROVISIONERS)
def test_the_operator_plans_the_same(path, provisioner, capsys):
    docs = load_documents(str(path))
    rows = plan_rows(capsys, path, provisioner)
    for ws in (d.obj for d in docs if isinstance(d.obj, Workspace)):
        row = rows[ws.name]
        outcome = operator_outcome(ws, docs, provisioner)
        op = outcome.plan
        refused = bool(row["errors"])
        assert (outcome.status.get("state") == "Failed") == refused, (
            ws.name, row["errors"], outcome.status.get("conditions", [])[:1])
        if refused:
            continue
        assert {"instanceType": op.instance_type, "gpusPerNode": op.gpus_per_node, "nodeCount": op.node_count,
                "tp": op.tensor_parallel_size, "pp": op.pipeline_parallel_size,
                "command": list(op.command)} == view_of_plan(row), "the operator planned differently"
        assert len(op.node_requests) == row["nodeCount"] == len(row["nodeRequests"])
        assert len(op.node_objects) == row["nodeObjects"] and op.replicas == row["replicas"]


def flags(argv) -> list[str]:
    return [a for a in argv if a.startswith("--")]


@pytest.mark.parametrize("path", sources(), indirect=True)
def test_kaito_up_dry_run_realises_the_same_plan(path, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_HOME", str(tmp_path / "home"))
    docs = load_documents(str(path))
    rows = plan_rows(capsys, path, "byo")
    for ws in (d.obj for d in docs if isinstance(d.obj, Workspace)):
        rc, out, err = run_cli(capsys, "up", str(path), "--dry-run", "-o", "json", "--name", ws.name)
        view = json.loads(out)
        row = rows[ws.name]
        assert view_of_plan(view["plan"]) == view_of_plan(row)
        assert view["plan"]["errors"] == row["errors"]
        if row["errors"] and view["plan"].get("nodeRequests") == []:
            assert view["local"]["refused"], "kaito up would run what the webhook refuses"
        if view["local"]["refused"] is None:
            local, pod, diffs = view["local"]["command"], row["command"], view["local"]["differences"]
            # every flag the pod gets is here, unless a listed difference says why not; every
            # flag added here is listed too
            assert [f for f in flags(pod) if f not in local and not any(d.startswith(f) for d in diffs)] == []
            assert [f for f in flags(local) if f not in pod and not any(f in d for d in diffs)] == []
