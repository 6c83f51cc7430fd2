"""Upper bounds for every count and size a Workspace author controls (one table, two enforcers).

The API server enforces them through the CRD schema (:mod:`kaito_core.api.crd` merges
:data:`BOUNDS` into it), and :func:`check` enforces the same numbers wherever a Workspace is
read without an API server in front (``kaito validate``/``plan``/``up``, the operator, the
webhook). Without them one namespaced user could ask for ``resource.count: 1000000`` and make
the operator build a million node requests in one pass (issue 16, finding 1).

Paths use the CRD generator's syntax: ``a.b`` for fields, ``a[]`` for list items, ``a.*`` for
map values. The numbers are generous for real use: the largest upstream v0.12 model
(deepseek-v3, 671B) needs 2 nodes of 8 GPUs; Kubernetes caps names at 253 characters and
label values at 63; a ConfigMap holds at most 1 MiB.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from kaito_core.errors import FieldError

MAX_NODES = 100
MAX_ADAPTERS = 10
MAX_URLS = 100
MAX_URL_LENGTH = 2048
MAX_NAME = 253
MAX_IMAGE = 512
MAX_SELECTOR_LABELS = 64
MAX_SELECTOR_EXPRESSIONS = 32
MAX_SELECTOR_VALUES = 64
MAX_PULL_SECRETS = 16
MAX_TEMPLATE_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 256 * 1024  # inference_config.yaml / training_config.yaml in a ConfigMap
MAX_VOLUME_SOURCE_BYTES = 16 * 1024

BOUNDS: dict[str, dict[str, int]] = {
    "resource.count": {"maximum": MAX_NODES},
    "resource.instanceType": {"maxLength": 128},
    "resource.preferredNodes": {"maxItems": MAX_NODES},
    "resource.preferredNodes[]": {"maxLength": MAX_NAME},
    "resource.labelSelector.matchLabels": {"maxProperties": MAX_SELECTOR_LABELS},
    "resource.labelSelector.matchExpressions": {"maxItems": MAX_SELECTOR_EXPRESSIONS},
    "resource.labelSelector.matchExpressions[].values": {"maxItems": MAX_SELECTOR_VALUES},
    "resource.partition.count": {"maximum": 7},  # MIG: at most 7 instances per GPU
    "inference.preset.name": {"maxLength": MAX_NAME},
    "inference.preset.presetOptions.image": {"maxLength": MAX_IMAGE},
    "inference.preset.presetOptions.imagePullSecrets": {"maxItems": MAX_PULL_SECRETS},
    "inference.preset.presetOptions.imagePullSecrets[]": {"maxLength": MAX_NAME},
    "inference.preset.presetOptions.modelAccessSecret": {"maxLength": MAX_NAME},
    "inference.config": {"maxLength": MAX_NAME},
    "inference.adapters": {"maxItems": MAX_ADAPTERS},
    "inference.adapters[].source.urls": {"maxItems": MAX_URLS},
    "inference.adapters[].source.urls[]": {"maxLength": MAX_URL_LENGTH},
    "inference.adapters[].source.image": {"maxLength": MAX_IMAGE},
    "inference.adapters[].source.imagePullSecrets": {"maxItems": MAX_PULL_SECRETS},
    "inference.adapters[].strength": {"maxLength": 16},
    "tuning.preset.name": {"maxLength": MAX_NAME},
    "tuning.method": {"maxLength": 16},
    "tuning.config": {"maxLength": MAX_NAME},
    "tuning.input.urls": {"maxItems": MAX_URLS},
    "tuning.input.urls[]": {"maxLength": MAX_URL_LENGTH},
    "tuning.input.image": {"maxLength": MAX_IMAGE},
    "tuning.input.imagePullSecrets": {"maxItems": MAX_PULL_SECRETS},
    "tuning.output.image": {"maxLength": MAX_IMAGE},
    "tuning.output.imagePushSecret": {"maxLength": MAX_NAME},
}
# Free-form objects (no schema of their own): bounded by their JSON size.
SIZES: dict[str, int] = {
    # the API server's own rule for every object (apimachinery TotalAnnotationSizeLimitB)
    "metadata.annotations": 256 * 1024,
    "inference.template": MAX_TEMPLATE_BYTES,
    "inference.adapters[].source.volumeSource": MAX_VOLUME_SOURCE_BYTES,
    "tuning.input.volumeSource": MAX_VOLUME_SOURCE_BYTES,
    "tuning.output.volumeSource": MAX_VOLUME_SOURCE_BYTES,
}
FIX = "a Workspace's numbers and sizes are bounded so one object cannot exhaust the operator"


def _at(doc: Any, parts: list[str], path: str) -> Iterator[tuple[str, Any]]:
    """(concrete path, value) for every place ``parts`` (``a``, ``b[]``) reaches in ``doc``."""
    if not parts:
        yield path, doc
        return
    head, rest = parts[0], parts[1:]
    many = head.endswith("[]")
    key = head[:-2] if many else head
    if not isinstance(doc, dict) or key not in doc:
        return
    value = doc[key]
    sub = f"{path}.{key}" if path else key
    if many:
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from _at(item, rest, f"{sub}[{i}]")
        return
    yield from _at(value, rest, sub)


def _split(path: str) -> list[str]:
    return path.split(".")


def check(doc: dict[str, Any]) -> list[FieldError]:
    """Every bound ``doc`` (a Workspace as camelCase dict) breaks, naming field, value and limit."""
    errors: list[FieldError] = []
    for path, rules in BOUNDS.items():
        for where, value in _at(doc, _split(path), ""):
            for rule, limit in rules.items():
                problem = _broken(rule, limit, value)
                if problem:
                    shown = value if isinstance(value, (int, str)) and len(str(value)) <= 80 else _summary(value)
                    errors.append(FieldError(where, shown, problem, FIX))
    for path, limit in SIZES.items():
        for where, value in _at(doc, _split(path), ""):
            size = len(json.dumps(value, separators=(",", ":"), default=str))
            if size > limit:
                errors.append(FieldError(where, f"{size} bytes", f"must be at most {limit} bytes as JSON", FIX))
    return errors


def _summary(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return f"{len(value)} entries"
    return f"{len(str(value))} characters"


def _broken(rule: str, limit: int, value: Any) -> str:
    if rule == "maximum" and isinstance(value, int) and not isinstance(value, bool) and value > limit:
        return f"must be at most {limit}"
    if rule == "maxLength" and isinstance(value, str) and len(value) > limit:
        return f"must be at most {limit} characters"
    if rule == "maxItems" and isinstance(value, list) and len(value) > limit:
        return f"must have at most {limit} entries"
    if rule == "maxProperties" and isinstance(value, dict) and len(value) > limit:
        return f"must have at most {limit} entries"
    return ""


def config_size_problem(name: str, key: str, text: str) -> str:
    """A ConfigMap document over :data:`MAX_CONFIG_BYTES` (the operator and pods parse it)."""
    size = len(text.encode())
    if size > MAX_CONFIG_BYTES:
        return (f"ConfigMap {name!r} key {key!r} is {size} bytes, more than {MAX_CONFIG_BYTES}; keep engine "
                "and training settings only (data belongs in tuning.input)")
    return ""
