"""From a Workspace and the plugins' registry to the planner's inputs: preset and sizing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from kaito_core.errors import KaitoError


@dataclass
class Inputs:
    preset: Any
    requirement: Any
    problems: list[str]


def max_model_len(configmap: Mapping[str, Any] | None) -> int | None:
    """``vllm.max-model-len`` from an inference ConfigMap object, if set."""
    if not configmap:
        return None
    text = (configmap.get("data") or {}).get("inference_config.yaml")
    if not text:
        return None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return None
    value = (doc.get("vllm") or {}).get("max-model-len") if isinstance(doc, dict) else None
    return int(value) if isinstance(value, int) and value > 1 else None


def resolve(ws: Any, registry: Any, *, config: Mapping[str, Any] | None = None) -> Inputs:
    """The preset and the sizing Requirement of ``ws`` (problems instead of exceptions)."""
    from kaito_core import sizing

    name = ws.preset_name
    if name is None:
        return Inputs(None, None, [])  # inference.template: the user's pod, no sizing
    try:
        preset = registry.get_preset(name)
    except (KaitoError, LookupError) as exc:
        return Inputs(None, None, [str(exc)])
    from kaito_core.reconcile.plan import runtime_of

    method = ws.tuning.method if ws.tuning is not None else None
    it = ws.resource.instance_type if ws.resource is not None else None
    runtime = runtime_of(ws, preset) if method is None else None
    req = sizing.place(preset, registry.instance_types, instance_type=it, runtime=runtime,
                       max_model_len=max_model_len(config) if method is None else None, method=method)
    return Inputs(preset, req, [])
