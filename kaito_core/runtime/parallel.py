"""The parallel plan a vLLM pod was given, read from the environment the operator sets.

The reconciler sizes the Workspace once (``reconcile.plan``) and hands the result to every
inference pod as environment variables; this module is the reading side of that contract:

=============================== =====================================================
``KAITO_TENSOR_PARALLEL_SIZE``  vLLM ``--tensor-parallel-size`` (GPUs one layer spans)
``KAITO_PIPELINE_PARALLEL_SIZE`` vLLM ``--pipeline-parallel-size`` (stages; one per node)
``KAITO_NODE_COUNT``            pods (= nodes) in the group; the StatefulSet's replicas
``KAITO_GPUS_PER_NODE``         ``nvidia.com/gpu`` each pod holds
``KAITO_NODE_RANK``             this pod's index 0..N-1 (``apps.kubernetes.io/pod-index``)
``KAITO_LEADER_ADDRESS``        pod 0's DNS name behind the headless Service
=============================== =====================================================

Upstream KAITO puts TP = GPUs per node and PP = nodes (``configureParallelism`` in
pkg/model/interface.go), so TP x PP is every GPU the group holds. Standard library only.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from kaito_core.errors import KaitoError

log = logging.getLogger("kaito.runtime.vllm")

ENV_TP = "KAITO_TENSOR_PARALLEL_SIZE"
ENV_PP = "KAITO_PIPELINE_PARALLEL_SIZE"
ENV_NODES = "KAITO_NODE_COUNT"
ENV_GPUS = "KAITO_GPUS_PER_NODE"
ENV_RANK = "KAITO_NODE_RANK"
ENV_LEADER = "KAITO_LEADER_ADDRESS"

# vLLM's short aliases (vllm/engine/arg_utils.py: "-tp", "-pp", "-dp") spelled as config keys.
ALIASES = {"tp": "tensor-parallel-size", "pp": "pipeline-parallel-size", "dp": "data-parallel-size"}


class PlanError(KaitoError, ValueError):
    """The pod's parallel plan (environment) or the engine config contradicts itself."""


@dataclass(frozen=True)
class GroupPlan:
    """TP/PP and the pod's place in its group. ``None`` fields were not set by the operator
    (e.g. ``kaito serve`` on a workstation): the launcher then leaves those flags alone."""

    tensor_parallel_size: int | None = None
    pipeline_parallel_size: int | None = None
    node_count: int = 1
    gpus_per_node: int | None = None
    node_rank: int = 0
    leader_address: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.node_rank < self.node_count:
            raise PlanError(f"environment {ENV_RANK} is {self.node_rank}, expected 0..{self.node_count - 1} "
                            f"({ENV_NODES}={self.node_count}); the StatefulSet's pod index is out of range")
        if self.node_count > 1 and not self.leader_address:
            raise PlanError(f"environment {ENV_NODES} is {self.node_count} but {ENV_LEADER} is not set; a "
                            "multi-node pod needs pod 0's address (<ws>-0.<ws>-headless.<ns>.svc.cluster.local)")

    @property
    def multinode(self) -> bool:
        return self.node_count > 1

    @property
    def leader(self) -> bool:
        return self.node_rank == 0

    @property
    def total_gpus(self) -> int | None:
        return None if self.gpus_per_node is None else self.gpus_per_node * self.node_count

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "GroupPlan":
        env = os.environ if environ is None else environ
        nodes = _int(env, ENV_NODES) or 1
        return cls(tensor_parallel_size=_int(env, ENV_TP), pipeline_parallel_size=_int(env, ENV_PP),
                   node_count=nodes, gpus_per_node=_int(env, ENV_GPUS),
                   node_rank=_rank(env) if nodes > 1 else (_int(env, ENV_RANK, minimum=0) or 0),
                   leader_address=(env.get(ENV_LEADER) or "").strip() or None)


def _rank(env: Mapping[str, str]) -> int:
    """KAITO_NODE_RANK, else the StatefulSet ordinal at the end of the pod's hostname: the
    ``apps.kubernetes.io/pod-index`` label the env comes from exists only since Kubernetes 1.28,
    and a group where every pod believes it is pod 0 would start N Ray heads."""
    rank = _int(env, ENV_RANK, minimum=0)
    if rank is not None:
        return rank
    match = re.search(r"-(\d+)$", env.get("HOSTNAME", ""))
    if match is None:
        raise PlanError(f"environment {ENV_RANK} is not set and the hostname {env.get('HOSTNAME', '')!r} carries "
                        "no StatefulSet ordinal; a multi-node pod needs its index (0 = leader)")
    log.info("%s not set; rank %s from the hostname %s", ENV_RANK, match.group(1), env.get("HOSTNAME"))
    return int(match.group(1))


def _int(env: Mapping[str, str], name: str, minimum: int = 1) -> int | None:
    raw = env.get(name)
    if raw is None or not str(raw).strip():
        return None
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise PlanError(f"environment {name} is {raw!r}, expected a whole number >= {minimum}") from None
    if value < minimum:
        raise PlanError(f"environment {name} is {value}, expected a whole number >= {minimum}")
    return value


def _as_int(key: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PlanError(f"inference_config.yaml vllm.{key} is {value!r}, expected a whole number") from None


def apply_plan(args: dict[str, Any], user: Mapping[str, Any], plan: GroupPlan) -> dict[str, Any]:
    """Put the plan's TP/PP over ``args``; refuse a user value (``user``: the
    ``inference_config.yaml`` ``vllm:`` keys, normalised) that contradicts it.

    Admission refuses these first (PLAN's webhook); this is the backstop for a ConfigMap edited
    after admission, so vLLM never starts with a world size the pod's GPUs cannot hold.
    """
    out = dict(args)
    for key, env_name, planned in (("tensor-parallel-size", ENV_TP, plan.tensor_parallel_size),
                                   ("pipeline-parallel-size", ENV_PP, plan.pipeline_parallel_size)):
        if planned is None:
            continue
        if key in user and _as_int(key, user[key]) != planned:
            raise PlanError(f"inference_config.yaml vllm.{key} is {user[key]!r}, but this Workspace's plan "
                            f"gives {planned} ({env_name}); remove vllm.{key} from the ConfigMap or set it to "
                            f"{planned}")
        out[key] = planned
    if plan.multinode:
        backend = user.get("distributed-executor-backend")
        if backend not in (None, "ray"):
            raise PlanError(f"inference_config.yaml vllm.distributed-executor-backend is {backend!r}, but a "
                            f"{plan.node_count}-node Workspace runs vLLM on a Ray cluster; remove the key or set "
                            "it to ray")
        # vLLM >= 0.12 no longer picks Ray by itself (upstream KAITO configureParallelism sets it too).
        out["distributed-executor-backend"] = "ray"
    check_world_size(out, plan)
    return out


def world_size(args: Mapping[str, Any]) -> int:
    """GPUs one vLLM engine spans: TP x PP x DP (vLLM's ParallelConfig.world_size x DP)."""
    return (_as_int("tensor-parallel-size", args.get("tensor-parallel-size", 1))
            * _as_int("pipeline-parallel-size", args.get("pipeline-parallel-size", 1))
            * _as_int("data-parallel-size", args.get("data-parallel-size", 1)))


def check_world_size(args: Mapping[str, Any], plan: GroupPlan) -> None:
    """World size = the GPUs of the group: more cannot start; fewer across nodes leaves a node
    idle (Ray packs the placement group onto the first nodes); fewer on one node only warns."""
    total = plan.total_gpus
    if total is None:
        return
    need = world_size(args)
    tp = _as_int("tensor-parallel-size", args.get("tensor-parallel-size", 1))
    where = f"{plan.node_count} node(s) x {plan.gpus_per_node} GPU(s) ({ENV_NODES}, {ENV_GPUS})"
    if need > total:
        raise PlanError(f"vLLM would need {need} GPUs (tensor-parallel-size x pipeline-parallel-size x "
                        f"data-parallel-size), but this group has {total}: {where}; lower the sizes in the "
                        "ConfigMap or give the Workspace more GPUs")
    if plan.multinode and tp > (plan.gpus_per_node or tp):
        raise PlanError(f"vllm.tensor-parallel-size {tp} is larger than the {plan.gpus_per_node} GPUs of one node; "
                        "tensor parallelism stays inside a node, pipeline stages span nodes")
    if plan.multinode and need != total:
        raise PlanError(f"vLLM would use {need} of the {total} GPUs of {where}; a multi-node group must use "
                        "them all (tensor-parallel-size = GPUs per node, pipeline-parallel-size = nodes)")
    if need < total:
        log.warning("vLLM uses %d of the %d GPUs of this pod (tensor x pipeline x data parallel)", need, total)
