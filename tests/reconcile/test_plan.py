"""Table-driven plans for upstream's example manifests (and a few shapes of our own)."""

from __future__ import annotations

import copy

import pytest

from kaito_core.api import parse_workspace
from kaito_core.builtins.byo import PROVISIONER as BYO
from kaito_core.reconcile import Observed, fake_node, names, plan
from kaito_core.reconcile.inputs import resolve
from kaito_core.types import NodeState
from tests.reconcile.conftest import example_workspaces

UID = "0b3c1f7e-6f1a-4d5e-9a62-3f0d2c9b1e11"


def _ws(raw: dict, uid: str = UID):
    raw = copy.deepcopy(raw)
    raw.setdefault("metadata", {}).setdefault("uid", uid)
    raw["metadata"].setdefault("namespace", "default")
    return parse_workspace(raw)


PHI = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "phi"},
       "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "phi"}}},
       "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}}}


def _plan(ws, registry, observed=None, provisioner=BYO):
    inputs = resolve(ws, registry)
    assert not inputs.problems, inputs.problems
    return plan(ws, inputs.preset, inputs.requirement, provisioner, observed), inputs


def _ready(p, inputs):
    return Observed.nodes_ready(p.node_requests, inputs.requirement.gpus_per_node if inputs.requirement else 0)


# (example name, workload kind, first objects before nodes, replicas, gpus per pod)
TABLE = {
    "workspace-phi-3-mini": ("StatefulSet", ["ConfigMap", "Service", "Service"], 1, "1"),
    "workspace-phi-3-mini-adapter": ("StatefulSet", ["ConfigMap", "Service", "Service"], 1, "1"),
    "workspace-llama-3-1-8b-instruct": ("StatefulSet", ["ConfigMap", "Service", "Service"], 1, "4"),
    "workspace-tuning-phi-3": ("Job", ["ConfigMap"], None, "1"),
    "workspace-tuning-falcon-7b-oai-chatbot": ("Job", [], None, "2"),
}


@pytest.mark.parametrize("ws", [p for p in example_workspaces() if p.id in TABLE])
def test_example_plans(ws, registry):
    ws = _ws(ws.to_k8s())
    kind, first, replicas, gpus = TABLE[ws.name]
    p, inputs = _plan(ws, registry)
    assert [o["kind"] for o in p.objects] == first
    assert [o["kind"] for o in p.deferred] == [kind]  # the workload waits for the nodes
    assert p.status["state"] == "Pending"
    assert p.status["targetNodeCount"] == len(p.node_requests) >= 1
    p2, _ = _plan(ws, registry, _ready(p, inputs))
    workload = p2.workload
    assert workload is not None and p2.deferred == [] and workload in p2.objects
    pod = workload["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    if kind == "StatefulSet":
        assert workload["spec"]["replicas"] == replicas
        assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 5000}
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["volumes"])
    else:
        assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in pod["tolerations"]
    for obj in p2.all_objects():
        ref = obj["metadata"]["ownerReferences"][0]
        assert ref["uid"] == UID and ref["kind"] == "Workspace" and ref["controller"] is True
        assert obj["metadata"]["labels"][names.LABEL_UID] == UID


def test_names_are_derived_from_uid_not_time(registry):
    a, _ = _plan(_ws(PHI), registry)
    b, _ = _plan(_ws(PHI), registry)
    other, _ = _plan(_ws(PHI, uid="11111111-2222-3333-4444-555555555555"), registry)
    assert [r.name for r in a.node_requests] == [r.name for r in b.node_requests]
    assert a.node_requests[0].name != other.node_requests[0].name
    assert a.node_requests[0].name.startswith("ws") and len(a.node_requests[0].name) == 11


def test_services_upstream_shape_and_load_balancer(registry):
    p, _ = _plan(_ws(PHI), registry)
    svc = next(o for o in p.objects if o["kind"] == "Service" and o["metadata"]["name"] == "phi")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}]
    assert svc["spec"]["type"] == "ClusterIP"
    headless = next(o for o in p.objects if o["metadata"]["name"] == "phi-headless")
    assert headless["spec"]["clusterIP"] == "None"
    lb = copy.deepcopy(PHI)
    lb["metadata"]["annotations"] = {"kaito.sh/enablelb": "True"}
    p_lb, _ = _plan(_ws(lb), registry)
    assert next(o for o in p_lb.objects if o["metadata"]["name"] == "phi")["spec"]["type"] == "LoadBalancer"


def test_revision_changes_with_spec_and_rolls_the_statefulset(registry):
    p, inputs = _plan(_ws(PHI), registry)
    ready = _ready(p, inputs)
    before = _plan(_ws(PHI), registry, ready)[0].workload
    changed = copy.deepcopy(PHI)
    changed["inference"]["adapters"] = [{"source": {"name": "a1", "image": "example.com/a1:1"}, "strength": "1.0"}]
    after = _plan(_ws(changed), registry, ready)[0].workload
    rev = names.ANNOTATION_REVISION
    assert before["metadata"]["annotations"][rev] != after["metadata"]["annotations"][rev]
    assert after["spec"]["template"]["metadata"]["annotations"][rev] == after["metadata"]["annotations"][rev]
    inits = after["spec"]["template"]["spec"]["initContainers"]
    assert any(c["args"][:3] == ["pull", "example.com/a1:1", "/mnt/adapter/a1"] for c in inits)
    assert "--adapter-strength" in after["spec"]["template"]["spec"]["containers"][0]["args"]
    # an annotation that does not change the pods does not change the revision
    lb = copy.deepcopy(PHI)
    lb["metadata"]["annotations"] = {"kaito.sh/enablelb": "True"}
    assert _plan(_ws(lb), registry, ready)[0].revision == _plan(_ws(PHI), registry, ready)[0].revision


def test_model_access_secret_becomes_hf_token(registry):
    raw = copy.deepcopy(PHI)
    raw["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token", "imagePullSecrets": ["pull"]}
    p, inputs = _plan(_ws(raw), registry)
    sts = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload
    pod = sts["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "HF_TOKEN"}
    assert pod["imagePullSecrets"] == [{"name": "pull"}]


def test_tuning_job_output_push_secret(registry):
    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora",
                      "input": {"urls": ["https://example.com/data.parquet"]},
                      "output": {"image": "registry.example.com/adapters/tune:1", "imagePushSecret": "push"}}}
    p, inputs = _plan(_ws(raw), registry)
    job = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["model-weights", "data-fetch"]
    assert pod["initContainers"][1]["args"] == ["https://example.com/data.parquet"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--push") + 1] == "registry.example.com/adapters/tune:1"
    secret = next(v for v in pod["volumes"] if v["name"] == "push-secret")
    assert secret["secret"]["secretName"] == "push"
    cfg = next(o for o in p.objects if o["kind"] == "ConfigMap")
    assert "QuantizationConfig" in cfg["data"]["training_config.yaml"]


def test_tuning_job_as_upstream_and_the_recipe(registry):
    """The Job the recipe resumes in: upstream's template config, backoffLimit 6, exit 75 ignored,
    the method lower-cased, a work dir on a volumeSource output, one process per GPU."""
    import yaml

    from kaito_core.api.training import defaults

    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune"},
           "resource": {"instanceType": "Standard_NC48ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "QLoRA",
                      "input": {"urls": ["https://example.com/data.parquet"]},
                      "output": {"volumeSource": {"persistentVolumeClaim": {"claimName": "results"}}}}}
    p, inputs = _plan(_ws(raw), registry)
    job = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--method") + 1] == "qlora"
    assert args[args.index("--work-dir") + 1] == "/mnt/results/.kaito-work"
    assert args[args.index("--nproc-per-node") + 1] == "2"
    assert job["spec"]["backoffLimit"] == defaults.JOB_BACKOFF_LIMIT == 6
    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onExitCodes": {"containerName": "tuning", "operator": "In", "values": [75]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    cfg = next(o for o in p.objects if o["kind"] == "ConfigMap")
    assert yaml.safe_load(cfg["data"]["training_config.yaml"]) == \
        defaults.template_config("qlora", ("qkv_proj", "o_proj"))
    raw["resource"]["instanceType"] = "Standard_NC24ads_A100_v4"
    raw["tuning"]["output"] = {"image": "registry.example.com/a/b:1", "imagePushSecret": "push"}
    job = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--work-dir" not in args and "--nproc-per-node" not in args


def test_sizing_failure_is_a_status_not_objects(registry):
    raw = copy.deepcopy(PHI)
    raw["resource"]["instanceType"] = "Standard_NC6s_v3"  # 16 GiB V100
    raw["inference"]["preset"]["name"] = "llama-3.1-8b-instruct"
    raw["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf"}
    p, _ = _plan(_ws(raw), registry)
    assert p.errors and p.all_objects() == []
    assert p.status["state"] == "Failed"
    cond = {c["type"]: c for c in p.status["conditions"]}
    assert cond["ResourceReady"]["reason"] == "SizingFailed" and "GiB" in cond["ResourceReady"]["message"]


def test_byo_without_instance_type_uses_node_gpus(registry):
    raw = copy.deepcopy(PHI)
    del raw["resource"]["instanceType"]
    ws = _ws(raw)
    p, inputs = _plan(ws, registry)
    observed = Observed(node_states=tuple(NodeState(name=r.name, ready=True, node_name=f"gpu-{i}")
                                          for i, r in enumerate(p.node_requests)),
                        nodes=tuple(fake_node(f"gpu-{i}", 2) for i in range(len(p.node_requests))))
    p2 = plan(ws, inputs.preset, inputs.requirement, BYO, observed)
    assert p2.status["workerNodes"] == [f"gpu-{i}" for i in range(len(p.node_requests))]
    assert p2.workload is not None


def test_template_workspace_keeps_user_pod(registry):
    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "custom"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "inference": {"template": {"spec": {"containers": [{"name": "srv", "image": "example.com/srv:1"}]}}}}
    ws = _ws(raw)
    p = plan(ws, None, None, BYO, None)
    ready = Observed.nodes_ready(p.node_requests, 0)
    sts = plan(ws, None, None, BYO, ready).workload
    spec = sts["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "example.com/srv:1"
    assert spec["affinity"]["nodeAffinity"]
    assert sts["spec"]["template"]["metadata"]["labels"][names.LABEL_WORKSPACE] == "custom"


def test_artifacts_are_pulled_by_init_containers_in_the_runtime_image(registry):
    """Weights, adapter and data references are ORAS artifacts, not runnable images: an init
    container in the runtime image runs ``python -m kaito_core.artifacts pull REF DIR`` with the
    named imagePullSecrets mounted as docker configs."""
    from kaito_core.images import runtime_image, weights_image

    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "pulls"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "inference": {"preset": {"name": "phi-3-mini-4k-instruct", "presetOptions": {"imagePullSecrets": ["p1"]}},
                         "adapters": [{"source": {"name": "a1", "image": "example.com/a1:1", "imagePullSecrets": ["p1"]},
                                       "strength": "1.0"},
                                      {"source": {"name": "a2", "image": "example.com/a2:1"}}]}}
    p, inputs = _plan(_ws(raw), registry)
    pod = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in pod["initContainers"]}
    assert set(inits) == {"model-weights", "adapter-0", "adapter-1"}
    for c in inits.values():
        assert c["image"] == runtime_image("transformers")
        assert c["command"] == ["python", "-m", "kaito_core.artifacts"]
        assert "sh" not in c["command"]
    preset = inputs.preset
    weights = inits["model-weights"]["args"]
    assert weights[:3] == ["pull", weights_image(preset.name, preset.tag), "/workspace/weights"]
    assert inits["adapter-0"]["args"][:3] == ["pull", "example.com/a1:1", "/mnt/adapter/a1"]
    assert inits["adapter-1"]["args"] == ["pull", "example.com/a2:1", "/mnt/adapter/a2"]
    # the Secret p1 is mounted once and read by both containers that name it
    secret_volumes = [v for v in pod["volumes"] if "secret" in v and v["secret"]["secretName"] == "p1"]
    assert len(secret_volumes) == 1
    path = next(m["mountPath"] for m in inits["adapter-0"]["volumeMounts"] if m["name"] == secret_volumes[0]["name"])
    assert weights[weights.index("--docker-config") + 1] == path
    assert inits["adapter-0"]["args"][-2:] == ["--docker-config", path]


def test_tuning_data_image_is_pulled_as_an_artifact(registry):
    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune-img"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora",
                      "input": {"image": "registry.example.com/data/dolly:1", "imagePullSecrets": ["d"]},
                      "output": {"volumeSource": {"emptyDir": {}}}}}
    p, inputs = _plan(_ws(raw), registry)
    pod = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload["spec"]["template"]["spec"]
    data = next(c for c in pod["initContainers"] if c["name"] == "data-fetch")
    assert data["args"][:3] == ["pull", "registry.example.com/data/dolly:1", "/mnt/data"]
    assert "--docker-config" in data["args"]
    assert any(v.get("secret", {}).get("secretName") == "d" for v in pod["volumes"])


def test_in_cluster_data_urls_need_the_operators_opt_in(registry, monkeypatch):
    """An in-cluster data server is refused by admission unless the operator runs with
    KAITO_ALLOW_PRIVATE_URLS=1; then the Job's downloader (which checks names after DNS) gets
    the same setting, so what admission accepts the Job can fetch."""
    from kaito_core.api import validate_workspace

    def validate(ws, registry):
        return validate_workspace(ws, registry=registry).errors

    url = "http://minio.data.svc.cluster.local:9000/train.jsonl"
    raw = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "lora", "input": {"urls": [url]},
                      "output": {"image": "registry.example.com/adapters/tune:1", "imagePushSecret": "push"}}}
    monkeypatch.delenv("KAITO_ALLOW_PRIVATE_URLS", raising=False)
    refused = [str(e) for e in validate(_ws(raw), registry)]
    assert any("tuning.input.urls[0]" in e and "in-cluster service" in e and "KAITO_ALLOW_PRIVATE_URLS" in e
               for e in refused), refused
    monkeypatch.setenv("KAITO_ALLOW_PRIVATE_URLS", "1")
    assert not [e for e in validate(_ws(raw), registry) if "tuning.input.urls" in str(e)]
    p, inputs = _plan(_ws(raw), registry)
    fetch = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload["spec"]["template"]["spec"]["initContainers"][1]
    assert {"name": "KAITO_ALLOW_PRIVATE_URLS", "value": "1"} in fetch["env"]
    monkeypatch.delenv("KAITO_ALLOW_PRIVATE_URLS")
    p, inputs = _plan(_ws(raw), registry)
    fetch = _plan(_ws(raw), registry, _ready(p, inputs))[0].workload["spec"]["template"]["spec"]["initContainers"][1]
    assert all(e["name"] != "KAITO_ALLOW_PRIVATE_URLS" for e in fetch["env"])
