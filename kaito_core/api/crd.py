"""The Workspace CustomResourceDefinition, generated from the models.

Structural openAPIV3Schema for both versions (v1beta1 stored), status subresource, short names
``wk``/``wks`` and upstream's printer columns, so ``kubectl get workspace`` looks like
upstream's. The chart's copy (``charts/kaito/crds/``) must equal :func:`crd_yaml` (a test
checks it); regenerate with ``kaito crd > charts/kaito/crds/kaito.sh_workspaces.yaml``.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from kaito_core.api import limits
from kaito_core.api import models as m

# Constraints the API server can enforce before our webhook sees the object (clearer and
# earlier refusals than upstream, which leaves most of these to its webhook).
EXTRA: dict[str, dict[str, Any]] = {
    "inference.adapters[].strength": {"pattern": r"^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$"},
    "inference.adapters[].source.name": {"pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
    "resource": {"required": ["labelSelector"]},
    "resource.count": {"minimum": 1, "default": 1},
    # upstream lower-cases the method: "QLoRA" is accepted and means qlora
    "tuning.method": {"pattern": "^([Ll][Oo][Rr][Aa]|[Qq][Ll][Oo][Rr][Aa])$"},
    "tuning.input.urls[]": {"pattern": r"^https?://"},
}
DESCRIPTIONS: dict[str, str] = {
    "resource": "The GPU nodes the Workspace runs on.",
    "resource.instanceType": "GPU instance type, e.g. Standard_NC24ads_A100_v4; omitted: the cheapest that fits.",
    "resource.labelSelector": "Labels the Workspace's nodes carry (and that BYO nodes must match).",
    "resource.count": "Deprecated: the node count is computed from the model's size (default 1).",
    "status.performance": "Metrics from the post-load inference benchmark (upstream's field).",
    "inference": "Serve a model: a preset (or Hugging Face id) or your own pod template.",
    "inference.adapters": "LoRA adapters served beside the base model (at most 10).",
    "tuning": "Fine-tune a preset with LoRA or QLoRA.",
}
PRINTER_COLUMNS = [
    {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"},
    {"name": "ResourceReady", "type": "string", "jsonPath": '.status.conditions[?(@.type=="ResourceReady")].status'},
    {"name": "InferenceReady", "type": "string", "jsonPath": '.status.conditions[?(@.type=="InferenceReady")].status'},
    {"name": "JobStarted", "type": "string", "jsonPath": '.status.conditions[?(@.type=="JobStarted")].status'},
    {"name": "WorkspaceSucceeded", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="WorkspaceSucceeded")].status'},
]
BETA_COLUMNS = [
    {"name": "TargetNodeCount", "type": "integer", "jsonPath": ".status.targetNodeCount"},
    {"name": "State", "type": "string", "jsonPath": ".status.state"},
]
AGE = [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]

_STRICT = {"StrictStr": "string", "StrictInt": "integer", "StrictBool": "boolean"}


def _unwrap(ann: Any) -> Any:
    """Optional[X] -> X, Annotated[X, ...] -> X."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) == 1:
                ann = args[0]
                continue
        return ann


def _schema(ann: Any, path: str) -> dict[str, Any]:
    ann = _unwrap(ann)
    origin = typing.get_origin(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        out = _object(ann, path)
    elif origin is Literal:
        out = {"type": "string", "enum": list(typing.get_args(ann))}
    elif origin is list:
        (item,) = typing.get_args(ann)
        out = {"type": "array", "items": _schema(item, path + "[]")}
    elif origin is dict:
        _, value = typing.get_args(ann)
        value = _unwrap(value)
        if value is Any:
            out = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        else:
            out = {"type": "object", "additionalProperties": _schema(value, path + ".*")}
    elif ann is str or _STRICT.get(getattr(ann, "__name__", "")) == "string":
        out = {"type": "string"}
    elif ann is bool or _STRICT.get(getattr(ann, "__name__", "")) == "boolean":
        out = {"type": "boolean"}
    elif ann is int or _STRICT.get(getattr(ann, "__name__", "")) == "integer":
        out = {"type": "integer"}
    elif ann is float:
        out = {"type": "number"}
    else:
        # pydantic's Strict* are Annotated[str, Strict()]; handled by _unwrap above.
        raise TypeError(f"no CRD schema for {ann!r} at {path}")
    out.update(limits.BOUNDS.get(path, {}))
    out.update(EXTRA.get(path, {}))
    if path in DESCRIPTIONS:
        out = {"description": DESCRIPTIONS[path], **out}
    return out


def _object(model: type[BaseModel], path: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        sub = f"{path}.{key}" if path else key
        if key in ("apiVersion", "kind"):
            props[key] = {"type": "string"}
            continue
        if key == "metadata":
            props[key] = {"type": "object"}
            continue
        props[key] = _schema(info.annotation, sub)
        if info.is_required():
            required.append(key)
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def openapi_schema() -> dict[str, Any]:
    schema = _object(m.Workspace, "")
    schema["description"] = ("Workspace: a model to serve or tune, and the GPU nodes for it. "
                             "resource/inference/tuning sit at the top level, as in upstream KAITO.")
    return schema


def crd() -> dict[str, Any]:
    schema = openapi_schema()
    versions = []
    for version in m.VERSIONS:
        columns = PRINTER_COLUMNS + (BETA_COLUMNS if version == "v1beta1" else []) + AGE
        versions.append({
            "name": version, "served": True, "storage": version == m.STORAGE_VERSION,
            "schema": {"openAPIV3Schema": copy.deepcopy(schema)}, "subresources": {"status": {}},
            "additionalPrinterColumns": columns,
        })
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"workspaces.{m.GROUP}",
                     "annotations": {"kaito.sh/generated-by": "kaito crd"}},
        "spec": {
            "group": m.GROUP,
            "names": {"kind": "Workspace", "listKind": "WorkspaceList", "plural": "workspaces",
                      "singular": "workspace", "shortNames": ["wk", "wks"], "categories": ["workspace"]},
            "scope": "Namespaced",
            "versions": versions,
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `kaito crd` from kaito_core/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)
