"""Validate NodeClaims / NodePools against Karpenter's own CRDs (shipped in ``crds/``).

The CRD's ``openAPIV3Schema`` is checked with jsonschema (unknown fields refused, as the API
server prunes or rejects them). The CEL rules (``x-kubernetes-validations``) that matter for
what we generate are re-stated by hand below, since no CEL evaluator is at hand; metadata is
checked like the API server does (DNS-1123 subdomain name, label syntax).
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

import yaml

from kaito_core.errors import KaitoError

CRD_FILES = {"NodeClaim": "karpenter.sh_nodeclaims.yaml", "NodePool": "karpenter.sh_nodepools.yaml"}
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
RESTRICTED_KARPENTER_KEYS = ("karpenter.sh/capacity-type", "karpenter.sh/nodepool")


class SchemaError(KaitoError, ValueError):
    """A generated object the API server would refuse; lists every problem."""


def crd(kind: str) -> dict[str, Any]:
    return copy.deepcopy(_crd(kind))


@lru_cache(maxsize=None)
def _crd(kind: str) -> dict[str, Any]:
    text = resources.files("kaito_provisioner_karpenter").joinpath("crds", CRD_FILES[kind]).read_text()
    return yaml.safe_load(text)


def _schema(kind: str, version: str) -> dict[str, Any]:
    for v in _crd(kind)["spec"]["versions"]:
        if v["name"] == version:
            return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise SchemaError(f"{kind}: version {version!r} is not served by the CRD")


def _strict(node: Any) -> Any:
    """Objects with ``properties`` and no ``additionalProperties`` refuse unknown fields."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


def _label_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(LABEL_NAME.fullmatch(name)) and len(name) <= 63 and (
        not prefix or (len(prefix) <= 253 and bool(DNS1123_SUBDOMAIN.fullmatch(prefix))))


def _metadata_problems(meta: Mapping[str, Any]) -> list[str]:
    out = []
    name = meta.get("name") or ""
    if not (DNS1123_SUBDOMAIN.fullmatch(name) and len(name) <= 253):
        out.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    for key, value in (meta.get("labels") or {}).items():
        if not _label_key_ok(key):
            out.append(f"metadata.labels key {key!r} is not a valid label name")
        if not (isinstance(value, str) and LABEL_VALUE.fullmatch(value) and len(value) <= 63):
            out.append(f"metadata.labels[{key!r}] value {value!r} is not a valid label value")
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            out.append(f"metadata.annotations[{key!r}] must be a string, got {value!r}")
    return out


def _cel_problems(path: str, requirements: list[Mapping[str, Any]]) -> list[str]:
    """The CEL rules on NodeClaim/NodePool requirements (see the CRDs' x-kubernetes-validations)."""
    out = []
    for i, req in enumerate(requirements or []):
        key, op, values = req.get("key", ""), req.get("operator"), req.get("values") or []
        domain = key.split("/")[0] if "/" in key else ""
        if domain.endswith("karpenter.sh") and key not in RESTRICTED_KARPENTER_KEYS:
            out.append(f"{path}[{i}].key {key!r}: label domain \"karpenter.sh\" is restricted")
        if key == "kubernetes.io/hostname":
            out.append(f"{path}[{i}].key: label \"kubernetes.io/hostname\" is restricted")
        if op == "In" and not values:
            out.append(f"{path}[{i}]: requirements with operator 'In' must have a value defined")
    return out


def problems(obj: Mapping[str, Any]) -> list[str]:
    """Every reason the API server (with Karpenter's CRDs installed) would refuse ``obj``."""
    import jsonschema

    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if kind not in CRD_FILES or not api_version.startswith("karpenter.sh/"):
        return [f"{api_version}/{kind} is not a Karpenter NodeClaim or NodePool"]
    validator = jsonschema.Draft202012Validator(_schema(kind, api_version.split("/", 1)[1]))
    out = [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
           for e in sorted(validator.iter_errors(dict(obj)), key=lambda e: list(map(str, e.absolute_path)))]
    out += _metadata_problems(obj.get("metadata") or {})
    spec = obj.get("spec") or {}
    if kind == "NodeClaim":
        out += _cel_problems("spec.requirements", spec.get("requirements") or [])
    else:
        template = (spec.get("template") or {})
        out += _cel_problems("spec.template.spec.requirements", (template.get("spec") or {}).get("requirements") or [])
        for key in ((template.get("metadata") or {}).get("labels") or {}):
            if key.split("/")[0].endswith("karpenter.sh") and "/" in key:
                out.append(f"spec.template.metadata.labels key {key!r}: label domain \"karpenter.sh\" is restricted")
    return out


def validate(obj: Mapping[str, Any]) -> None:
    found = problems(obj)
    if found:
        name = (obj.get("metadata") or {}).get("name")
        raise SchemaError(f"{obj.get('kind')} {name!r} would be refused by the API server:\n  - "
                          + "\n  - ".join(found))
