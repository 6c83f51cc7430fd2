"""The ConfigMaps a Workspace names: ``inference_config.yaml`` and ``training_config.yaml``
(their shape, their size, and the tuning recipe's own key-level checks)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from kaito_core.api import limits, yamlsafe
from kaito_core.api import models as m

TRAINING_SECTIONS = ("ModelConfig", "QuantizationConfig", "LoraConfig", "TrainingArguments",
                     "DataCollator", "DatasetConfig")


def _config_doc(cm: m.ConfigMap, key: str) -> tuple[Any, list[str]]:
    data = cm.data or {}
    if key not in data:
        return None, [f"ConfigMap {cm.name!r} has no key {key!r} (keys: {', '.join(sorted(data)) or 'none'})"]
    too_big = limits.config_size_problem(cm.name, key, data[key])
    if too_big:
        return None, [too_big]
    try:
        return yamlsafe.load(data[key]) or {}, []
    except yaml.YAMLError as exc:
        return None, [f"ConfigMap {cm.name!r} key {key!r} is not valid YAML: {exc}"]


def inference_config_problems(cm: m.ConfigMap) -> list[str]:
    doc, problems = _config_doc(cm, "inference_config.yaml")
    if problems:
        return problems
    if not isinstance(doc, dict):
        return [f"ConfigMap {cm.name!r}: inference_config.yaml must be a mapping"]
    if "vllm" in doc and not isinstance(doc["vllm"], dict):
        problems.append(f"ConfigMap {cm.name!r}: inference_config.yaml 'vllm' must be a mapping of engine flags")
    elif isinstance(doc.get("vllm"), dict):
        for key, (low, high) in VLLM_INTS.items():
            value = doc["vllm"].get(key)
            if value is None or (key == "max-model-len" and str(value).strip() in ("auto", "-1")):
                continue  # vLLM >= 0.11: fit the context to the memory
            number = vllm_int(value, human=key == "max-model-len")
            if number is None or not low <= number <= high:
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                example = " such as 4096 or '32k'" if key == "max-model-len" else ""
                problems.append(f"ConfigMap {cm.name!r} key inference_config.yaml vllm.{key} is {shown}, expected an "
                                f"integer from {low} to {high}{example} (or remove it to let kaito choose)")
    return problems


# vLLM engine flags kaito reads to size and place the pods; vLLM itself refuses 0 and negatives
# at start-up, after the nodes were bought. The upper bounds are far past any model: 10M tokens
# of context (Llama 4 Scout), 1024 GPUs, 65536 sequences.
VLLM_INTS = {"max-model-len": (16, 10_000_000), "tensor-parallel-size": (1, 1024),
             "pipeline-parallel-size": (1, 1024), "max-num-seqs": (1, 65536)}
# vllm/engine/arg_utils.py human_readable_int: "25.6k" = 25,600 (powers of 10), "32K" = 32,768 (of 2)
HUMAN_INT = re.compile(r"([0-9]+(?:\.[0-9]+)?)([kKmMgGtT])")
_MULTIPLIERS = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def vllm_int(value: Any, human: bool = False) -> int | None:
    """An integer engine flag as vLLM reads it from kaito's command line (``--flag value``):
    an int or a string of digits; with ``human`` also ``"32k"``/``"32K"``. None otherwise
    (a bool, a float, a word)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    text = str(value).strip()
    if re.fullmatch(r"[+-]?[0-9]+", text):
        return int(text)
    match = HUMAN_INT.fullmatch(text) if human else None
    if match is None:
        return None
    return int(float(match.group(1)) * _MULTIPLIERS[match.group(2)])


def training_config_problems(cm: m.ConfigMap) -> list[str]:
    doc, problems = _config_doc(cm, "training_config.yaml")
    if problems:
        return problems
    if not isinstance(doc, dict) or not isinstance(doc.get("training_config"), dict):
        return [f"ConfigMap {cm.name!r}: training_config.yaml must have a top-level 'training_config' mapping"]
    for section, value in doc["training_config"].items():
        if section not in TRAINING_SECTIONS:
            problems.append(f"ConfigMap {cm.name!r}: training_config.{section} is not a known section "
                            f"(allowed: {', '.join(TRAINING_SECTIONS)})")
        elif value is not None and not isinstance(value, dict):
            problems.append(f"ConfigMap {cm.name!r}: training_config.{section} must be a mapping")
    if problems:
        return problems
    # Key-level checks (unknown keys, bad values) from the tuning recipe's own schema, which
    # imports no torch, so the webhook refuses what the Job would refuse later.
    try:
        from kaito_core.api.training.config import parse_training_config
        from kaito_core.api.training.errors import TuningConfigError
    except ImportError:  # pragma: no cover - a core install without the tuning package
        return problems
    try:
        parse_training_config(doc)
    except TuningConfigError as exc:
        problems.extend(f"ConfigMap {cm.name!r}: {e}" for e in exc.errors)
    return problems
