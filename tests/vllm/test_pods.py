"""The vLLM pods as rendered, started for real with fake ``vllm`` and ``ray`` on PATH.

For every upstream example Workspace that serves with vLLM, and for generated multi-node
Workspaces, ``kaito render`` gives the StatefulSet; each replica's container command runs as a
process here and the tests check what reached vLLM and Ray:

- world size: TP x PP (vLLM's flags) = GPUs of the group (replicas x ``nvidia.com/gpu``);
- every TP/PP the plan set in the env is the one vLLM got, whatever the user's ConfigMap says;
- multi-node: pod 0 started the Ray head and vLLM with ``--distributed-executor-backend ray``;
  every other pod joined the head at the address its env names, which is pod 0 behind the
  rendered headless Service; every pod's /health answers 200 once the group serves, and
  SIGTERM stops Ray on every pod;
- every flag we pass exists in the pinned vLLM's parser (``data/vllm_serve_args.txt``);
- the dtype is one the SKU's GPU runs (bfloat16 needs compute capability 8.0).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kaito_core.plugins import get_registry
from tests.vllm.harness import (EXAMPLES, REPO, Rendered, RenderFailed, flag_values, gpus_of, known_flags, render,
                                start_pods, stop_pods, wait_exit, wait_healthy)

CHAT_TEMPLATES = REPO / "images" / "runtime-vllm" / "chat_templates.txt"


def shipped_templates() -> set[str]:
    """The files the runtime-vllm image puts in /workspace/chat_templates (its Dockerfile reads this)."""
    lines = CHAT_TEMPLATES.read_text().splitlines()
    return {line.split()[0] for line in lines if line.strip() and not line.startswith("#")}


def inference_examples() -> list:
    """Every upstream example file with an inference Workspace (the top-level copies of v0.12.0's
    files once)."""
    out, seen = [], set()
    for path in sorted([*EXAMPLES.glob("v0.12.0/*.yaml"), *EXAMPLES.glob("*.yaml")]):
        text = path.read_text()
        docs = [d for d in yaml.safe_load_all(text) if d]
        if text in seen or not any(d.get("kind") == "Workspace" and d.get("inference") for d in docs):
            continue
        seen.add(text)
        out.append(pytest.param(path, id=path.name))
    return out


def compute_capability(rendered: Rendered) -> float:
    if rendered.instance_type() is None:
        # existing nodes whose GPU the Workspace does not name (upstream's accelerator partition
        # example): the GPUs of upstream's A100 SKUs
        return 8.0
    it = get_registry().instance_types.get(rendered.instance_type())
    assert it is not None and it.compute_capability, f"{rendered.instance_type()} has no compute capability"
    return float(it.compute_capability)


def check_group(rendered: Rendered, fake_tools, started: list, tmp_path: Path) -> dict:
    """Start the rendered pods, wait until every /health is 200, check the invariants, stop them."""
    sts, container = rendered.statefulset, rendered.container
    replicas, gpus = int(sts["spec"]["replicas"]), gpus_of(rendered.container)
    cc = compute_capability(rendered)
    check_rendered_rendezvous(rendered)
    group = start_pods(rendered, fake_tools, tmp_path, compute_capability=cc)
    started.extend(group)
    wait_healthy(group)

    (vllm,) = fake_tools.calls("vllm")  # exactly one vLLM in the group, on pod 0
    assert vllm["node"] == "0" and vllm["problem"] is None, vllm
    flags = flag_values(vllm["argv"])
    unknown = sorted(set(flags) - known_flags())
    assert not unknown, f"flags the pinned vLLM does not know: {unknown}"
    tp = int(flags.get("--tensor-parallel-size", ["1"])[0])
    pp = int(flags.get("--pipeline-parallel-size", ["1"])[0])
    dp = int(flags.get("--data-parallel-size", ["1"])[0])
    assert tp * pp * dp == replicas * gpus, f"world size {tp}x{pp}x{dp} != {replicas} pods x {gpus} GPUs"
    env = group[0].env
    assert str(tp) == env["KAITO_TENSOR_PARALLEL_SIZE"] and str(pp) == env["KAITO_PIPELINE_PARALLEL_SIZE"]
    if flags.get("--dtype") == ["bfloat16"]:
        assert cc >= 8.0, f"bfloat16 on compute capability {cc}"

    rays = fake_tools.calls("ray")
    if replicas == 1:
        assert rays == [] and "--distributed-executor-backend" not in flags
    else:
        assert flags["--distributed-executor-backend"] == ["ray"]
        heads = [c for c in rays if c["argv"][:2] == ["start", "--head"]]
        assert [h["node"] for h in heads] == ["0"]
        port = re.search(r"--port=(\d+)", " ".join(heads[0]["argv"])).group(1)
        workers = {c["node"]: c for c in rays if c["argv"][:1] == ["start"] and "--head" not in c["argv"]}
        assert sorted(workers) == [str(r) for r in range(1, replicas)]
        for node, call in workers.items():
            # the address its env names (the headless DNS name; here answered with pod 0's 127.0.0.1)
            assert call["env"]["KAITO_LEADER_ADDRESS"] == "localhost"
            assert f"--address=127.0.0.1:{port}" in call["argv"] and "--block" in call["argv"], call
            assert call["env"]["KAITO_NODE_RANK"] == node
    codes = stop_pods(group)
    # uvicorn re-raises SIGTERM after its graceful shutdown, so pod 0 ends "by SIGTERM"; workers exit 0
    assert codes == {p.rank: -15 if p.rank == 0 else 0 for p in group}, {p.rank: p.output()[-1500:] for p in group}
    if replicas > 1:
        stopped = {c["node"] for c in fake_tools.calls("ray") if c["argv"] == ["stop"]}
        assert stopped == {str(r) for r in range(replicas)}
    return flags


def check_rendered_rendezvous(rendered: Rendered) -> None:
    """KAITO_LEADER_ADDRESS is pod 0's DNS name under the rendered headless Service, and that
    Service publishes pods before they are ready (workers join before pod 0 serves)."""
    sts = rendered.statefulset
    env = {e["name"]: e for e in rendered.container.get("env", [])}
    for probe in ("readinessProbe", "livenessProbe"):
        assert rendered.container[probe]["httpGet"]["path"] == "/health"
    if int(sts["spec"]["replicas"]) == 1:
        return
    headless = rendered.one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    from kaito_core.runtime.multinode import RAY_PORT

    assert RAY_PORT in {p["port"] for p in headless["spec"]["ports"]}, "the Ray head's port is not published"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in headless["spec"]["selector"].items())
    ns = sts["metadata"]["namespace"]
    assert env["KAITO_LEADER_ADDRESS"]["value"] == f"{sts['metadata']['name']}-0.{headless['metadata']['name']}.{ns}.svc.cluster.local"
    assert env["KAITO_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"


# What a user fills in before applying upstream's Arc examples (their README says to).
PLACEHOLDERS = {"<your-arc-node-name>": "arc-node-1", "<your-vm-sku>": "Standard_NC24ads_A100_v4"}


@pytest.mark.parametrize("path", inference_examples())
def test_upstream_example(path: Path, fake_tools, pods, tmp_path):
    text = path.read_text()
    if any(k in text for k in PLACEHOLDERS):
        for placeholder, value in PLACEHOLDERS.items():
            text = text.replace(placeholder, value)
        path = tmp_path / path.name
        path.write_text(text)
    # upstream's accelerator partitions run on existing (BYO) nodes only, as its example says
    byo = any((d.get("resource") or {}).get("partition") for d in yaml.safe_load_all(text) if d)
    try:
        rendered = render(path, "byo" if byo else "karpenter")
    except RenderFailed as exc:
        # Not a launcher question: the Workspace is refused before any pod exists (e.g. a
        # placeholder upstream leaves for the user to fill in); the refusal must name the field.
        # (upstream's custom_config example asks for tensor-parallel-size 2 on a 1-GPU type, which
        # vLLM refuses at start-up there too). That refusal is this example's outcome.
        assert re.search(r"[a-z]+(\.[a-zA-Z\[\]0-9]+)+", str(exc)), str(exc)
        return
    args = rendered.container.get("args", [])
    if "--runtime" not in args:
        # inference.template: the user's own container runs as written, no kaito launcher
        template = next(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "Workspace")
        images = [c["image"] for c in template["inference"]["template"]["spec"]["containers"]]
        assert rendered.container["image"] in images
        return
    if args[args.index("--runtime") + 1] != "vllm":
        # a transformers-runtime example: no vLLM group, so no Ray rendezvous either
        assert args[args.index("--runtime") + 1] == "transformers", args
        assert not any(e["name"] == "KAITO_LEADER_ADDRESS" for e in rendered.container.get("env", []))
        return
    flags = check_group(rendered, fake_tools, pods, tmp_path)
    if "--tool-call-parser" in flags:
        assert "--enable-auto-tool-choice" in flags
    for template in flags.get("--chat-template", []):
        assert template.startswith("/workspace/chat_templates/")
        assert Path(template).name in shipped_templates(), f"the runtime-vllm image lacks {template}"


def generated(name: str, instance_type: str, preset: str, config: dict | None = None) -> str:
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name},
          "resource": {"instanceType": instance_type, "labelSelector": {"matchLabels": {"apps": name}}},
          "inference": {"preset": {"name": preset, "presetOptions": {"modelAccessSecret": "hf-token"}}}}
    docs = [ws]
    if config is not None:
        ws["inference"]["config"] = f"{name}-params"
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-params"},
                     "data": {"inference_config.yaml": yaml.safe_dump(config)}})
    return yaml.safe_dump_all(docs)


GENERATED = {
    # (instance type, preset, user config) -> nodes the plan must give
    "llama-70b-2x-H100": ("Standard_NC40ads_H100_v5", "llama-3.3-70b-instruct", None, 2),
    "llama-70b-3x-A100": ("Standard_NC24ads_A100_v4", "llama-3.3-70b-instruct", None, 3),
    "llama-70b-3x-A100-user-config-without-tp": ("Standard_NC24ads_A100_v4", "llama-3.3-70b-instruct",
                                                 {"vllm": {"max-model-len": 4096, "swap-space": 4}}, 3),
    "phi-4-3x-V100": ("Standard_NC6s_v3", "phi-4", None, 3),
    "phi-3-medium-2x-A10-user-config": ("Standard_NV72ads_A10_v5", "phi-3-medium-4k-instruct",
                                        {"vllm": {"max-model-len": 4096}}, 1),
}


@pytest.mark.parametrize("case", sorted(GENERATED))
def test_generated_groups(case, fake_tools, pods, tmp_path):
    instance_type, preset, config, nodes = GENERATED[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(generated("gen", instance_type, preset, config))
    rendered = render(path)
    assert int(rendered.statefulset["spec"]["replicas"]) == nodes
    flags = check_group(rendered, fake_tools, pods, tmp_path)
    # upstream's configureParallelism for a model larger than one GPU: TP = GPUs per node, PP = nodes
    # (issue 13: phi-3-medium on 2 x A10 with a user ConfigMap gets TP=2)
    assert flags["--tensor-parallel-size"] == [str(gpus_of(rendered.container))]
    assert flags.get("--pipeline-parallel-size", ["1"]) == [str(nodes)]


def test_user_tp_contradicting_the_plan_is_refused_by_the_leader(fake_tools, pods, tmp_path):
    """A ConfigMap edited after admission: the pod refuses with one line naming the key."""
    path = tmp_path / "ws.yaml"
    path.write_text(generated("gen", "Standard_NV72ads_A10_v5", "phi-3-medium-4k-instruct",
                              {"vllm": {"tensor-parallel-size": 3}}))
    try:
        rendered = render(path)
    except RenderFailed as exc:  # admission refuses it first (PLAN's webhook), naming the field
        assert "tensor-parallel-size" in str(exc)
        rendered = render_with_config_swapped(tmp_path, {"vllm": {"tensor-parallel-size": 3}})
    planned = next(e["value"] for e in rendered.container["env"] if e["name"] == "KAITO_TENSOR_PARALLEL_SIZE")
    (pod,) = start_pods(rendered, fake_tools, tmp_path)
    pods.append(pod)
    assert wait_exit(pod) == 1
    out = pod.output()
    assert (f"error: inference_config.yaml vllm.tensor-parallel-size is 3, but this Workspace's plan gives "
            f"{planned} (KAITO_TENSOR_PARALLEL_SIZE)") in out
    assert "Traceback" not in out and fake_tools.calls("vllm") == []


def render_with_config_swapped(tmp_path: Path, config: dict) -> Rendered:
    """Render without the ConfigMap, then mount ``config`` as if edited after admission."""
    path = tmp_path / "ok.yaml"
    path.write_text(generated("gen", "Standard_NV72ads_A10_v5", "phi-3-medium-4k-instruct", {"vllm": {}}))
    rendered = render(path)
    for doc in rendered.inputs:
        if doc.get("kind") == "ConfigMap":
            doc["data"]["inference_config.yaml"] = yaml.safe_dump(config)
    return rendered


def test_worker_health_follows_the_group(fake_tools, pods, tmp_path):
    """A worker pod is 503 until it joined, 200 while its Ray worker runs and the head answers,
    503 once the head is gone; then it exits non-zero so the kubelet restarts it."""
    path = tmp_path / "ws.yaml"
    path.write_text(generated("gen", "Standard_NC40ads_H100_v5", "llama-3.3-70b-instruct"))
    rendered = render(path)
    group = start_pods(rendered, fake_tools, tmp_path, compute_capability=9.0)
    pods.extend(group)
    leader, worker = group
    wait_healthy(group)
    leader.proc.terminate()  # pod 0 goes away: ray stop on it takes the head down
    assert wait_exit(leader) == -15
    code = wait_exit(worker, timeout=30)
    assert code != 0 and "restarting to rejoin the leader" in worker.output()


def test_leader_times_out_with_a_clear_message_when_workers_never_join(fake_tools, pods, tmp_path):
    path = tmp_path / "ws.yaml"
    path.write_text(generated("gen", "Standard_NC40ads_H100_v5", "llama-3.3-70b-instruct"))
    rendered = render(path)
    group = start_pods(rendered, fake_tools, tmp_path, compute_capability=9.0, timeout=3)
    leader, worker = group
    worker.proc.kill()  # the worker never joins
    worker.proc.wait()
    pods.append(leader)
    assert wait_exit(leader, timeout=60) == 1
    out = leader.output()
    assert "only 1 of 2 nodes joined the Ray cluster within 3 s" in out and "Traceback" not in out
    assert fake_tools.calls("vllm") == []


def test_adapter_strength_below_one_is_refused_at_admission_and_by_the_pod(fake_tools, pods, tmp_path):
    """Upstream refuses it in the webhook; a pod started anyway (stale args) refuses it too."""
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ad"},
          "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
          "inference": {"preset": {"name": "phi-3-mini-4k-instruct"},
                        "adapters": [{"source": {"name": "poet", "image": "reg.io/adapters/poet:0.0.1"},
                                      "strength": "0.2"}]}}
    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump(ws))
    with pytest.raises(RenderFailed, match=r"inference\.adapters\[0\]\.strength"):
        render(path)
    ws["inference"]["adapters"][0]["strength"] = "1.0"
    path.write_text(yaml.safe_dump(ws))
    rendered = render(path)
    args = rendered.container["args"]
    i = args.index("--adapter-strength")
    args[i + 1] = "poet=0.2"
    (pod,) = start_pods(rendered, fake_tools, tmp_path)
    pods.append(pod)
    assert wait_exit(pod) == 1
    out = pod.output()
    assert "error: adapters ['poet'] have a strength below 1.0, which vLLM cannot apply" in out
    assert "Traceback" not in out and fake_tools.calls("vllm") == []
