"""Issue 13, the planner's side: TP/PP always reach vLLM, multi-node shape, per-GPU dtype and
memory, tool calling, and vLLM's runtime rules refused at admission."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_core import sizing
from kaito_core.api import configmaps_by_name, load_documents, Workspace
from kaito_core.reconcile import Observed, plan_workspace

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "reference" / "kaito-examples" / "v0.12.0"


def load(text_or_path):
    docs = load_documents(str(text_or_path))
    ws = next(d.obj for d in docs if isinstance(d.obj, Workspace))
    return ws, configmaps_by_name(docs)


def ready_plan(ws, cms, registry, provisioner="byo"):
    prov = registry.provisioners[provisioner]
    first = plan_workspace(ws, registry=registry, provisioner=prov, configmaps=cms)
    assert not first.errors, first.errors
    return plan_workspace(ws, registry=registry, provisioner=prov, configmaps=cms,
                          observed=Observed.nodes_ready(first.node_requests, first.gpus_per_node))


def container(p):
    return p.workload["spec"]["template"]["spec"]["containers"][0]


def env_of(p):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(p)["env"]}


def write(tmp_path, text):
    f = tmp_path / "ws.yaml"
    f.write_text(text)
    return f


def ws_text(preset, it, *, config=None, count=None, extra="", annotations=""):
    cfg = f"  config: {config}\n" if config else ""
    cnt = f"  count: {count}\n" if count else ""
    ann = f"  annotations: {{{annotations}}}\n" if annotations else ""
    return (f"apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: w\n  namespace: default\n{ann}"
            f"resource:\n{cnt}  instanceType: {it}\n  labelSelector:\n    matchLabels: {{apps: w}}\n"
            f"inference:\n  preset:\n    name: {preset}\n{extra}{cfg}")


def cm_text(body):
    return ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: params\ndata:\n  inference_config.yaml: |\n"
            + "".join(f"    {line}\n" for line in body.splitlines()) + "---\n")


def test_upstream_70b_example_is_two_ray_nodes_with_tp_and_pp_in_the_env(registry):
    ws, cms = load(EXAMPLES / "inference_kaito_workspace_llama-3.3_70b_instruct.yaml")
    p = ready_plan(ws, cms, registry)
    assert (p.instance_type, p.gpus_per_node, p.node_count, p.replicas) == ("Standard_NC48ads_A100_v4", 2, 2, 2)
    assert p.tensor_parallel_size * p.pipeline_parallel_size == 4 and p.tensor_parallel_size == 2
    env = env_of(p)
    assert env["KAITO_TENSOR_PARALLEL_SIZE"] == "2" and env["KAITO_PIPELINE_PARALLEL_SIZE"] == "2"
    assert env["KAITO_NODE_COUNT"] == "2" and env["KAITO_GPUS_PER_NODE"] == "2"
    assert env["KAITO_LEADER_ADDRESS"] == (f"{ws.name}-0.{ws.name}-headless.default.svc.cluster.local")
    assert "apps.kubernetes.io/pod-index" in str(env["KAITO_NODE_RANK"])
    ports = {q["name"]: q["containerPort"] for q in container(p)["ports"]}
    assert ports == {"http": 5000, "ray": 6379}  # Ray's dashboard (job API) stays on the head's localhost
    headless = next(o for o in p.objects if o["metadata"]["name"].endswith("-headless"))
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {q["port"] for q in headless["spec"]["ports"]} == {5000, 6379}
    assert container(p)["readinessProbe"]["httpGet"] == {"path": "/health", "port": 5000}
    startup = container(p)["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60
    # the user's ConfigMap is mounted as is; the plan's numbers travel in the env
    assert p.workload["spec"]["template"]["spec"]["volumes"][-1] != {} and len(p.node_requests) == 2


def test_phi3_medium_on_two_a10_with_a_user_configmap_gets_tp_2(tmp_path, registry):
    f = write(tmp_path, cm_text("vllm:\n  max-model-len: 2048") +
              ws_text("phi-3-medium-4k-instruct", "Standard_NV72ads_A10_v5", config="params"))
    p = ready_plan(*load(f), registry)
    assert p.gpus_per_node == 2 and p.tensor_parallel_size == 2 and env_of(p)["KAITO_TENSOR_PARALLEL_SIZE"] == "2"


@pytest.mark.parametrize("body, words", [
    ("vllm:\n  tensor-parallel-size: 4", "vllm.tensor-parallel-size 4 exceeds the 2 GPU(s) per node"),
    ("vllm:\n  tensor-parallel-size: 1\n  pipeline-parallel-size: 1", "= 1 GPUs, but the plan holds 2"),
    ("vllm:\n  tensor-parallel-size: two", "vllm.tensor-parallel-size is 'two', expected an integer from 1 to 1024"),
])
def test_a_user_parallelism_that_cannot_fit_is_refused_naming_the_key(tmp_path, registry, body, words):
    f = write(tmp_path, cm_text(body) + ws_text("phi-3-medium-4k-instruct", "Standard_NV72ads_A10_v5",
                                                 config="params"))
    ws, cms = load(f)
    p = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["byo"], configmaps=cms)
    assert any(words in e and "ConfigMap 'params' key inference_config.yaml vllm" in e for e in p.errors), p.errors
    assert p.status["conditions"][0]["reason"] == "InvalidWorkspace"


def test_v100_serves_float16_and_a10_reserves_what_sizing_counted(tmp_path, registry):
    p = ready_plan(*load(write(tmp_path, ws_text("phi-3-mini-4k-instruct", "Standard_NC6s_v3"))), registry)
    assert p.dtype == "float16"
    args = container(p)["args"]
    assert args[args.index("--dtype") + 1] == "float16"
    cfg = yaml.safe_load(next(o for o in p.objects if o["kind"] == "ConfigMap")["data"]["inference_config.yaml"])
    assert cfg["vllm"]["dtype"] == "float16" and cfg["vllm"]["gpu-memory-utilization"] == 0.84
    assert cfg["transformers"]["dtype"] == "float16"  # no bfloat16 below compute capability 8.0 either
    a10 = ready_plan(*load(write(tmp_path, ws_text("phi-3-mini-4k-instruct", "Standard_NV36ads_A10_v5"))), registry)
    cfg = yaml.safe_load(next(o for o in a10.objects if o["kind"] == "ConfigMap")["data"]["inference_config.yaml"])
    assert cfg["vllm"]["gpu-memory-utilization"] == 0.82 and cfg["vllm"]["dtype"] == "bfloat16"
    assert env_of(a10)["KAITO_GPU_MEMORY_UTILIZATION"] == "0.82"  # for a user config that omits it
    assert "--dtype" not in container(a10)["args"]


def test_a_quantised_checkpoint_gets_a_compute_dtype(tmp_path, registry):
    """gpt-oss's MXFP4 weights keep their format; the plan's compute dtype is bfloat16."""
    p = ready_plan(*load(write(tmp_path, ws_text("gpt-oss-20b", "Standard_NV36ads_A10_v5"))), registry)
    cfg = yaml.safe_load(next(o for o in p.objects if o["kind"] == "ConfigMap")["data"]["inference_config.yaml"])
    assert cfg["vllm"]["dtype"] == "bfloat16" and "--dtype" not in container(p)["args"]
    assert cfg["vllm"]["gpu-memory-utilization"] == 0.82
    assert any("12.9 GiB in mxfp4, computing in bfloat16" in r for r in p.reasons), p.reasons


def test_phi3_medium_128k_at_full_context_plans_one_node_as_upstream(registry):
    preset = registry.get_preset("phi-3-medium-128k-instruct")
    req = sizing.place(preset, registry.instance_types, instance_type="Standard_NC24ads_A100_v4", runtime="vllm",
                       max_model_len=131072)
    assert req.ok and req.node_count == 1, req.errors


def test_tool_parser_turns_on_auto_tool_choice(registry, tmp_path):
    p = ready_plan(*load(write(tmp_path, ws_text("phi-4-mini-instruct", "Standard_NC24ads_A100_v4"))), registry)
    cfg = yaml.safe_load(next(o for o in p.objects if o["kind"] == "ConfigMap")["data"]["inference_config.yaml"])
    assert cfg["vllm"]["tool-call-parser"] and cfg["vllm"]["enable-auto-tool-choice"] is True


ADAPTER = "  adapters:\n  - source: {name: a1, image: example.com/a1:1}\n    strength: \"%s\"\n"


@pytest.mark.parametrize("preset, strength, runtime, words", [
    ("falcon-7b-instruct", "0.2", "", "inference.adapters[0].strength: '0.2'"),
    ("falcon-7b-instruct", "1.0", "", "vLLM cannot serve LoRA adapters on FalconForCausalLM"),
    ("phi-3-mini-4k-instruct", "0.5", "", "inference.adapters[0].strength: '0.5'"),
])
def test_vllm_adapter_rules_are_refused_at_admission(tmp_path, registry, preset, strength, runtime, words):
    f = write(tmp_path, ws_text(preset, "Standard_NC24ads_A100_v4", extra=ADAPTER % strength))
    ws, cms = load(f)
    p = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["byo"], configmaps=cms)
    assert any(words in e for e in p.errors), p.errors


def test_transformers_merges_adapters_at_any_strength(tmp_path, registry):
    f = write(tmp_path, ws_text("falcon-7b-instruct", "Standard_NC24ads_A100_v4", extra=ADAPTER % "0.2",
                                annotations='"kaito.sh/runtime": transformers'))
    p = ready_plan(*load(f), registry)
    assert "--adapter-strength" in container(p)["args"]


def test_accelerator_partition_is_count_whole_gpus_on_byo_nodes(registry):
    """Upstream v0.12's accelerator example: partition.count GPUs for one pod on existing nodes."""
    ws, cms = load(EXAMPLES / "inference_kaito_workspace_accelerator.yaml")
    p = ready_plan(ws, cms, registry)
    assert (p.instance_type, p.gpus_per_node, p.node_count, p.tensor_parallel_size) == (None, 2, 1, 2)
    assert container(p)["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    refused = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["karpenter"], configmaps=cms)
    assert any(e.startswith("resource.partition: mode 'accelerator'") and "'karpenter' creates nodes" in e
               for e in refused.errors), refused.errors


@pytest.mark.parametrize("profile, ok", [("3g.40gb", True), ("1g.10gb", False)])
def test_mig_partition_requests_one_slice_that_must_hold_the_model(tmp_path, registry, profile, ok):
    text = ws_text("phi-3-mini-4k-instruct", "x").replace(
        "  instanceType: x\n", f"  partition: {{mode: mig, profile: {profile}}}\n")
    ws, cms = load(write(tmp_path, text))
    p = plan_workspace(ws, registry=registry, provisioner=registry.provisioners["byo"], configmaps=cms)
    if not ok:
        assert any(f"resource.partition.profile: '{profile}'" in e and "larger profile" in e for e in p.errors)
        return
    p = ready_plan(ws, cms, registry)
    assert container(p)["resources"]["limits"] == {f"nvidia.com/mig-{profile}": "1"}
    assert p.tensor_parallel_size == 1


@pytest.mark.parametrize("example", ["inference_kaito_workspace_deepseek_r1.yaml",
                                     "inference_kaito_workspace_deepseek_v3.yaml",
                                     "inference_kaito_workspace_mistral_large_3_675b_instruct.yaml"])
def test_resource_count_above_sizing_gives_upstreams_node_count(registry, example):
    """count 6 where 5 x 2 H100 hold the model: upstream's estimator plans 5 nodes, TP 2 x PP 5."""
    ws, cms = load(EXAMPLES / example)
    p = ready_plan(ws, cms, registry)
    assert ws.resource.count == 6 and p.node_count == p.replicas == 5
    assert (p.tensor_parallel_size, p.pipeline_parallel_size) == (p.gpus_per_node, p.node_count) == (2, 5)
    assert env_of(p)["KAITO_NODE_COUNT"] == "5"
    assert any(r.startswith("resource.count 6: not used") for r in p.reasons)


def test_replicas_of_a_single_node_preset_follow_upstreams_estimate(tmp_path, registry):
    p = ready_plan(*load(write(tmp_path, ws_text("phi-3-mini-4k-instruct", "Standard_NC24ads_A100_v4", count=3))),
                   registry)
    assert p.replicas == 1 and p.tensor_parallel_size * p.pipeline_parallel_size == 1
    env = env_of(p)
    assert env["KAITO_NODE_COUNT"] == "1" and "KAITO_LEADER_ADDRESS" not in env and "KAITO_NODE_RANK" not in env


