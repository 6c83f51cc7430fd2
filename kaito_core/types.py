# Over 400 lines: the whole plugin contract stays in one module, as pytest keeps its hookspecs.
"""Frozen contract types shared by the core and every plugin.

Everything a plugin hands to the core is one of these. They validate themselves on
construction (``__post_init__``) so an impossible preset is refused at registration, with a
message that names the field, the value and what was expected; the plugin manager adds the
plugin's name. Only the standard library is imported here: the operator and the planning CLI
load this module, and must start fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from kaito_core.errors import ContractError

__all__ = [
    "ContractError",
    "TuningRecipe",
    "ModelPreset",
    "InstanceType",
    "Runtime",
    "RuntimeCommandInput",
    "NodeRequest",
    "NodeState",
    "ProvisionerContext",
    "Settings",
    "KubeAPI",
    "Provisioner",
    "DNS1123_LABEL",
    "WEIGHT_SOURCES",
    "TUNING_METHODS",
    "DTYPE_BYTES",
]

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Preset names follow upstream (e.g. "phi-3.5-mini-instruct"): lowercase, digits, '-', '.'.
PRESET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
REVISION = re.compile(r"^[0-9a-f]{40}$")
WEIGHT_SOURCES = ("runtime-download", "oci", "local")
TUNING_METHODS = ("lora", "qlora")
DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "float8": 1.0, "int8": 1.0, "int4": 0.5}
# Stored formats of quantised checkpoints (ModelPreset.weights_dtype): FP8 (DeepSeek, Mistral 3),
# MXFP4 (gpt-oss: 4-bit values + one 8-bit scale per 32, 4.25 bits), int8/int4 (GPTQ, AWQ).
WEIGHT_DTYPE_BYTES = {"fp8": 1.0, "float8": 1.0, "int8": 1.0, "mxfp4": 4.25 / 8, "int4": 0.5}
ARCHITECTURE_SUFFIXES = ("ForCausalLM", "ForConditionalGeneration")


def _freeze(value: Any) -> Any:
    """Deep-freeze mappings and sequences so a registered object cannot change under us."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _require(cond: bool, owner: str, fld: str, value: Any, expected: str) -> None:
    if not cond:
        raise ContractError(owner=owner, field=fld, value=value, expected=expected)


@dataclass(frozen=True)
class TuningRecipe:
    """How a preset is fine-tuned (upstream's tuning defaults, per architecture).

    :param methods: the supported methods, a subset of ``("lora", "qlora")``.
    :param target_modules: default LoRA target modules for the architecture.
    :param memory_gib_per_gpu: GPU memory each method needs per GPU (upstream's tuning memory).

    ``r``, ``lora_alpha``, ``lora_dropout``, ``num_train_epochs``, ``per_device_train_batch_size``
    and ``learning_rate`` are validated but NOT used: as upstream, a Workspace trains with the
    chart's params template (:func:`kaito_core.api.training.defaults.template_config`: r 8, alpha 8,
    dropout 0, batch 1, transformers' epochs and learning rate) or with its ``tuning.config``.
    They stay so that plugins written against earlier kaito versions still register.
    """

    methods: tuple[str, ...] = TUNING_METHODS
    target_modules: tuple[str, ...] = ()
    r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    num_train_epochs: int = 1
    per_device_train_batch_size: int = 1
    learning_rate: float = 2e-4
    memory_gib_per_gpu: Mapping[str, float] = field(default_factory=dict)

    def check(self, owner: str) -> None:
        _set(self, "methods", tuple(self.methods))
        _set(self, "target_modules", tuple(self.target_modules))
        _set(self, "memory_gib_per_gpu", _freeze(dict(self.memory_gib_per_gpu)))
        _require(bool(self.methods) and set(self.methods) <= set(TUNING_METHODS), owner,
                 "tuning.methods", self.methods, f"a non-empty subset of {list(TUNING_METHODS)}")
        _require(bool(self.target_modules) and all(isinstance(m, str) and m for m in self.target_modules),
                 owner, "tuning.target_modules", self.target_modules, "a non-empty list of module names")
        _require(isinstance(self.r, int) and self.r > 0, owner, "tuning.r", self.r, "a positive integer")
        _require(self.lora_alpha > 0, owner, "tuning.lora_alpha", self.lora_alpha, "a positive number")
        _require(0.0 <= self.lora_dropout < 1.0, owner, "tuning.lora_dropout", self.lora_dropout, "0 <= dropout < 1")
        _require(self.num_train_epochs > 0, owner, "tuning.num_train_epochs", self.num_train_epochs, "> 0")
        _require(self.per_device_train_batch_size > 0, owner, "tuning.per_device_train_batch_size",
                 self.per_device_train_batch_size, "> 0")
        _require(self.learning_rate > 0, owner, "tuning.learning_rate", self.learning_rate, "> 0")
        for method, gib in self.memory_gib_per_gpu.items():
            _require(method in self.methods, owner, f"tuning.memory_gib_per_gpu.{method}", method,
                     f"one of the recipe's methods {list(self.methods)}")
            _require(isinstance(gib, (int, float)) and gib > 0, owner, f"tuning.memory_gib_per_gpu.{method}",
                     gib, "a positive number of GiB")


@dataclass(frozen=True)
class ModelPreset:
    """A named model a plugin knows how to size, serve and tune. Pure data.

    Sizes are facts about the published weights (``weight_bytes`` is the safetensors total);
    the attention shape drives the KV-cache estimate in :mod:`kaito_core.sizing`.
    """

    name: str
    family: str
    hf_repo: str
    revision: str
    architecture: str
    parameters: int
    weight_bytes: int
    dtype: str
    context_length: int
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    vocab_size: int = 32000
    head_dim: int | None = None
    intermediate_size: int | None = None
    #: Multi-head latent attention (DeepSeek-V3, Mistral Large 3): the KV cache holds one latent
    #: of ``kv_lora_rank + qk_rope_head_dim`` values per token and layer, shared by all heads.
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    #: The stored format of ``weight_bytes`` when the checkpoint is quantised (``fp8``, ``mxfp4``,
    #: ...) and ``dtype`` is the compute dtype vLLM runs it in; None: the weights are ``dtype``.
    weights_dtype: str | None = None
    license: str = "unknown"
    gated: bool = False
    chat_template: str | None = None
    runtimes: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {"vllm": {}, "transformers": {}})
    default_runtime: str = "vllm"
    image: str = ""
    weights_source: str = "runtime-download"
    tuning: TuningRecipe | None = None
    deprecated: str | None = None
    aliases: tuple[str, ...] = ()
    tag: str = "0.0.1"
    supports_multinode: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        owner = f"preset {self.name!r}"
        _require(isinstance(self.name, str) and bool(PRESET_NAME.fullmatch(self.name)) and len(self.name) <= 63,
                 owner, "name", self.name,
                 "lowercase letters, digits, '-' and '.', starting and ending alphanumeric, at most 63 characters")
        _require(isinstance(self.family, str) and bool(DNS1123_LABEL.fullmatch(self.family)), owner, "family",
                 self.family, "a DNS-1123 label such as 'phi3'")
        _require(isinstance(self.hf_repo, str) and bool(HF_REPO.fullmatch(self.hf_repo)), owner, "hf_repo",
                 self.hf_repo, "a Hugging Face repository id 'org/model'")
        _require(isinstance(self.revision, str) and bool(REVISION.fullmatch(self.revision)), owner, "revision",
                 self.revision, "a pinned 40-hex-digit commit")
        # Multimodal checkpoints served as text models (Gemma 3, Ministral 3) keep upstream's
        # *ForConditionalGeneration class, as their config.json names it.
        _require(isinstance(self.architecture, str) and self.architecture.endswith(ARCHITECTURE_SUFFIXES), owner,
                 "architecture", self.architecture,
                 "a transformers class name ending in 'ForCausalLM' or 'ForConditionalGeneration'")
        for name in ("parameters", "weight_bytes", "context_length", "num_layers", "hidden_size",
                     "num_attention_heads", "num_kv_heads", "vocab_size"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, owner, name, value,
                     "a positive integer")
        _require(self.dtype in DTYPE_BYTES, owner, "dtype", self.dtype, f"one of {sorted(DTYPE_BYTES)}")
        _require(self.num_kv_heads <= self.num_attention_heads, owner, "num_kv_heads", self.num_kv_heads,
                 f"at most num_attention_heads ({self.num_attention_heads})")
        _require(self.num_attention_heads % self.num_kv_heads == 0, owner, "num_kv_heads", self.num_kv_heads,
                 f"a divisor of num_attention_heads ({self.num_attention_heads})")
        if self.head_dim is None:
            _set(self, "head_dim", self.hidden_size // self.num_attention_heads)
        _require(isinstance(self.head_dim, int) and self.head_dim > 0, owner, "head_dim", self.head_dim,
                 "a positive integer")
        _require(self.intermediate_size is None or (isinstance(self.intermediate_size, int)
                                                    and self.intermediate_size > 0),
                 owner, "intermediate_size", self.intermediate_size, "a positive integer (the MLP width) or None")
        self._check_mla(owner)
        _require(self.weights_dtype is None or self.weights_dtype in WEIGHT_DTYPE_BYTES, owner, "weights_dtype",
                 self.weights_dtype, f"None or one of {sorted(WEIGHT_DTYPE_BYTES)}")
        # The weights must be plausible for the parameter count and dtype: a preset that says
        # 7B parameters in 1 MB is a typo that would size nodes wrongly.
        stored = self.weights_dtype or self.dtype
        expected = self.parameters * self.bytes_per_stored_param
        _require(0.5 * expected <= self.weight_bytes <= 2.0 * expected, owner, "weight_bytes", self.weight_bytes,
                 f"about parameters x {self.bytes_per_stored_param:g} bytes ({expected:.3g}) for weights in {stored}")
        _require(isinstance(self.runtimes, Mapping) and bool(self.runtimes), owner, "runtimes", self.runtimes,
                 "a non-empty mapping runtime name -> default engine arguments")
        _set(self, "runtimes", _freeze(dict(self.runtimes)))
        _require(self.default_runtime in self.runtimes, owner, "default_runtime", self.default_runtime,
                 f"one of the preset's runtimes {sorted(self.runtimes)}")
        _require(self.weights_source in WEIGHT_SOURCES, owner, "weights_source", self.weights_source,
                 f"one of {list(WEIGHT_SOURCES)}")
        _require(isinstance(self.gated, bool), owner, "gated", self.gated, "true or false")
        _set(self, "aliases", tuple(self.aliases))
        _require(self.name not in self.aliases, owner, "aliases", self.aliases, "names other than the preset's own")
        if self.tuning is not None:
            _require(isinstance(self.tuning, TuningRecipe), owner, "tuning", self.tuning, "a TuningRecipe")
            self.tuning.check(owner)
        if self.chat_template is not None:
            _require(isinstance(self.chat_template, str) and "{" in self.chat_template, owner, "chat_template",
                     (self.chat_template or "")[:40], "a Jinja chat template")

    def _check_mla(self, owner: str) -> None:
        mla = (self.kv_lora_rank, self.qk_rope_head_dim)
        _require(mla == (None, None) or all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in mla),
                 owner, "kv_lora_rank/qk_rope_head_dim", mla, "both positive integers (multi-head latent attention) "
                 "or both None")

    @property
    def bytes_per_param(self) -> float:
        """Bytes per parameter in the compute dtype."""
        return DTYPE_BYTES[self.dtype]

    @property
    def bytes_per_stored_param(self) -> float:
        """Bytes per parameter as the checkpoint stores them (a quantised format, or ``dtype``)."""
        return WEIGHT_DTYPE_BYTES[self.weights_dtype] if self.weights_dtype else DTYPE_BYTES[self.dtype]

    @property
    def weight_gib(self) -> float:
        return self.weight_bytes / 2**30

    def kv_bytes_per_token(self, dtype_bytes: float | None = None) -> float:
        """KV-cache bytes one token costs: 2 (K and V) x layers x kv_heads x head_dim x dtype, or
        with multi-head latent attention layers x (kv_lora_rank + qk_rope_head_dim) x dtype (vLLM's
        MLA cache; upstream's BytesPerToken)."""
        b = self.bytes_per_param if dtype_bytes is None else dtype_bytes
        if self.kv_lora_rank:
            return self.num_layers * (self.kv_lora_rank + (self.qk_rope_head_dim or 0)) * b
        return 2 * self.num_layers * self.num_kv_heads * (self.head_dim or 0) * b

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, Mapping):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, TuningRecipe):
                return {f: plain(getattr(v, f)) for f in v.__dataclass_fields__}
            return v
        return {f: plain(getattr(self, f)) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class InstanceType:
    """A GPU machine type a cloud offers. ``gpu_memory_gib`` is per GPU."""

    name: str
    cloud: str
    gpu_count: int
    gpu_memory_gib: float
    gpu_model: str
    vcpus: int = 0
    memory_gib: float = 0.0
    hourly_usd: float | None = None
    nvlink: bool = False
    aliases: tuple[str, ...] = ()
    #: CUDA compute capability of each GPU (V100 7.0, A100 8.0, A10 8.6, H100 9.0); None: unknown.
    #: vLLM refuses bfloat16 below 8.0, so the planner serves float16 there (docs/sizing.md).
    compute_capability: float | None = None

    def __post_init__(self) -> None:
        owner = f"instance type {self.name!r}"
        _require(isinstance(self.name, str) and bool(self.name), owner, "name", self.name, "a non-empty string")
        _require(isinstance(self.cloud, str) and bool(DNS1123_LABEL.fullmatch(self.cloud)), owner, "cloud",
                 self.cloud, "a lowercase cloud name such as 'azure' or 'aws'")
        _require(isinstance(self.gpu_count, int) and self.gpu_count > 0, owner, "gpu_count", self.gpu_count,
                 "a positive integer")
        _require(isinstance(self.gpu_memory_gib, (int, float)) and self.gpu_memory_gib > 0, owner,
                 "gpu_memory_gib", self.gpu_memory_gib, "a positive number of GiB per GPU")
        _require(self.hourly_usd is None or self.hourly_usd > 0, owner, "hourly_usd", self.hourly_usd,
                 "a positive price or None")
        _require(isinstance(self.memory_gib, (int, float)) and self.memory_gib >= 0, owner, "memory_gib",
                 self.memory_gib, "the machine's host memory in GiB (0: unknown)")
        _require(self.compute_capability is None or 3.0 <= float(self.compute_capability) < 20, owner,
                 "compute_capability", self.compute_capability, "a CUDA compute capability such as 8.0, or None")
        _set(self, "aliases", tuple(self.aliases))

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_count * self.gpu_memory_gib


@dataclass(frozen=True)
class Runtime:
    """An inference backend (transformers built in; vllm by plugin; any third one by a plugin).

    :param module: the Python module that must import for the backend to work; checked lazily.
    :param image: the container image the cluster pod runs (``kaito render`` shows it); empty:
        kaito's transformers runtime image.
    :param build_command: ``(plan: RuntimeCommandInput) -> Sequence[str]``, the pod's full
        container command (argv) for a Plan; None: kaito's own entry point
        ``python -m kaito_core.runtime --runtime <name> ...``. Must be pure.
    :param local_entry: ``"module:function"`` that ``kaito serve --runtime <name>`` calls on this
        machine with the parsed serve options; None with ``cluster_only=False``: kaito's own
        server handles it (transformers, vllm).
    :param cluster_only: the runtime only runs in a cluster pod; ``kaito serve`` and ``kaito up``
        refuse it with a message naming the runtime.
    """

    name: str
    module: str
    description: str = ""
    supports_multinode: bool = False
    supports_adapters: bool = True
    requires_gpu: bool = False
    image: str = ""
    build_command: Any = None
    local_entry: str | None = None
    cluster_only: bool = False

    def __post_init__(self) -> None:
        owner = f"runtime {self.name!r}"
        _require(isinstance(self.name, str) and bool(DNS1123_LABEL.fullmatch(self.name)), owner, "name", self.name,
                 "a DNS-1123 label")
        _require(isinstance(self.module, str) and bool(self.module), owner, "module", self.module,
                 "the importable module the backend needs")
        _require(self.build_command is None or callable(self.build_command), owner, "build_command",
                 self.build_command, "a callable (plan) -> argv, or None for kaito's own entry point")
        _require(self.local_entry is None or (isinstance(self.local_entry, str) and ":" in self.local_entry),
                 owner, "local_entry", self.local_entry, "'module:function' or None")
        _require(not (self.cluster_only and self.local_entry), owner, "cluster_only", self.cluster_only,
                 "False when local_entry is set (a runtime with a local entry runs locally)")


@dataclass(frozen=True)
class RuntimeCommandInput:
    """What a runtime's ``build_command`` gets from the Plan (all pure data).

    ``config_path`` is the mounted ``inference_config.yaml``; ``env`` is the container env the
    plan sets (KAITO_TENSOR_PARALLEL_SIZE, ... as name -> value; downward-API entries omitted).
    """

    workspace: str
    namespace: str
    model: str
    preset: str
    served_model_name: str
    host: str
    port: int
    config_path: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    node_count: int
    gpus_per_node: int
    dtype: str | None
    adapter_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


# --- Provisioning -------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRequest:
    """One node the Workspace needs. ``name`` is deterministic (derived from the Workspace uid
    and the index), so a crash between two steps can never make a second node."""

    name: str
    workspace: str
    namespace: str
    instance_type: str
    index: int
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, str], ...] = ()
    disk_gib: int = 0
    gpu_count: int = 1

    def __post_init__(self) -> None:
        _set(self, "labels", _freeze(dict(self.labels)))
        _set(self, "taints", _freeze(list(self.taints)))


@dataclass(frozen=True)
class NodeState:
    """What a provisioner observed about one node request.

    ``reason`` is a CamelCase condition reason a user can act on (``QuotaExceeded``,
    ``SKUNotAvailable``, ``LaunchFailed``...), ``message`` the provider's words.
    """

    name: str
    ready: bool
    node_name: str | None = None
    reason: str | None = None
    message: str | None = None
    failed: bool = False


class KubeAPI(Protocol):
    """The few API-server verbs a provisioner may use (implemented by the operator).

    Errors raised by an implementation carry the HTTP status as ``.status`` (409: already
    exists, 404: not found or the kind is not served, e.g. Karpenter's CRDs are absent).
    """

    def get(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None: ...

    def list(self, *, api_version: str, kind: str, namespace: str | None = None,
             labels: Mapping[str, str] | None = None) -> list[dict]: ...

    def create(self, obj: dict) -> dict: ...

    def patch(self, *, api_version: str, kind: str, name: str, namespace: str | None = None,
              patch: Mapping[str, Any]) -> dict: ...

    def delete(self, *, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool: ...


@dataclass
class ProvisionerContext:
    """I/O handles and settings passed to a provisioner by the operator or local mode."""

    kube: KubeAPI | None = None
    settings: Mapping[str, str] = field(default_factory=dict)


class Settings:
    """A provisioner's settings: the operator's (``ProvisionerContext.settings``, Helm values)
    over the process environment, read the same way by every provisioner."""

    def __init__(self, settings: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None):
        import os

        self._values = dict(os.environ if environ is None else environ)
        self._values.update({k: str(v) for k, v in (settings or {}).items()})

    def get(self, key: str, default: str = "") -> str:
        """The value with surrounding blanks removed; ``default`` when unset or blank."""
        return self._values.get(key, "").strip() or default


@runtime_checkable
class Provisioner(Protocol):
    """Makes GPU nodes appear and disappear for Workspaces.

    The core builds the :class:`NodeRequest`s (names, count, instance type, labels, taints):
    a provisioner never re-derives them. ``desired_objects`` is pure (it runs inside the
    reconciler and ``kaito render``) and must give exactly the objects ``ensure`` creates;
    ``ensure``, ``observe`` and ``release`` do I/O and must be idempotent: calling ``ensure``
    twice with the same requests never creates a second node.

    Optional attributes the planner reads (docs/provisioners.md): ``cloud`` (``"azure"``,
    ``"aws"``; or a ``cloud_of(settings)`` method), or ``instance_types`` (the exact names it
    can create): placement picks only from that catalog; ``creates_nodes = False`` for a
    provisioner that uses existing nodes (``byo``, ``local``).
    """

    name: str

    def desired_objects(self, *, requests: Sequence[NodeRequest]) -> list[dict]: ...

    def ensure(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]: ...

    def observe(self, *, requests: Sequence[NodeRequest], ctx: ProvisionerContext) -> Sequence[NodeState]: ...

    def release(self, *, workspace: Any, ctx: ProvisionerContext) -> None: ...
