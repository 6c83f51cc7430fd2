"""Label selectors and label keys/values, as the API server checks them (apimachinery's
``validation.IsQualifiedName`` and ``IsValidLabelValue``). Part of
:func:`kaito_core.api.validation.validate_workspace`."""

from __future__ import annotations

import re
from typing import Any

from kaito_core.api import models as m

# Checked with fullmatch: "^...$" with re.match also accepts a trailing newline ("name\n").
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def selector(sel: m.LabelSelector, r: Any) -> None:
    path = "resource.labelSelector"
    if not sel.match_labels and not sel.match_expressions:
        r.error(path, sel.to_k8s(), "must have matchLabels or matchExpressions",
                "an empty selector would match every node")
    for key, value in (sel.match_labels or {}).items():
        label(f"{path}.matchLabels", key, value, r)
    for i, expr in enumerate(sel.match_expressions or []):
        p = f"{path}.matchExpressions[{i}]"
        if expr.operator in ("In", "NotIn") and not expr.values:
            r.error(f"{p}.values", expr.values, f"must be non-empty for operator {expr.operator}")
        if expr.operator in ("Exists", "DoesNotExist") and expr.values:
            r.error(f"{p}.values", expr.values, f"must be empty for operator {expr.operator}")
        for j, value in enumerate(expr.values or []):
            if len(value) > 63 or not LABEL_VALUE.fullmatch(value):
                r.error(f"{p}.values[{j}]", value, "is not a valid label value",
                        "at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric")
        label(f"{p}", expr.key, None, r, key_path=f"{p}.key")


def label(path: str, key: str, value: str | None, r: Any, key_path: str | None = None) -> None:
    prefix, _, name = key.rpartition("/")
    shown = key if len(key) <= 80 else key[:77] + "..."  # the key is part of the path: keep it short
    path_of_key = key_path or f"{path}.{shown}"
    if (prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.fullmatch(prefix))) or len(name) > 63 \
            or not LABEL_NAME.fullmatch(name):
        r.error(path_of_key, key, "is not a valid label key",
                "use [prefix/]name with letters, digits, '-', '_', '.' (name at most 63 characters)")
    if value is not None and (len(value) > 63 or not LABEL_VALUE.fullmatch(value)):
        r.error(f"{path}.{shown}", value, "is not a valid label value",
                "at most 63 letters, digits, '-', '_', '.', starting and ending alphanumeric")
