"""The vLLM command line: preset < user config < plan (TP/PP from the pod's env), what is
refused and how, and every flag checked against the pinned vLLM's parser."""

from __future__ import annotations

import pytest
import yaml

from kaito_core.errors import KaitoError
from kaito_core.plugins import get_registry
from kaito_core.runtime.options import ServeOptions, build_parser, options_from_args
from kaito_core.runtime.parallel import GroupPlan, PlanError, world_size
from kaito_core.runtime.vllm import check_strengths, engine_args, vllm_command
from tests.vllm.harness import EXAMPLES, flag_values, known_flags

PRESET = "phi-3-medium-4k-instruct"


def opts_with(tmp_path, vllm: dict | None = None, *extra: str) -> ServeOptions:
    argv = ["--model", "org/m", "--preset", PRESET, "--runtime", "vllm", *extra]
    if vllm is not None:
        cfg = tmp_path / "inference_config.yaml"
        cfg.write_text(yaml.safe_dump({"vllm": vllm}))
        argv += ["--config", str(cfg)]
    return options_from_args(build_parser().parse_args(argv))


def preset():
    return get_registry().get_preset(PRESET)


PLAN_2x2 = GroupPlan(tensor_parallel_size=2, pipeline_parallel_size=2, node_count=2, gpus_per_node=2,
                     node_rank=0, leader_address="ws-0.ws-headless.default.svc.cluster.local")


def test_plan_wins_over_preset_and_fills_a_config_without_tp(tmp_path):
    args = engine_args(opts_with(tmp_path, {"max-model-len": 2048, "swap-space": 4}), preset(), PLAN_2x2)
    assert args["tensor-parallel-size"] == 2 and args["pipeline-parallel-size"] == 2
    assert args["distributed-executor-backend"] == "ray"
    assert args["max-model-len"] == 2048 and args["swap-space"] == 4  # the user's keys are kept


def test_single_node_plan_sets_tp_without_ray(tmp_path):
    plan = GroupPlan(tensor_parallel_size=2, pipeline_parallel_size=1, node_count=1, gpus_per_node=2)
    args = engine_args(opts_with(tmp_path, {}), preset(), plan)
    assert args["tensor-parallel-size"] == 2 and args["pipeline-parallel-size"] == 1
    assert "distributed-executor-backend" not in args


@pytest.mark.parametrize("key,value", [("tensor-parallel-size", 1), ("tensor_parallel_size", 4), ("tp", 1),
                                       ("pipeline-parallel-size", 1), ("pp", 4)])
def test_user_value_contradicting_the_plan_is_refused_naming_the_key(tmp_path, key, value):
    with pytest.raises(PlanError) as err:
        engine_args(opts_with(tmp_path, {key: value}), preset(), PLAN_2x2)
    msg = str(err.value)
    assert "inference_config.yaml vllm." in msg and "parallel-size" in msg and f"is {value}" in msg
    assert "plan gives 2" in msg and "remove" in msg and "\n" not in msg


def test_user_value_equal_to_the_plan_is_fine(tmp_path):
    args = engine_args(opts_with(tmp_path, {"tensor-parallel-size": 2, "pp": 2}), preset(), PLAN_2x2)
    assert args["tensor-parallel-size"] == 2 and "pp" not in args


def test_multinode_refuses_another_executor_backend(tmp_path):
    with pytest.raises(PlanError, match="distributed-executor-backend is 'mp'.*ray"):
        engine_args(opts_with(tmp_path, {"distributed-executor-backend": "mp"}), preset(), PLAN_2x2)


@pytest.mark.parametrize("plan,vllm,needle", [
    (GroupPlan(tensor_parallel_size=4, pipeline_parallel_size=1, gpus_per_node=2), {}, "would need 4 GPUs"),
    (GroupPlan(tensor_parallel_size=2, pipeline_parallel_size=1, gpus_per_node=2), {"data-parallel-size": 2},
     "would need 4 GPUs"),
    (GroupPlan(tensor_parallel_size=1, pipeline_parallel_size=2, node_count=2, gpus_per_node=2,
               leader_address="l"), {}, "would use 2 of the 4 GPUs"),
    (GroupPlan(tensor_parallel_size=4, pipeline_parallel_size=1, node_count=2, gpus_per_node=2,
               leader_address="l"), {}, "larger than the 2 GPUs of one node"),
])
def test_world_size_must_fit_the_group(tmp_path, plan, vllm, needle):
    with pytest.raises(PlanError, match=needle):
        engine_args(opts_with(tmp_path, vllm), preset(), plan)


def test_world_size_counts_tp_pp_dp():
    assert world_size({"tensor-parallel-size": 2, "pipeline-parallel-size": 3, "data-parallel-size": 2}) == 12
    assert world_size({}) == 1


@pytest.mark.parametrize("env,needle", [
    ({"KAITO_TENSOR_PARALLEL_SIZE": "two"}, "KAITO_TENSOR_PARALLEL_SIZE is 'two'"),
    ({"KAITO_NODE_COUNT": "0"}, "KAITO_NODE_COUNT is 0"),
    ({"KAITO_NODE_COUNT": "2", "KAITO_NODE_RANK": "1"}, "KAITO_LEADER_ADDRESS is not set"),
    ({"KAITO_NODE_COUNT": "2", "KAITO_NODE_RANK": "2", "KAITO_LEADER_ADDRESS": "x"}, "KAITO_NODE_RANK is 2"),
])
def test_bad_plan_env_is_a_clear_error(env, needle):
    with pytest.raises(PlanError, match=needle):
        GroupPlan.from_env(env)


def test_plan_env_read_as_the_operator_sets_it():
    plan = GroupPlan.from_env({"KAITO_TENSOR_PARALLEL_SIZE": "2", "KAITO_PIPELINE_PARALLEL_SIZE": "3",
                               "KAITO_NODE_COUNT": "3", "KAITO_GPUS_PER_NODE": "2", "KAITO_NODE_RANK": "1",
                               "KAITO_LEADER_ADDRESS": "ws-0.ws-headless.ns.svc.cluster.local"})
    assert plan.multinode and not plan.leader and plan.total_gpus == 6
    assert GroupPlan.from_env({}) == GroupPlan()  # `kaito serve` on a workstation: nothing imposed


def test_no_plan_keeps_the_users_file_as_is(tmp_path):
    args = engine_args(opts_with(tmp_path, {"tensor-parallel-size": 3}), preset())
    assert args["tensor-parallel-size"] == 3


def test_tool_call_parser_turns_on_auto_tool_choice(tmp_path):
    args = engine_args(opts_with(tmp_path, {"tool-call-parser": "phi4_mini_json",
                                            "chat-template": "/workspace/chat_templates/tool-chat-phi4-mini.jinja"}))
    assert args["enable-auto-tool-choice"] is True
    assert "enable-auto-tool-choice" not in engine_args(opts_with(tmp_path, {}))


@pytest.mark.parametrize("extra", [["--adapter", "a=/x", "--adapter-strength", "a=0.2"],
                                   ["--adapters-dir", "/mnt/adapter", "--adapter-strength", "falcon=0.2"]])
def test_strength_below_one_is_refused_before_anything_starts(tmp_path, extra):
    """Upstream's webhook refuses it ("vLLM does not support adapter strength"); the launcher is
    the backstop, also for adapters in --adapters-dir that are not pulled yet."""
    with pytest.raises(KaitoError, match=r"strength below 1.0.*inference.adapters\[\].strength"):
        check_strengths(opts_with(tmp_path, None, *extra))
    check_strengths(opts_with(tmp_path, None, "--adapter", "a=/x", "--adapter-strength", "a=1.0"))


def emitted_flags(cmd: list[str]) -> set[str]:
    return set(flag_values(cmd))


@pytest.mark.parametrize("name", sorted(n for n, p in get_registry().presets.items() if "vllm" in p.runtimes))
def test_every_preset_flag_exists_in_the_pinned_vllm(name):
    p = get_registry().get_preset(name)
    opts = ServeOptions(model=p.hf_repo, preset=name, runtime="vllm", revision="abc", trust_remote_code=True)
    cmd = vllm_command(opts, p, port=5001, adapter_paths={"sql": "/mnt/adapter/sql"}, plan=GroupPlan(
        tensor_parallel_size=2, pipeline_parallel_size=2, node_count=2, gpus_per_node=2, leader_address="l"))
    unknown = emitted_flags(cmd) - known_flags()
    assert not unknown, f"{name}: vLLM would refuse {sorted(unknown)}"


def example_configs() -> list[tuple[str, str]]:
    out = []
    for path in sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("v0.12.0/*.yaml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ConfigMap" and "inference_config.yaml" in (doc.get("data") or {}):
                out.append((f"{path.name}:{doc['metadata']['name']}", doc["data"]["inference_config.yaml"]))
    return out


# Keys of upstream's custom_config example that newer vLLM no longer has: arg_utils.py says
# "multi-step scheduling has been removed; corresponding arguments are no longer supported"
# (--num-scheduler-steps), and CompilationConfig replaced --max-seq-len-to-capture. vLLM refuses
# them ("unrecognized arguments"), exactly as upstream KAITO's inference_api.py would with this
# vLLM: it forwards every vllm: key to vLLM's parser too.
REMOVED_FROM_VLLM = {"--num-scheduler-steps", "--max-seq-len-to-capture"}


@pytest.mark.parametrize("name,text", example_configs(), ids=[n for n, _ in example_configs()])
def test_every_upstream_example_config_flag_exists_in_the_pinned_vllm(tmp_path, name, text):
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text(text)
    opts = options_from_args(build_parser().parse_args(["--model", "org/m", "--runtime", "vllm", "--config", str(cfg)]))
    unknown = emitted_flags(vllm_command(opts, port=5001, adapter_paths={})) - known_flags()
    expected = REMOVED_FROM_VLLM if "custom_config" in name else set()
    assert unknown == expected, f"{name}: vLLM would refuse {sorted(unknown)}"


def test_the_flag_list_is_vllms():
    flags = known_flags()
    assert {"--tensor-parallel-size", "-tp", "--pipeline-parallel-size", "--distributed-executor-backend",
            "--enable-auto-tool-choice", "--tool-call-parser", "--chat-template", "--lora-modules"} <= flags
    assert "--kaito-config-file" not in flags and "--max-probe-steps" not in flags  # upstream KAITO's own


def write_config(tmp_path, doc: dict) -> str:
    cfg = tmp_path / "inference_config.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    return str(cfg)


def test_the_transformers_section_does_not_set_vllms_dtype(tmp_path):
    cfg = write_config(tmp_path, {"transformers": {"dtype": "float32"}, "vllm": {"dtype": "bfloat16"}})
    opts = options_from_args(build_parser().parse_args(["--model", "m", "--runtime", "vllm", "--config", cfg]))
    assert engine_args(opts)["dtype"] == "bfloat16"
    opts = options_from_args(build_parser().parse_args(["--model", "m", "--runtime", "vllm", "--config", cfg,
                                                        "--dtype", "float16"]))
    assert engine_args(opts)["dtype"] == "float16"  # what reconcile passes for a V100 SKU


def test_bfloat16_below_ampere_becomes_float16_unless_the_user_asked_for_it(tmp_path):
    """Upstream KAITO: float16 when the GPU does not support bfloat16 (compute capability < 8.0)."""
    assert preset().runtimes["vllm"]["dtype"] == "bfloat16"
    assert engine_args(opts_with(tmp_path, {}), preset(), compute_capability=7.0)["dtype"] == "float16"
    assert engine_args(opts_with(tmp_path, {}), preset(), compute_capability=8.0)["dtype"] == "bfloat16"
    with pytest.raises(KaitoError, match="vllm.dtype is bfloat16, but this node's GPU has compute capability 7"):
        engine_args(opts_with(tmp_path, {"dtype": "bfloat16"}), preset(), compute_capability=7.0)
    with pytest.raises(KaitoError, match="--dtype is bfloat16"):
        engine_args(opts_with(tmp_path, None, "--dtype", "bfloat16"), preset(), compute_capability=7.5)


def test_compute_capability_read_from_nvidia_smi(tmp_path, monkeypatch):
    from kaito_core.runtime.vllm import gpu_compute_capability

    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_compute_capability() is None  # no GPU tooling: reconcile's choice stands
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=compute_cap ] && printf '8.0\\n7.0\\n'\n")
    smi.chmod(0o755)
    assert gpu_compute_capability() == 7.0


def test_rank_falls_back_to_the_statefulset_ordinal_in_the_hostname():
    """Kubernetes < 1.28 has no apps.kubernetes.io/pod-index label, so KAITO_NODE_RANK is empty."""
    env = {"KAITO_NODE_COUNT": "3", "KAITO_LEADER_ADDRESS": "ws-0.ws-headless.ns.svc.cluster.local",
           "KAITO_NODE_RANK": "", "HOSTNAME": "workspace-llama-2"}
    assert GroupPlan.from_env(env).node_rank == 2
    with pytest.raises(PlanError, match="KAITO_NODE_RANK is not set and the hostname 'box'"):
        GroupPlan.from_env({**env, "HOSTNAME": "box"})
