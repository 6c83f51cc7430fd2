"""``training_config.yaml``: parse, check every key, merge over the preset's recipe (pure).

Upstream KAITO reads a ConfigMap key ``training_config.yaml`` whose top-level key is
``training_config`` with six sections (ModelConfig, QuantizationConfig, LoraConfig,
TrainingArguments, DataCollator, DatasetConfig). Upstream silently drops keys it does not know;
we refuse them with their path and a suggestion, because a typo such as ``learning_rat`` would
otherwise train with the default and nobody would notice. Only the standard library and PyYAML
are imported here, so the admission webhook can call :func:`parse_training_config` too. What
happens to the keys that are not passed straight on is in :mod:`kaito_core.api.training.keys`.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from kaito_core.errors import MISSING, FieldError
from kaito_core.api.training.errors import TuningConfigError
from kaito_core.api.training.schema import SECTIONS
from kaito_core.api.training.values import DTYPES, QUANT_TYPES  # noqa: F401 - re-exported
from kaito_core.api.training.values import check_values as _check_values
from kaito_core.types import TUNING_METHODS, TuningRecipe

ROOT = "training_config"
CONFIGMAP_KEY = "training_config.yaml"
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INT = re.compile(r"^[+-]?\d+$")

# Keys kaito decides itself; a user value is ignored with a note (not an error: upstream's
# examples set them, e.g. output_dir: /mnt/results).
CONTROLLED = {
    "TrainingArguments": {
        "output_dir": "checkpoints go to a scratch directory; the adapter goes to the tuning output",
        "disable_tqdm": "kaito shows its own progress (a bar on a terminal, log lines otherwise)",
    },
    "LoraConfig": {
        "task_type": "always CAUSAL_LM",
        "peft_type": "always LORA",
        "base_model_name_or_path": "set from the model that is tuned",
        "inference_mode": "false while training",
    },
    "ModelConfig": {
        "pretrained_model_name_or_path": "",  # used when no model directory is given
    },
}


@dataclass
class TrainingConfig:
    """The effective configuration of one run: defaults <- preset recipe <- user's YAML."""

    method: str
    model: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    collator: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    user_keys: dict[str, set[str]] = field(default_factory=dict)

    def sections(self) -> dict[str, dict[str, Any]]:
        return {"ModelConfig": self.model, "QuantizationConfig": self.quantization, "LoraConfig": self.lora,
                "TrainingArguments": self.training, "DataCollator": self.collator, "DatasetConfig": self.dataset}

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, ROOT: copy.deepcopy(self.sections())}

    def user_set(self, section: str, key: str) -> bool:
        return key in self.user_keys.get(section, set())


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""


def _coerce(kind: str, value: Any) -> tuple[bool, Any]:
    """Accept ``value`` for a key of ``kind``; YAML 1.1 reads ``2e-4`` as a string, so numbers
    written that way are converted (upstream parsed every value from a string, too)."""
    if value is None or kind == "any":
        return True, value
    if kind == "bool":
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return True, value.lower() == "true"
        return False, value
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        if isinstance(value, str) and _INT.match(value.strip()):
            return True, int(value)
        return False, value
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value) if isinstance(value, float) else value
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            return True, float(value)
        return False, value
    if kind == "str":
        return (True, value) if isinstance(value, str) else (False, value)
    if kind == "list":
        if isinstance(value, (list, tuple)):
            return True, list(value)
        if isinstance(value, str):
            return True, [v.strip() for v in value.split(",") if v.strip()]
        return False, value
    if kind == "dict":
        return (True, dict(value)) if isinstance(value, Mapping) else (False, value)
    return True, value


KIND_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
              "list": "a list", "dict": "a mapping"}


def load_yaml_document(text: str, source: str) -> Any:
    """One YAML document, read as the Workspace files are (:mod:`kaito_core.api.yamlsafe`): a
    duplicate key is refused (``safe_load`` keeps the last ``learning_rate`` of two without a
    word), and anchors/aliases cannot expand past its bounds."""
    import yaml

    from kaito_core.api import yamlsafe

    try:
        docs = yamlsafe.load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TuningConfigError(source, [FieldError(ROOT, MISSING, f"is not valid YAML{where}: "
                                                    f"{getattr(exc, 'problem', exc)}")]) from None
    if len(docs) <= 1:
        return docs[0] if docs else None
    # A file holding the Workspace and its ConfigMap (or several ConfigMaps): the one document
    # that carries the training configuration.
    found = [d for d in docs if isinstance(d, Mapping) and (ROOT in d or (
        d.get("kind") == "ConfigMap" and isinstance(d.get("data"), Mapping) and CONFIGMAP_KEY in d["data"]))]
    if len(found) == 1:
        return found[0]
    raise TuningConfigError(source, [FieldError(ROOT, MISSING, f"{len(docs)} YAML documents and {len(found)} of "
                                                "them hold a training configuration",
                                                f"give one '{ROOT}:' document or one ConfigMap with "
                                                f"data.{CONFIGMAP_KEY}")])


def parse_training_config(doc: Any, source: str = CONFIGMAP_KEY) -> dict[str, dict[str, Any]]:
    """Check a ``training_config`` document and return its sections (values coerced).

    ``doc`` is YAML text, the parsed mapping ``{"training_config": {...}}``, or a ConfigMap
    object holding the key ``training_config.yaml``. Every problem is collected and raised
    together as :class:`TuningConfigError`, each with its path (``training_config.LoraConfig.r``).
    """
    if isinstance(doc, (bytes, str)):
        doc = load_yaml_document(doc.decode() if isinstance(doc, bytes) else doc, source)
    if isinstance(doc, Mapping) and doc.get("kind") == "ConfigMap":
        data = doc.get("data") or {}
        name = (doc.get("metadata") or {}).get("name", "?")
        if CONFIGMAP_KEY not in data:
            raise TuningConfigError(source, [FieldError(
                f"ConfigMap {name}.data", sorted(data), f"has no key {CONFIGMAP_KEY!r}",
                f"put the tuning configuration under data.{CONFIGMAP_KEY}")])
        return parse_training_config(data[CONFIGMAP_KEY], f"{source} (ConfigMap {name})")
    if doc is None:
        return {}
    errors: list[FieldError] = []
    if not isinstance(doc, Mapping):
        raise TuningConfigError(source, [FieldError("(top level)", doc, "must be a mapping",
                                                    f"write '{ROOT}:' followed by the sections")])
    for key in doc:
        if key != ROOT:
            errors.append(FieldError(str(key), MISSING, "unknown top-level key",
                                     f"the only top-level key is {ROOT!r}"))
    body = doc.get(ROOT) or {}
    if not isinstance(body, Mapping):
        errors.append(FieldError(ROOT, body, "must be a mapping of sections", f"sections: {', '.join(SECTIONS)}"))
        raise TuningConfigError(source, errors)
    out: dict[str, dict[str, Any]] = {}
    for section, values in body.items():
        path = f"{ROOT}.{section}"
        if section not in SECTIONS:
            hint = _suggest(str(section), SECTIONS) or f"known sections: {', '.join(SECTIONS)}"
            errors.append(FieldError(path, MISSING, "unknown section", hint))
            continue
        if values is None:
            out[section] = {}
            continue
        if not isinstance(values, Mapping):
            errors.append(FieldError(path, values, "must be a mapping of key: value"))
            continue
        keys = SECTIONS[section]
        checked: dict[str, Any] = {}
        for key, value in values.items():
            kpath = f"{path}.{key}"
            if key not in keys:
                hint = _suggest(str(key), keys) or f"see docs/tuning.md for the keys of {section}"
                errors.append(FieldError(kpath, MISSING, "unknown key", hint))
                continue
            if value is None:
                continue  # `key:` with no value, or null: the key is unset and takes its default
            ok, coerced = _coerce(keys[key], value)
            if not ok:
                errors.append(FieldError(kpath, value, f"must be {KIND_WORDS.get(keys[key], keys[key])}"))
                continue
            checked[key] = coerced
        out[section] = checked
    errors.extend(_check_values(out))
    if errors:
        raise TuningConfigError(source, errors)
    return out


DEFAULT_RECIPE = TuningRecipe(target_modules=("all-linear",))
def normalize_method(method: Any, source: str = CONFIGMAP_KEY) -> str | None:
    """``tuning.method`` as upstream compares it: case-insensitively (``QLoRA`` is ``qlora``)."""
    if method is None or method == "":
        return None
    m = str(method).strip().lower()
    if m not in TUNING_METHODS:
        raise TuningConfigError(source, [FieldError("tuning.method", method, f"must be one of {list(TUNING_METHODS)}")])
    return m


def _template_user(method: str | None, recipe: TuningRecipe, notes: list[str]) -> dict[str, dict[str, Any]]:
    """Upstream's params template as if the user had given it (no tuning.config at all)."""
    from kaito_core.api.training.defaults import DEVICE_KEYS, template_config, template_name

    targets = None if recipe.target_modules == ("all-linear",) else recipe.target_modules
    tpl = template_config(method, targets)[ROOT]
    for key in DEVICE_KEYS:
        tpl["ModelConfig"].pop(key, None)
    tpl["QuantizationConfig"].pop("bnb_4bit_compute_dtype", None)  # by device too
    tpl["TrainingArguments"].pop("output_dir", None)
    notes.append(f"no training config given: using upstream's default {template_name(method)} "
                 "(3 epochs, learning rate 5e-5, batch size 1, all rows for training, a checkpoint each epoch)")
    return parse_training_config({ROOT: tpl}, template_name(method))


def resolve(user: Mapping[str, Mapping[str, Any]] | None, *, recipe: TuningRecipe | None, method: str | None,
            cuda: bool = False, bf16_ok: bool = False, source: str = CONFIGMAP_KEY) -> TrainingConfig:
    """Merge kaito's defaults, the preset's :class:`TuningRecipe` and the user's sections.

    ``user`` None means no ``tuning.config`` at all: upstream then trains with its chart's
    params template (:func:`kaito_core.api.training.defaults.template_config`); keys a given config
    leaves out take upstream's dataclass and transformers' defaults
    (:mod:`kaito_core.api.training.defaults`). ``method`` comes from the Workspace (``tuning.method``,
    any case) or ``--method``; without one, ``QuantizationConfig.load_in_4bit: true`` means
    QLoRA, as upstream.
    """
    from kaito_core.api.training import defaults

    recipe = recipe or DEFAULT_RECIPE
    notes: list[str] = []
    method = normalize_method(method, source)
    if user is None:
        user = _template_user(method, recipe, notes)
    user = {k: dict(v) for k, v in user.items()}
    method, wants_8bit = _choose_method(user, method, recipe, notes, source)
    half = "bfloat16" if bf16_ok else "float32"
    cfg = TrainingConfig(method=method, notes=notes)
    cfg.model = {"torch_dtype": half if cuda else "float32", "device_map": "auto" if cuda else "cpu",
                 "local_files_only": False, "trust_remote_code": False, "chat_template": None}
    cfg.quantization = {}
    if method == "qlora":
        cfg.quantization = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                            "bnb_4bit_compute_dtype": half if cuda else "float32"}
    elif wants_8bit:
        cfg.quantization = {"load_in_8bit": True}
        notes.append("QuantizationConfig.load_in_8bit: the base model is loaded in 8-bit (bitsandbytes LLM.int8) "
                     "and LoRA trains on top of it, as upstream")
    # Upstream has no per-preset hyper-parameters: only the target modules come from the preset
    # (DEFAULT_TARGET_MODULES); r, alpha and dropout are its LoraConfig defaults (8, 8, 0.0).
    cfg.lora = dict(defaults.LORA_CONFIG) | {"target_modules": list(recipe.target_modules), "bias": "none"}
    cfg.training = dict(defaults.TRAINING_ARGUMENTS) | {
        "logging_steps": 1, "include_num_input_tokens_seen": "non_padding", "report_to": "none"}
    cfg.collator = {"mlm": False, "pad_to_multiple_of": None}
    cfg.dataset = dict(defaults.DATASET_CONFIG)
    sections = cfg.sections()
    for section, values in user.items():
        cfg.user_keys[section] = set(values)
        for key, value in values.items():
            why = CONTROLLED.get(section, {}).get(key)
            if why:
                notes.append(f"{ROOT}.{section}.{key} ({value!r}) is not used: {why}")
            if section == "ModelConfig" and key == "dtype":
                key = "torch_dtype"  # transformers 5 spelling of the same setting
            sections[section][key] = value
    if method == "qlora":
        cfg.quantization.setdefault("load_in_4bit", True)
        if not cfg.quantization.get("load_in_4bit") and not cfg.quantization.get("load_in_8bit"):
            raise TuningConfigError(source, [FieldError(f"{ROOT}.QuantizationConfig.load_in_4bit", False,
                                                        "must be true for method 'qlora'",
                                                        "remove it, or use method 'lora'")])
    from kaito_core.api.training import keys

    if not cuda:
        keys.for_cpu(cfg)
    if isinstance(cfg.lora.get("target_modules"), str) and cfg.lora["target_modules"] != "all-linear":
        cfg.lora["target_modules"] = [m.strip() for m in cfg.lora["target_modules"].split(",") if m.strip()]
    keys.honour_or_refuse(cfg, source)
    return cfg


def _choose_method(user: Mapping[str, Mapping[str, Any]], method: str | None, recipe: TuningRecipe,
                   notes: list[str], source: str) -> tuple[str, bool]:
    """(method, 8-bit base?) from tuning.method and the quantization keys, as upstream decides."""
    quant_user = user.get("QuantizationConfig", {})
    model_user = user.get("ModelConfig", {})
    wants_4bit = bool(quant_user.get("load_in_4bit") or model_user.get("load_in_4bit"))
    wants_8bit = bool(quant_user.get("load_in_8bit") or model_user.get("load_in_8bit"))
    if wants_4bit and wants_8bit:
        raise TuningConfigError(source, [FieldError(f"{ROOT}.QuantizationConfig.load_in_8bit", True,
                                                    "cannot be combined with load_in_4bit",
                                                    "choose 4-bit (QLoRA) or 8-bit")])
    if method is None:
        method = "qlora" if wants_4bit else "lora"
    if method == "lora" and wants_4bit:
        # Upstream turns QLoRA on whenever the quantization config asks for 4 bits.
        notes.append("QuantizationConfig.load_in_4bit is true, so this runs as QLoRA although the "
                     "method is 'lora' (upstream KAITO does the same)")
        method = "qlora"
    if method == "qlora" and wants_8bit:
        raise TuningConfigError(source, [FieldError(f"{ROOT}.QuantizationConfig.load_in_8bit", True,
                                                    "does not go with method 'qlora' (4-bit)",
                                                    "use method 'lora' with load_in_8bit, or drop load_in_8bit")])
    if method not in recipe.methods:
        raise TuningConfigError(source, [FieldError(
            "tuning.method", method, f"is not supported by this preset (supported: {list(recipe.methods)})")])
    return method, wants_8bit
