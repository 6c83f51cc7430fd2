"""Value checks of a parsed ``training_config`` (ranges, enumerations, refused keys), each
problem a :class:`~kaito_core.errors.FieldError` with its path. Pure, no torch."""

from __future__ import annotations

from typing import Any, Mapping

from kaito_core.errors import FieldError

ROOT = "training_config"
DTYPES = ("float32", "float16", "bfloat16", "auto")
QUANT_TYPES = ("nf4", "fp4")

# Far above any real recipe (LoRA ranks of 8-256; a few epochs), far below what sizes a node for
# a ~10^21-parameter adapter or keeps one training for ever.
MAX_LORA_RANK = 4096
MAX_EPOCHS = 10_000


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_values(sections: Mapping[str, Mapping[str, Any]]) -> list[FieldError]:
    errors: list[FieldError] = []

    def bad(section: str, key: str, expected: str, hint: str = "") -> None:
        errors.append(FieldError(f"{ROOT}.{section}.{key}", sections[section][key], f"must be {expected}", hint))

    def get(section: str, key: str) -> Any:
        return sections.get(section, {}).get(key)

    lora = sections.get("LoraConfig", {})
    if "r" in lora and not _int_in(lora["r"], 1, MAX_LORA_RANK):
        bad("LoraConfig", "r", f"a positive integer, at most {MAX_LORA_RANK}", "common ranks are 8 to 64")
    if "lora_alpha" in lora and not (isinstance(lora["lora_alpha"], (int, float)) and lora["lora_alpha"] > 0):
        bad("LoraConfig", "lora_alpha", "a positive number")
    if "lora_dropout" in lora and not (isinstance(lora["lora_dropout"], (int, float))
                                       and 0 <= lora["lora_dropout"] < 1):
        bad("LoraConfig", "lora_dropout", "a number in [0, 1)")
    tm = lora.get("target_modules")
    if "target_modules" in lora and not (
            (isinstance(tm, str) and tm) or (isinstance(tm, list) and tm and all(isinstance(m, str) and m for m in tm))):
        bad("LoraConfig", "target_modules", "a non-empty list of module names (or 'all-linear')")
    ta = sections.get("TrainingArguments", {})
    for key, high in (("per_device_train_batch_size", 4096), ("gradient_accumulation_steps", 65536)):
        if key in ta and not _int_in(ta[key], 1, high):
            bad("TrainingArguments", key, f"a positive integer, at most {high}")
    for key in ("num_train_epochs", "learning_rate"):
        if key in ta and not (isinstance(ta[key], (int, float)) and not isinstance(ta[key], bool) and ta[key] > 0
                              and ta[key] != float("inf")):
            bad("TrainingArguments", key, "a positive number")
    if _number(ta.get("num_train_epochs")) and ta["num_train_epochs"] > MAX_EPOCHS:
        bad("TrainingArguments", "num_train_epochs", f"at most {MAX_EPOCHS}", "a GPU node runs until it finishes")
    if ta.get("push_to_hub"):
        bad("TrainingArguments", "push_to_hub", "false", "kaito publishes the adapter to tuning.output itself")
    for key in ("deepspeed", "fsdp"):
        if ta.get(key):
            bad("TrainingArguments", key, "unset", "kaito's recipe trains on one node without DeepSpeed/FSDP")
    for section, key in (("ModelConfig", "torch_dtype"), ("ModelConfig", "dtype"),
                         ("QuantizationConfig", "bnb_4bit_compute_dtype")):
        value = get(section, key)
        if value is not None and value not in DTYPES:
            bad(section, key, f"one of {list(DTYPES)}")
    qt = get("QuantizationConfig", "bnb_4bit_quant_type")
    if qt is not None and qt not in QUANT_TYPES:
        bad("QuantizationConfig", "bnb_4bit_quant_type", f"one of {list(QUANT_TYPES)}")
    qm = get("QuantizationConfig", "quant_method")
    if qm is not None and qm != "bitsandbytes":
        bad("QuantizationConfig", "quant_method", "'bitsandbytes'", "QLoRA here quantizes with bitsandbytes")
    split = get("DatasetConfig", "train_test_split")
    if split is not None and not (0 < split <= 1):
        bad("DatasetConfig", "train_test_split", "a fraction in (0, 1]", "1 trains on all rows; 0.8 holds out 20%")
    msl = get("DatasetConfig", "max_seq_length")
    if msl is not None and not msl >= 8:
        bad("DatasetConfig", "max_seq_length", "an integer >= 8")
    rt = get("DataCollator", "return_tensors")
    if rt is not None and rt != "pt":
        bad("DataCollator", "return_tensors", "'pt'")
    pm = get("DataCollator", "pad_to_multiple_of")
    if pm is not None and not pm > 0:
        bad("DataCollator", "pad_to_multiple_of", "a positive integer")
    return errors
