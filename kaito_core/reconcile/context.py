"""What the object builders need, derived once from the Workspace, preset and sizing (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kaito_core.reconcile import names

SERVE_PORT = 5000
WEIGHTS_DIR = "/workspace/weights"
CONFIG_DIR = "/mnt/config"
ADAPTER_DIR = "/mnt/adapter"
DATA_DIR = "/mnt/data"
RESULTS_DIR = "/mnt/results"


def wanted_memory_gib(weight_gib: float, gpus: int) -> int:
    """Host memory a pod wants: the weights' share of one GPU (staged through RAM) + 4 GiB, 4..64."""
    return max(4, min(64, int(math.ceil(weight_gib / max(1, gpus))) + 4))


@dataclass(frozen=True)
class Context:
    """Identity, ownership and sizing of one Workspace, as the builders see it."""

    ws: Any  # kaito_core.api.models.Workspace
    preset: Any  # kaito_core.types.ModelPreset | None (None for inference.template)
    name: str
    namespace: str
    uid: str
    runtime: str
    image: str
    gpus_per_node: int
    node_count: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    disk_gib: int = 0
    revision: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: what the planner decided beyond sizing (reconcile/plan.py): the fraction of each GPU vLLM
    #: may use, the serving dtype on this GPU, host CPU/memory requests that fit the instance,
    #: the user's ``vllm`` config keys, and the registered Runtime (its image and command hook).
    gpu_memory_utilization: float = 0.84
    dtype: str | None = None
    cpu: str = "2"
    memory_gib: int = 0
    user_vllm: dict[str, Any] = field(default_factory=dict)
    runtime_spec: Any = None
    #: nodes that serve ONE model together (a vLLM + Ray group); 1 when the pods are
    #: independent replicas (a template, or a preset whose GPUs are unknown, with resource.count > 1).
    group_size: int = 1
    #: the extended resource one GPU is requested as (MIG: nvidia.com/mig-<profile>).
    gpu_resource: str = "nvidia.com/gpu"

    @property
    def labels(self) -> dict[str, str]:
        return names.child_labels(self.name, self.namespace, self.uid)

    @property
    def owner(self) -> dict[str, Any]:
        return names.owner_reference(name=self.name, uid=self.uid)

    def metadata(self, name: str, *, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": self.labels,
                                "ownerReferences": [self.owner]}
        if annotations:
            meta["annotations"] = dict(annotations)
        return meta

    @property
    def weight_gib(self) -> float:
        return self.preset.weight_gib if self.preset is not None else 0.0

    @property
    def host_memory_gib(self) -> int:
        """Host memory each pod requests: the planner's (fitted to the instance), else room to
        stage the weights' largest shard + the server."""
        if self.memory_gib:
            return self.memory_gib
        return wanted_memory_gib(self.weight_gib, self.gpus_per_node * self.node_count)

    @property
    def leader_address(self) -> str:
        """Pod 0's stable DNS name through the headless Service (multi-node rendezvous)."""
        return f"{self.name}-0.{names.headless_name(self.name)}.{self.namespace}.svc.cluster.local"

    @property
    def label_selector(self) -> dict[str, Any] | None:
        res = self.ws.resource
        if res is None or res.label_selector is None:
            return None
        return res.label_selector.to_k8s()

    @property
    def pull_secrets(self) -> list[str]:
        spec = self.ws.tuning if self.ws.tuning is not None else self.ws.inference
        out: list[str] = []
        if spec is not None and spec.preset is not None and spec.preset.preset_options is not None:
            out += list(spec.preset.preset_options.image_pull_secrets or [])
        return out

    @property
    def model_access_secret(self) -> str | None:
        spec = self.ws.tuning if self.ws.tuning is not None else self.ws.inference
        if spec is not None and spec.preset is not None and spec.preset.preset_options is not None:
            return spec.preset.preset_options.model_access_secret
        return None
