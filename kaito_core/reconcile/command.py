"""The inference container's command and environment, from the plan (pure).

The env is the contract with the runtime's launcher (runtime/vllm.py and its multi-node
start-up): ``KAITO_TENSOR_PARALLEL_SIZE``, ``KAITO_PIPELINE_PARALLEL_SIZE``,
``KAITO_NODE_COUNT`` (the nodes serving one model together), ``KAITO_GPUS_PER_NODE``, and
with more than one node in the group
``KAITO_NODE_RANK`` (the pod-index label, through the downward API) and
``KAITO_LEADER_ADDRESS`` (pod 0 through the headless Service). The launcher merges these with
the user's ``inference_config.yaml``: the plan's parallelism always reaches vLLM.
"""

from __future__ import annotations

from typing import Any

from kaito_core.reconcile.context import CONFIG_DIR, SERVE_PORT, Context

CONFIG_KEY = "inference_config.yaml"
ENTRY = ["python", "-m", "kaito_core.runtime"]
POD_INDEX_LABEL = "metadata.labels['apps.kubernetes.io/pod-index']"
# The values of vLLM's --dtype (the compute dtype) that a plan may set; a quantised weights
# dtype (int4, float8) is the checkpoint's business, and vLLM refuses it as --dtype.
VLLM_COMPUTE_DTYPES = ("float16", "bfloat16", "float32")


def env(ctx: Context) -> list[dict[str, Any]]:
    out = [{"name": "KAITO_WORKSPACE", "value": ctx.name},
           {"name": "KAITO_NODE_COUNT", "value": str(ctx.group_size)},
           {"name": "KAITO_GPUS_PER_NODE", "value": str(ctx.gpus_per_node)}]
    if ctx.runtime == "vllm":
        # The fraction of each GPU sizing counted on: the launcher passes it to vLLM when the
        # user's inference_config.yaml does not set gpu-memory-utilization itself.
        out += [{"name": "KAITO_TENSOR_PARALLEL_SIZE", "value": str(ctx.tensor_parallel_size)},
                {"name": "KAITO_PIPELINE_PARALLEL_SIZE", "value": str(ctx.pipeline_parallel_size)},
                {"name": "KAITO_GPU_MEMORY_UTILIZATION", "value": str(ctx.gpu_memory_utilization)}]
    if ctx.group_size > 1:
        out += [{"name": "KAITO_NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": POD_INDEX_LABEL}}},
                {"name": "KAITO_LEADER_ADDRESS", "value": ctx.leader_address}]
    return out


def kaito_args(ctx: Context, model: str, adapter_args: list[str]) -> list[str]:
    """Arguments of kaito's own entry point (``python -m kaito_core.runtime``)."""
    args = ["--model", model, "--preset", ctx.preset.name, "--runtime", ctx.runtime,
            "--host", "0.0.0.0", "--port", str(SERVE_PORT),
            "--served-model-name", ctx.preset.name,
            "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"]
    if ctx.dtype in VLLM_COMPUTE_DTYPES and ctx.dtype != ctx.preset.dtype and ctx.runtime == "vllm":
        # e.g. float16 on V100 (compute capability 7.0): vLLM refuses bfloat16 there.
        args += ["--dtype", ctx.dtype]
    return args + adapter_args


def command_and_args(ctx: Context, model: str, adapter_args: list[str], env_list: list[dict[str, Any]]
                     ) -> tuple[list[str], list[str]]:
    """(container command, args): the registered runtime's ``build_command`` when it has one."""
    spec = ctx.runtime_spec
    build = getattr(spec, "build_command", None)
    if build is None:
        return list(ENTRY), kaito_args(ctx, model, adapter_args)
    from kaito_core.types import RuntimeCommandInput

    plain = {e["name"]: e["value"] for e in env_list if "value" in e}
    argv = list(build(RuntimeCommandInput(
        workspace=ctx.name, namespace=ctx.namespace, model=model, preset=ctx.preset.name,
        served_model_name=ctx.preset.name, host="0.0.0.0", port=SERVE_PORT,
        config_path=f"{CONFIG_DIR}/{CONFIG_KEY}", tensor_parallel_size=ctx.tensor_parallel_size,
        pipeline_parallel_size=ctx.pipeline_parallel_size, node_count=ctx.group_size,
        gpus_per_node=ctx.gpus_per_node, dtype=ctx.dtype, adapter_args=tuple(adapter_args), env=plain)))
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise ValueError(f"build_command returned {argv!r}; expected a non-empty list of strings")
    return argv, []
