"""The shape of ``inference.template`` (a core/v1 PodTemplateSpec): the parts kaito reads or
merges into, and the parts whose wrong type would only surface as a StatefulSet the API server
refuses (container lists, command/args, env, ports, resources and their quantities).

Upstream's CRD keeps the template schemaless (``x-kubernetes-preserve-unknown-fields``), so
its mistakes used to surface as a failed StatefulSet long after admission; here they are
refused with the field path. Part of :func:`kaito_core.api.validation.validate_workspace`.
"""

from __future__ import annotations

import re
from typing import Any

from kaito_core.errors import MISSING

ValidationResult = Any  # kaito_core.api.validation.ValidationResult (which imports this module)
ROOT = "inference.template"
# k8s.io/apimachinery resource.Quantity: <number><suffix>, suffix binary (Ki..Ei), decimal
# (n u m "" k M G T P E) or an exponent. "1gb" and "1 Gi" are not quantities.
QUANTITY = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?")
CONTAINER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
GPU_RESOURCE = "nvidia.com/gpu"


def check(template: Any, r: ValidationResult) -> None:
    """Every shape problem of ``template`` (already known to be a mapping)."""
    meta = template.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict):
            r.error(f"{ROOT}.metadata", meta, "must be a mapping (ObjectMeta)")
        else:
            for key in ("labels", "annotations"):
                _string_map(f"{ROOT}.metadata.{key}", meta.get(key), r)
    spec = template.get("spec")
    if spec is None:
        r.error(f"{ROOT}.spec", MISSING, "is required", "template is a PodTemplateSpec with a 'spec'")
        return
    if not isinstance(spec, dict):
        r.error(f"{ROOT}.spec", spec, "must be a mapping (a PodSpec)", "for example spec: {containers: [...]}")
        return
    path = f"{ROOT}.spec"
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        r.error(f"{path}.containers", MISSING if containers is None else containers,
                "must be a non-empty list of containers", "for example containers: [{name: server, image: ...}]")
    else:
        _containers(f"{path}.containers", containers, r)
    if spec.get("initContainers") is not None:
        if not isinstance(spec["initContainers"], list):
            r.error(f"{path}.initContainers", spec["initContainers"], "must be a list of containers")
        else:
            _containers(f"{path}.initContainers", spec["initContainers"], r)
    for key in ("volumes", "tolerations", "imagePullSecrets"):
        _list_of_maps(f"{path}.{key}", spec.get(key), r)
    for key in ("affinity", "securityContext"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            r.error(f"{path}.{key}", spec[key], "must be a mapping")
    _string_map(f"{path}.nodeSelector", spec.get("nodeSelector"), r)


def _containers(path: str, containers: list, r: ValidationResult) -> None:
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            r.error(p, c, "must be a mapping (a container with name and image)")
            continue
        name = c.get("name")
        if not isinstance(name, str) or not name:
            r.error(f"{p}.name", MISSING if name is None else name, "is required (a string)")
        elif len(name) > 63 or not CONTAINER_NAME.fullmatch(name):
            r.error(f"{p}.name", name, "must be a DNS-1123 label (lowercase letters, digits, '-')")
        image = c.get("image")
        if image is not None and (not isinstance(image, str) or not image.strip()):
            r.error(f"{p}.image", image, "must be an image reference (a string)")
        for key in ("command", "args"):
            value = c.get(key)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                r.error(f"{p}.{key}", value, "must be a list of strings", f'quote numbers: {key}: ["--port", "80"]')
        for key in ("env", "ports", "volumeMounts", "envFrom"):
            _list_of_maps(f"{p}.{key}", c.get(key), r)
        for j, env in enumerate(c.get("env") or [] if isinstance(c.get("env"), list) else []):
            if isinstance(env, dict) and not isinstance(env.get("name"), str):
                r.error(f"{p}.env[{j}].name", env.get("name", MISSING), "is required (a string)")
            if isinstance(env, dict) and env.get("value") is not None and not isinstance(env["value"], str):
                r.error(f"{p}.env[{j}].value", env["value"], "must be a string", 'quote it: value: "1"')
        _resources(f"{p}.resources", c.get("resources"), r)
        for key in ("securityContext", "readinessProbe", "livenessProbe", "startupProbe"):
            if c.get(key) is not None and not isinstance(c[key], dict):
                r.error(f"{p}.{key}", c[key], "must be a mapping")


def _resources(path: str, res: Any, r: ValidationResult) -> None:
    if res is None:
        return
    if not isinstance(res, dict):
        r.error(path, res, "must be a mapping with limits and requests")
        return
    for section in ("limits", "requests"):
        values = res.get(section)
        if values is None:
            continue
        if not isinstance(values, dict):
            r.error(f"{path}.{section}", values, "must be a mapping of resource name to quantity")
            continue
        for name, qty in values.items():
            p = f"{path}.{section}[{name}]"
            if isinstance(qty, bool) or not isinstance(qty, (str, int, float)) \
                    or not QUANTITY.fullmatch(str(qty)):
                r.error(p, qty, "is not a Kubernetes quantity",
                        "a number with an optional suffix: 500m, 2, 1Gi, 16Gi (not 1gb or 1 GB)")
            elif name == GPU_RESOURCE and not re.fullmatch(r"[0-9]+", str(qty)):
                r.error(p, qty, "must be a whole number of GPUs")


def _list_of_maps(path: str, value: Any, r: ValidationResult) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        r.error(path, value, "must be a list")
        return
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            r.error(f"{path}[{i}]", item, "must be a mapping")


def _string_map(path: str, value: Any, r: ValidationResult) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        r.error(path, value, "must be a mapping of strings")
        return
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            r.error(f"{path}[{key}]", item, "must be a string", 'quote it: "true", "1"')
