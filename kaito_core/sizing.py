# Over 400 lines: docs/sizing.md's one rule (estimate + placement) and its constants, read top to bottom.
"""How much GPU a model needs, and where it fits: memory estimate -> instance type and nodes.

Pure functions over the contract types (no torch, no I/O): the operator, the admission webhook,
``kaito plan`` and local mode all call :func:`estimate` and :func:`place`.

The rule follows upstream KAITO's estimator (KAITO-REFERENCE.md, "Sizing facts"): weights +
KV cache for the serving context (2048 tokens, or the configured ``max-model-len``) + activation
and runtime overhead, against the usable part of each GPU (upstream keeps ~0.84 of it). Tuning
is method-aware: LoRA keeps the base weights in their dtype, QLoRA stores them in 4 bits; both
add the adapter's parameters, gradients and Adam state, and the activations kept for backward.
Every decision carries a sentence a person can read (``reasons``); a placement that cannot
work carries ``errors`` that name a fix. docs/sizing.md explains each constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from kaito_core.types import DTYPE_BYTES, InstanceType, ModelPreset, Runtime, TUNING_METHODS

__all__ = [
    "DEFAULT_CONTEXT_TOKENS", "GPU_MEMORY_UTILIZATION", "GPU_RUNTIME_OVERHEAD_GIB", "DISK_HEADROOM_GIB",
    "MAX_NODES", "MULTINODE_RUNTIMES", "MemoryEstimate", "Requirement", "estimate", "place",
    "parallel_sizes", "context_tokens", "intermediate_size", "uses_math_attention", "gpu_memory_utilization",
    "serving_dtype",
]

GIB = 2**30
DEFAULT_CONTEXT_TOKENS = 2048
# Upstream sizes against ~84% of each GPU: the rest is the CUDA context, NCCL buffers and
# allocator fragmentation, which grow with the card, not with the model. Upstream keeps 0.82 on
# A10/A10G (24 GiB cards, where the fixed part weighs more). The generated vLLM config passes
# the same number as `gpu-memory-utilization`, so vLLM reserves what sizing counted on.
GPU_MEMORY_UTILIZATION = 0.84
GPU_MEMORY_UTILIZATION_BY_MODEL = {"A10": 0.82, "A10G": 0.82}
# vLLM's chunked prefill: a long prompt is prefilled in steps of at most this many tokens
# (``max_num_batched_tokens``' default for online serving), so one forward pass never holds a
# whole 128k-token prompt's activations. Upstream's estimator counts the same chunk.
VLLM_PREFILL_CHUNK_TOKENS = 2048
# Fixed per-GPU cost on top of the model: CUDA context, cuBLAS workspaces, CUDA graphs (vLLM).
GPU_RUNTIME_OVERHEAD_GIB = 1.0
# Upstream: disk = weights + 80Gi (image layers, the weights' download cache, logs).
DISK_HEADROOM_GIB = 80
MAX_NODES = 16
# Runtimes that can spread one model over several nodes (vLLM: Ray, TP inside, PP across).
MULTINODE_RUNTIMES = frozenset({"vllm"})

# Activation bytes kept per token, per unit of hidden size, per layer, when training in 16-bit
# with fused (SDPA/flash) attention: Korthikanti et al. 2022, "Reducing Activation Recomputation
# in Large Transformer Models", eq. 1 without the 5*a*s/h attention-score term.
TRAIN_ACTIVATION_BYTES = 34
# Inference forward pass (transformers' code, read for Llama, Phi-3 and Falcon; vLLM is close):
# while one decoder layer runs, a few hidden-sized tensors are alive - the embeddings' output
# (the model keeps it), the layer's input, the residual stream and the normed MLP input - plus
# the MLP's temporaries, counted in units of its intermediate width (MLP_INTERMEDIATE_COPIES).
INFER_HIDDEN_COPIES = 4
# MLP temporaries alive at the MLP's peak, in intermediate-sized tensors, by architecture prefix:
# Phi-3's fused gate_up (2) + act(gate) (1) + the product (1) = 4; Llama-style separate gate and
# up: act(gate), up, the product = 3; a plain MLP (Falcon, GPT-NeoX, GPT-2, ...): up, act(up) = 2.
# Also (second value): the MLP's weight matrices per layer in units of hidden x intermediate
# (gated 3, plain 2), used to recover the intermediate width from the parameter count.
MLP_SHAPES: tuple[tuple[str, int, int], ...] = (
    ("Phi3", 4, 3), ("Falcon", 2, 2), ("GPTNeoX", 2, 2), ("GPT2", 2, 2), ("GPTBigCode", 2, 2),
    ("GPTJ", 2, 2), ("Bloom", 2, 2), ("OPT", 2, 2), ("PhiForCausalLM", 2, 2), ("", 3, 3))
# Multi-query Falcon (one KV head, e.g. Falcon-7B) in transformers always passes an explicit
# attention mask and does not repeat its single K/V head; torch's fused SDPA kernels reject
# mismatched head counts, so the "math" kernel runs and materializes the scores: QK^T and its
# softmax (2 x batch x heads x seq x seq in float32, also for 16-bit inputs), the additive
# float32 mask (batch x seq x seq) and float32 copies of the queries and output (2 x tokens x
# hidden x 4). Measured on torch 2.13 CPU: 2.5-2.6 score-sized tensors at the peak.
MATH_ATTENTION_SCORE_COPIES = 2
# Logits are computed in float32 for the last position of each sequence (transformers keeps
# only the last position during generation; vLLM samples from it).
LOGITS_BYTES = 4
# QLoRA: nf4 weights (0.5 byte) + one fp32 absmax per 64-weight block (0.0625), double-quant
# shrinks that to ~0.016; embeddings and the LM head stay in the compute dtype.
QLORA_BYTES_PER_PARAM = 0.5 + 0.016
# Adapter parameters are trained in fp32: weight 4 + gradient 4 + Adam m and v 8 = 16 bytes.
ADAPTER_STATE_BYTES = 16
# LoRA rank of upstream's params template (kaito_core.api.training.defaults.LORA_CONFIG), what the recipe trains
# with unless the Workspace's tuning.config says otherwise.
LORA_TEMPLATE_RANK = 8

# CPU (local mode, the accuracy bench): no CUDA context. What a process pays besides the model
# state: ~10.5 MiB when transformers loads a model (RSS after loading and reading every weight,
# minus the weights: Python objects, the loader's buffers) and the compute libraries' workspaces
# that stay after the first forward pass once its tensors are freed (oneDNN/MKL packing buffers,
# thread pools): 8.5 MiB in float32, 13.5 MiB in bfloat16. Measured directly (no rule subtracted)
# on a 2-layer, hidden-64 calibration model that is not one of the accuracy bench's shapes; the
# bench re-measures it on every run and prints it. 22 MiB is the mean of 19 and 24.
CPU_RUNTIME_OVERHEAD_GIB = 22 / 1024


def _shorter_context(est: MemoryEstimate, it: InstanceType, method: str | None) -> tuple[str, ...]:
    """The serving context whose KV cache fits one node of ``it``, when the context is what does
    not fit (a 128k preset on a 24 GB GPU): the fix that keeps the instance type."""
    if method is not None or est.kv_cache_gib <= 0:
        return ()
    room = gpu_memory_utilization(it) * it.gpu_memory_gib * it.gpu_count - (est.total_gib - est.kv_cache_gib)
    tokens = int(room / (est.kv_cache_gib / est.context_tokens)) // 1024 * 1024
    if tokens < 1024 or tokens >= est.context_tokens:
        return ()
    return (f"or serve a shorter context on {it.name}: vllm.max-model-len {tokens} (or less) in the Workspace's "
            f"inference config (the KV cache for {est.context_tokens} tokens is {est.kv_cache_gib:.1f} GiB)",)


def _gib(n_bytes: float) -> float:
    return n_bytes / GIB


def gpu_memory_utilization(it: InstanceType | None) -> float:
    """The fraction of each GPU sizing counts on (and vLLM's ``gpu-memory-utilization``)."""
    if it is None:
        return GPU_MEMORY_UTILIZATION
    return GPU_MEMORY_UTILIZATION_BY_MODEL.get(it.gpu_model, GPU_MEMORY_UTILIZATION)


def serving_dtype(dtype: str, it: InstanceType | None) -> str:
    """The dtype a GPU can serve: bfloat16 needs compute capability 8.0 (Ampere); below it
    (V100: 7.0) vLLM refuses bfloat16, so the same 2-byte float16 is used instead."""
    cc = it.compute_capability if it is not None else None
    if dtype == "bfloat16" and cc is not None and cc < 8.0:
        return "float16"
    return dtype


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory one replica of a model needs, split into parts (all GiB).

    ``weights``, ``kv_cache``, ``activations`` and ``tuning_state`` shard across the devices
    that hold the model; ``per_device_overhead`` is paid once per device.
    """

    weights_gib: float
    kv_cache_gib: float
    activations_gib: float
    tuning_state_gib: float
    per_device_overhead_gib: float
    context_tokens: int
    batch: int
    dtype: str
    method: str | None
    device: str
    reasons: tuple[str, ...] = ()

    @property
    def sharded_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.activations_gib + self.tuning_state_gib

    def per_device_gib(self, devices: int = 1) -> float:
        """Memory each of ``devices`` devices needs when the model is spread evenly over them."""
        return self.sharded_gib / max(1, devices) + self.per_device_overhead_gib

    @property
    def total_gib(self) -> float:
        return self.per_device_gib(1)

    def to_dict(self) -> dict[str, Any]:
        return {"weightsGiB": round(self.weights_gib, 3), "kvCacheGiB": round(self.kv_cache_gib, 3),
                "activationsGiB": round(self.activations_gib, 3),
                "tuningStateGiB": round(self.tuning_state_gib, 3),
                "perDeviceOverheadGiB": round(self.per_device_overhead_gib, 3),
                "totalGiB": round(self.total_gib, 3), "contextTokens": self.context_tokens,
                "batch": self.batch, "dtype": self.dtype, "method": self.method, "device": self.device}


def context_tokens(preset: ModelPreset, runtime: str, max_model_len: int | None = None,
                   method: str | None = None) -> tuple[int, str]:
    """The serving context the KV cache is sized for (or the training sequence length), and why."""
    if max_model_len is not None:
        what = "sequence length" if method else "max-model-len"
        return int(max_model_len), f"{what} {max_model_len} from the workspace's config"
    if method is not None:
        n = min(DEFAULT_CONTEXT_TOKENS, preset.context_length)
        return n, f"default training sequence length of {n} tokens"
    engine = preset.runtimes.get(runtime, {}) if runtime else {}
    if isinstance(engine, Mapping) and engine.get("max-model-len"):
        n = int(engine["max-model-len"])
        return n, f"max-model-len {n} from the preset's default {runtime} arguments"
    n = min(DEFAULT_CONTEXT_TOKENS, preset.context_length)
    return n, f"default serving context of {n} tokens"


def _runtime_dtype(preset: ModelPreset, runtime: str, dtype: str | None) -> str:
    if dtype:
        return dtype
    engine = preset.runtimes.get(runtime, {}) if runtime else {}
    value = engine.get("dtype") if isinstance(engine, Mapping) else None
    return value if value in DTYPE_BYTES else preset.dtype


def _lora_params(preset: ModelPreset, r: int, n_modules: int) -> int:
    # Each adapted d_in x d_out projection adds r*(d_in + d_out) parameters; attention
    # projections are about hidden x hidden, so ~2*r*hidden per module per layer.
    return 2 * r * preset.hidden_size * max(1, n_modules) * preset.num_layers


def _mlp_shape(preset: ModelPreset) -> tuple[int, int]:
    """(temporaries at the MLP's peak, weight matrices per layer), both in intermediate units."""
    for prefix, copies, matrices in MLP_SHAPES:
        if preset.architecture.startswith(prefix):
            return copies, matrices
    return MLP_SHAPES[-1][1:]  # pragma: no cover - the last prefix matches everything


def intermediate_size(preset: ModelPreset) -> int:
    """The MLP's intermediate width: the preset's own when it has one, else from the parameters.

    Parameters = embeddings and LM head (2 x vocab x hidden; an untied head is assumed, so a
    model with tied embeddings gets a smaller width than it has) + per layer the attention
    projections (hidden x head_dim x (heads + 2 x kv_heads) + heads x head_dim x hidden) and
    the MLP (gated: 3, plain: 2 hidden x intermediate matrices).
    """
    own = getattr(preset, "intermediate_size", None)
    if isinstance(own, int) and own > 0:
        return own
    h, d = preset.hidden_size, preset.head_dim or preset.hidden_size // preset.num_attention_heads
    attn = h * d * (preset.num_attention_heads + 2 * preset.num_kv_heads) + preset.num_attention_heads * d * h
    mlp = (preset.parameters - 2 * preset.vocab_size * h) / preset.num_layers - attn
    _, matrices = _mlp_shape(preset)
    return max(h, int(mlp / (matrices * h)))  # never below hidden (a tied model's head over-subtracted)


def uses_math_attention(preset: ModelPreset, runtime: str) -> bool:
    """Whether transformers' attention for this model materializes the full score matrix."""
    return runtime != "vllm" and preset.architecture.startswith("Falcon") and preset.num_kv_heads == 1


def _inference_activations(preset: ModelPreset, runtime: str, tokens: int, ctx: int, batch: int,
                           act_bytes: float) -> tuple[float, str]:
    """Peak bytes of one forward pass over ``tokens`` tokens (the prefill), and why."""
    h = preset.hidden_size
    copies, _ = _mlp_shape(preset)
    inter = intermediate_size(preset)
    live = tokens * h * act_bytes * INFER_HIDDEN_COPIES
    mlp = tokens * inter * act_bytes * copies
    logits = batch * preset.vocab_size * LOGITS_BYTES * 2
    if uses_math_attention(preset, runtime):
        seqs = max(1, tokens // ctx)
        scores = (MATH_ATTENTION_SCORE_COPIES * seqs * preset.num_attention_heads * ctx * ctx * 4
                  + seqs * ctx * ctx * 4 + 2 * tokens * h * 4)
        peak, phase = max((mlp, "MLP"), (scores, "attention scores"))
    else:
        scores, peak, phase = 0.0, mlp, "MLP"
    why = (f"activations: {_gib(live + peak + logits):.2f} GiB at the {phase} peak of a {tokens}-token prefill "
           f"(intermediate {inter}, {copies} MLP temporaries"
           + (f"; {preset.architecture} multi-query attention materializes {batch} x "
              f"{preset.num_attention_heads} heads x {ctx}^2 float32 scores" if scores else "") + ")")
    return live + peak + logits, why


def estimate(preset: ModelPreset, *, runtime: str = "vllm", max_model_len: int | None = None, batch: int = 1,
             method: str | None = None, device: str = "gpu", dtype: str | None = None) -> MemoryEstimate:
    """Memory one replica of ``preset`` needs to serve (``method=None``) or tune (lora|qlora).

    :param runtime: the serving runtime; its default engine arguments may set dtype and
        max-model-len.
    :param max_model_len: the serving context (or training sequence length); default: the
        preset's ``max-model-len`` engine argument, else 2048 tokens.
    :param batch: sequences held at once (serving) or per-device batch size (tuning).
    :param device: ``"gpu"`` (CUDA overheads) or ``"cpu"`` (local mode, the accuracy bench).
    :param dtype: override the weights' dtype (e.g. ``"float32"`` on CPU).
    """
    if method is not None and method not in TUNING_METHODS:
        raise ValueError(f"method {method!r}: expected one of {list(TUNING_METHODS)} or None for serving")
    if batch < 1:
        raise ValueError(f"batch {batch!r}: expected a positive integer")
    if device not in ("gpu", "cpu"):
        raise ValueError(f"device {device!r}: expected 'gpu' or 'cpu'")
    reasons: list[str] = []
    ctx, ctx_why = context_tokens(preset, runtime, max_model_len, method)
    reasons.append(f"context: {ctx_why}")
    wdtype = _runtime_dtype(preset, runtime, dtype)
    act_bytes = DTYPE_BYTES[wdtype] if DTYPE_BYTES[wdtype] >= 2 else 2.0
    # A quantised checkpoint keeps its stored format whatever the compute dtype (vLLM's --dtype
    # is the activation dtype for FP8/MXFP4 weights); otherwise the weights are cast to it.
    scale = 1.0 if preset.weights_dtype else DTYPE_BYTES[wdtype] / DTYPE_BYTES[preset.dtype]
    weights = preset.weight_bytes * scale
    tuning_state = 0.0
    if method == "qlora":
        embed = 2 * preset.vocab_size * preset.hidden_size  # embeddings + LM head stay unquantized
        weights = max(0, preset.parameters - embed) * QLORA_BYTES_PER_PARAM + embed * act_bytes
        reasons.append(f"qlora: base weights in 4-bit nf4 ({_gib(weights):.1f} GiB with unquantized embeddings)")
    else:
        stored = f"{preset.weights_dtype}, computing in {wdtype}" if preset.weights_dtype else wdtype
        reasons.append(f"weights: {_gib(weights):.1f} GiB in {stored}")
    if method is None:
        kv = preset.kv_bytes_per_token(act_bytes) * ctx * batch
        # One forward pass over the longest prefill chunk (vLLM's chunked prefill; transformers
        # runs the whole prompt at once).
        chunk = ctx * batch if runtime != "vllm" else min(ctx * batch, VLLM_PREFILL_CHUNK_TOKENS)
        act, act_why = _inference_activations(preset, runtime, chunk, ctx, batch, act_bytes)
        reasons.append(f"kv cache: {_gib(kv):.2f} GiB for {batch} x {ctx} tokens "
                       f"({preset.kv_bytes_per_token(act_bytes) / 1024:.0f} KiB per token)")
        reasons.append(act_why)
    else:
        recipe = preset.tuning
        r = LORA_TEMPLATE_RANK  # the recipe trains with upstream's template rank (TuningRecipe.r is unused)
        modules = len(recipe.target_modules) if recipe else 2
        n_adapter = _lora_params(preset, r, modules)
        tuning_state = n_adapter * ADAPTER_STATE_BYTES
        kv = 0.0
        act = (ctx * batch * preset.hidden_size * preset.num_layers * TRAIN_ACTIVATION_BYTES * act_bytes / 2
               + ctx * batch * preset.vocab_size * LOGITS_BYTES * 2)
        reasons.append(f"{method}: adapter r={r} on {modules} module(s) per layer = {n_adapter / 1e6:.1f}M "
                       f"parameters, {_gib(tuning_state):.2f} GiB with gradients and Adam state")
        reasons.append(f"training activations for {batch} x {ctx} tokens: {_gib(act):.1f} GiB")
    if device == "gpu":
        overhead = GPU_RUNTIME_OVERHEAD_GIB
    else:
        overhead = CPU_RUNTIME_OVERHEAD_GIB
    return MemoryEstimate(weights_gib=_gib(weights), kv_cache_gib=_gib(kv), activations_gib=_gib(act),
                          tuning_state_gib=_gib(tuning_state), per_device_overhead_gib=overhead,
                          context_tokens=ctx, batch=batch, dtype=wdtype, method=method, device=device,
                          reasons=tuple(reasons))


def parallel_sizes(preset: ModelPreset, gpus_per_node: int, node_count: int = 1) -> tuple[int, int]:
    """vLLM (tensor_parallel_size, pipeline_parallel_size) for the GPUs of a placement.

    Tensor parallelism stays inside a node (NVLink/PCIe); nodes are chained by pipeline
    parallelism, as upstream's multi-node vLLM does. vLLM needs the attention heads to split
    evenly over the TP ranks, and the KV heads to split evenly or be replicated; when the node's
    GPU count does not divide them (Falcon-7B has 71 heads) the remaining factor becomes
    pipeline stages inside the node.
    """
    heads, kv = preset.num_attention_heads, preset.num_kv_heads
    tp = 1
    for t in range(gpus_per_node, 0, -1):
        if gpus_per_node % t == 0 and heads % t == 0 and (kv % t == 0 or t % kv == 0):
            tp = t
            break
    return tp, (gpus_per_node // tp) * node_count


@dataclass(frozen=True)
class Requirement:
    """Where and how one Workspace runs: the sizing decision and why.

    ``gpu_memory_required_gib`` is the whole model (all parts plus every GPU's overhead) over
    the placement's ``gpus_per_node * node_count`` GPUs; ``gpu_memory_available_gib`` is the
    usable part (``GPU_MEMORY_UTILIZATION``) of those GPUs. ``per_gpu_required_gib`` is what
    each GPU must hold. When ``errors`` is non-empty the Workspace cannot be placed and the
    numbers describe the closest attempt.
    """

    preset: str
    runtime: str
    instance_type: str | None
    gpus_per_node: int
    node_count: int
    gpu_memory_required_gib: float
    gpu_memory_available_gib: float
    disk_gib: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    per_gpu_required_gib: float = 0.0
    per_gpu_usable_gib: float = 0.0
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    method: str | None = None
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    dtype: str | None = None
    #: the extended resource each GPU is requested as (a MIG partition: nvidia.com/mig-<profile>)
    gpu_resource: str = "nvidia.com/gpu"
    reasons: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    estimate: MemoryEstimate | None = field(default=None, compare=False)
    #: the Workspace's ConfigMaps (name -> object) this was sized with, so that the planner can
    #: re-read their keys (reconcile/inputs.py sets it; sizing never reads it).
    configmaps: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.node_count

    def to_dict(self) -> dict[str, Any]:
        """The ``kaito plan --output json`` shape (camelCase, like the Workspace API)."""
        return {"preset": self.preset, "runtime": self.runtime, "instanceType": self.instance_type,
                "gpusPerNode": self.gpus_per_node, "nodeCount": self.node_count,
                "gpuMemoryRequiredGiB": round(self.gpu_memory_required_gib, 2),
                "gpuMemoryAvailableGiB": round(self.gpu_memory_available_gib, 2),
                "diskGiB": self.disk_gib, "tensorParallelSize": self.tensor_parallel_size,
                "pipelineParallelSize": self.pipeline_parallel_size,
                "perGpuRequiredGiB": round(self.per_gpu_required_gib, 2),
                "perGpuUsableGiB": round(self.per_gpu_usable_gib, 2),
                "contextTokens": self.context_tokens, "method": self.method,
                "gpuMemoryUtilization": self.gpu_memory_utilization, "dtype": self.dtype,
                "reasons": list(self.reasons), "errors": list(self.errors)}


def disk_gib(preset: ModelPreset) -> int:
    return int(math.ceil(preset.weight_gib)) + DISK_HEADROOM_GIB


def _runtime_name(runtime: str | Runtime | None, preset: ModelPreset) -> str:
    if runtime is None:
        return preset.default_runtime
    return runtime.name if isinstance(runtime, Runtime) else str(runtime)


def _multinode(runtime: str | Runtime | None, name: str, preset: ModelPreset, method: str | None) -> bool:
    if method is not None:
        return False  # upstream: a tuning Workspace runs on one node (count <= 1)
    runtime_ok = runtime.supports_multinode if isinstance(runtime, Runtime) else name in MULTINODE_RUNTIMES
    return runtime_ok and preset.supports_multinode


def _fit(est: MemoryEstimate, it: InstanceType, nodes: int) -> tuple[float, float, bool]:
    gpus = it.gpu_count * nodes
    per_gpu = est.per_device_gib(gpus)
    usable = it.gpu_memory_gib * gpu_memory_utilization(it)
    return per_gpu, usable, per_gpu <= usable


def _place_on(preset: ModelPreset, est: MemoryEstimate, it: InstanceType, runtime: str, multinode: bool,
              method: str | None, max_nodes: int) -> Requirement:
    reasons = [f"{preset.name}: needs {est.total_gib:.1f} GiB on one GPU "
               f"({est.sharded_gib:.1f} GiB of model state + {est.per_device_overhead_gib:g} GiB runtime overhead)"]
    reasons += list(est.reasons)
    util = gpu_memory_utilization(it)
    usable = it.gpu_memory_gib * util
    reasons.append(f"{it.name}: {it.gpu_count} x {it.gpu_model} {it.gpu_memory_gib:g} GiB, "
                   f"{usable:.1f} GiB usable per GPU ({util:.0%})")
    errors: list[str] = []
    nodes = 1
    per_gpu, usable, ok = _fit(est, it, 1)
    if ok:
        reasons.append(f"one node: all {it.gpu_count} GPU(s) of the dedicated node hold "
                       f"{per_gpu:.1f} GiB each <= {usable:.1f} GiB usable")
    elif multinode:
        for n in range(2, max_nodes + 1):
            per_gpu, usable, ok = _fit(est, it, n)
            if ok:
                nodes = n
                break
        if ok:
            reasons.append(f"multi-node: one {it.name} is not enough; {nodes} nodes x {it.gpu_count} GPU(s) hold "
                           f"{per_gpu:.1f} GiB each <= {usable:.1f} GiB usable ({runtime} spans nodes)")
        else:
            nodes = max_nodes
            errors.append(f"{preset.name} needs {est.total_gib:.1f} GiB and does not fit on {max_nodes} nodes of "
                          f"{it.name}; choose an instance type with more GPU memory")
    else:
        why = (f"tuning runs on one node" if method else
               f"runtime {runtime!r} cannot span nodes" if runtime not in MULTINODE_RUNTIMES
               else f"preset {preset.name!r} is not marked for multi-node serving")
        errors.append(f"{preset.name} needs {per_gpu:.1f} GiB per GPU on {it.name} but only {usable:.1f} GiB "
                      f"is usable per GPU, and {why}")
    if method is None and runtime == "vllm":
        tp, pp = parallel_sizes(preset, it.gpu_count, nodes)
        if tp * pp > 1:
            reasons.append(f"vLLM: tensor-parallel-size {tp} inside each node"
                           + (f", pipeline-parallel-size {pp}" if pp > 1 else "")
                           + (f" (the {preset.num_attention_heads} attention heads do not split over "
                              f"{it.gpu_count} GPUs)" if tp < it.gpu_count else ""))
    else:
        tp, pp = 1, 1
        if it.gpu_count > 1:
            reasons.append(f"{'tuning' if method else runtime}: layers spread over {it.gpu_count} GPUs "
                           f"(device_map=auto)")
    if method is not None and preset.tuning is not None:
        floor = preset.tuning.memory_gib_per_gpu.get(method)
        if floor is not None and floor > it.gpu_memory_gib:
            errors.append(f"the {preset.name} {method} recipe asks for {floor:g} GiB per GPU; "
                          f"{it.name} has {it.gpu_memory_gib:g} GiB GPUs")
    if est.weights_gib > it.total_gpu_memory_gib * nodes and not errors:
        errors.append(f"{it.name} x {nodes} has {it.total_gpu_memory_gib * nodes:g} GiB of GPU memory, "
                      f"less than the {est.weights_gib:.1f} GiB of weights")
    gpus = it.gpu_count * nodes
    disk = disk_gib(preset)
    reasons.append(f"disk: {disk} GiB (weights {preset.weight_gib:.1f} GiB + {DISK_HEADROOM_GIB} GiB)")
    dtype = serving_dtype(est.dtype, it) if method is None else est.dtype
    if dtype != est.dtype:
        reasons.append(f"dtype: {it.gpu_model} (compute capability {it.compute_capability:g}) has no bfloat16 in "
                       f"vLLM; serving in float16 (same memory)")
    return Requirement(
        preset=preset.name, runtime=runtime, instance_type=it.name, gpus_per_node=it.gpu_count, node_count=nodes,
        gpu_memory_required_gib=est.sharded_gib + est.per_device_overhead_gib * gpus,
        gpu_memory_available_gib=usable * gpus, disk_gib=disk, tensor_parallel_size=tp,
        pipeline_parallel_size=pp, per_gpu_required_gib=per_gpu, per_gpu_usable_gib=usable,
        context_tokens=est.context_tokens, method=method, gpu_memory_utilization=util, dtype=dtype,
        reasons=tuple(reasons), errors=tuple(errors), estimate=est)


def _cost_key(req: Requirement, it: InstanceType) -> tuple:
    # No price list ships with kaito: without prices, fewer nodes, then less GPU memory, then
    # fewer GPUs and vCPUs stand in for cost (they track the clouds' price lists closely).
    price = it.hourly_usd * req.node_count if it.hourly_usd is not None else math.inf
    return (req.node_count, price, it.total_gpu_memory_gib * req.node_count, req.total_gpus,
            it.vcpus, it.name)


def place(preset: ModelPreset, instance_types: Iterable[InstanceType] | Mapping[str, InstanceType], *,
          instance_type: str | None = None, runtime: str | Runtime | None = None,
          max_model_len: int | None = None, batch: int = 1, method: str | None = None,
          cloud: str | None = None, max_nodes: int = MAX_NODES) -> Requirement:
    """Decide where ``preset`` runs: instance type, GPUs per node, node count, TP/PP, disk.

    :param instance_types: the catalog (``registry.instance_types`` or any iterable).
    :param instance_type: the Workspace's ``resource.instanceType``; None (BYO / Karpenter
        choosing) picks the cheapest fitting type of the catalog.
    :param runtime: runtime name or :class:`Runtime`; default the preset's default runtime.
    :param method: None to serve, ``"lora"``/``"qlora"`` to tune.
    :param cloud: only consider the catalog's types of this cloud (``"azure"``, ``"aws"``) when
        choosing a type (an explicit ``instance_type`` is looked up in the whole catalog).
    :param max_nodes: the most nodes a multi-node placement may use.
    :returns: a :class:`Requirement`; check ``errors`` (never raises for a misfit).
    """
    catalog: dict[str, InstanceType] = (dict(instance_types) if isinstance(instance_types, Mapping)
                                        else {it.name: it for it in instance_types})
    rt = _runtime_name(runtime, preset)
    est = estimate(preset, runtime=rt, max_model_len=max_model_len, batch=batch, method=method)
    errors: list[str] = []
    if method is None and rt not in preset.runtimes:
        errors.append(f"runtime {rt!r} is not supported by preset {preset.name!r}; "
                      f"use one of {sorted(preset.runtimes)} (annotation kaito.sh/runtime)")
    if est.context_tokens > preset.context_length:
        errors.append(f"max-model-len {est.context_tokens} exceeds {preset.name}'s context limit of "
                      f"{preset.context_length} tokens; set vllm.max-model-len <= {preset.context_length}")
    multinode = _multinode(runtime, rt, preset, method)
    if instance_type is not None:
        it = catalog.get(instance_type) or next(
            (t for t in catalog.values() if instance_type in t.aliases), None)
        if it is None:
            known = ", ".join(sorted(catalog)) or "none registered"
            return Requirement(preset=preset.name, runtime=rt, instance_type=instance_type, gpus_per_node=0,
                               node_count=0, gpu_memory_required_gib=est.total_gib, gpu_memory_available_gib=0.0,
                               disk_gib=disk_gib(preset), context_tokens=est.context_tokens, method=method,
                               reasons=est.reasons, estimate=est,
                               errors=tuple(errors + [f"resource.instanceType {instance_type!r} is not in the "
                                                      f"instance-type catalog; known: {known}"]))
        req = _place_on(preset, est, it, rt, multinode, method, max_nodes)
        if not req.ok:
            same_cloud = {n: t for n, t in catalog.items() if t.cloud == it.cloud}
            alt = _cheapest(preset, est, same_cloud, rt, multinode=False, method=method, max_nodes=1)
            if alt is not None and alt.instance_type != it.name:
                req = _with(req, errors=req.errors + (f"an instance type that fits on one node: {alt.instance_type} "
                                                      f"({alt.gpus_per_node} GPU(s))",))
            req = _with(req, errors=req.errors + _shorter_context(est, it, method))
        return _with(req, errors=tuple(errors) + req.errors) if errors else req
    if cloud is not None:
        catalog = {n: t for n, t in catalog.items() if t.cloud == cloud}
    best = _cheapest(preset, est, catalog, rt, multinode=multinode, method=method, max_nodes=max_nodes)
    if best is None:
        return Requirement(preset=preset.name, runtime=rt, instance_type=None, gpus_per_node=0, node_count=0,
                           gpu_memory_required_gib=est.total_gib, gpu_memory_available_gib=0.0,
                           disk_gib=disk_gib(preset), context_tokens=est.context_tokens, method=method,
                           reasons=est.reasons, estimate=est,
                           errors=tuple(errors + [f"no instance type in the catalog ({len(catalog)} types) fits "
                                                  f"{preset.name} ({est.total_gib:.1f} GiB)"]))
    note = (f"no instanceType given: {best.instance_type} is the cheapest fitting type of "
            f"{len(catalog)} in the catalog (fewest nodes, then least GPU memory)")
    return _with(best, reasons=(note,) + best.reasons, errors=tuple(errors) + best.errors)


def _cheapest(preset: ModelPreset, est: MemoryEstimate, catalog: Mapping[str, InstanceType], runtime: str, *,
              multinode: bool, method: str | None, max_nodes: int) -> Requirement | None:
    fits = []
    for it in catalog.values():
        req = _place_on(preset, est, it, runtime, multinode, method, max_nodes)
        if req.ok:
            fits.append((_cost_key(req, it), req))
    return min(fits, key=lambda x: x[0])[1] if fits else None


def _with(req: Requirement, **changes: Any) -> Requirement:
    from dataclasses import replace

    return replace(req, **changes)


def place_all(presets: Sequence[ModelPreset], instance_types: Iterable[InstanceType], **kwargs: Any
              ) -> dict[tuple[str, str], Requirement]:
    """Every preset on every instance type (for tables and tests)."""
    its = list(instance_types)
    return {(p.name, it.name): place(p, its, instance_type=it.name, **kwargs) for p in presets for it in its}
