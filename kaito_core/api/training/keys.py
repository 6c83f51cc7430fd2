"""What happens to the training_config keys that are not simply passed on to transformers, peft
or bitsandbytes: each is used, replaced for the device, refused with the reason, or named in the
run's notes as having no effect. Upstream's recipe drops such keys silently; none is dropped here.
"""

from __future__ import annotations

from kaito_core.errors import FieldError
from kaito_core.api.training.config import ROOT, TrainingConfig
from kaito_core.api.training.errors import TuningConfigError

# Keys that only matter for masked-LM collation, which a causal LM never uses (mlm is off).
MLM_ONLY = ("whole_word_mask", "mlm_probability", "mask_replace_prob", "random_replace_prob", "seed")


def for_cpu(cfg: TrainingConfig) -> None:
    """Settings a CPU cannot train with, replaced and named in the notes."""
    sections = cfg.sections()
    for section, key in (("ModelConfig", "torch_dtype"), ("QuantizationConfig", "bnb_4bit_compute_dtype")):
        if sections[section].get(key) == "float16":
            cfg.notes.append(f"{ROOT}.{section}.{key} float16 is not supported for training on CPU: using float32")
            sections[section][key] = "float32"
    if sections["ModelConfig"].get("device_map") not in (None, "cpu"):
        cfg.notes.append(f"{ROOT}.ModelConfig.device_map {sections['ModelConfig']['device_map']!r}: "
                         "no GPU here, using 'cpu'")
        sections["ModelConfig"]["device_map"] = "cpu"
    for key in ("bf16", "fp16", "tf32"):
        if cfg.training.get(key):
            cfg.notes.append(f"{ROOT}.TrainingArguments.{key} needs a GPU: ignored on CPU")
            cfg.training[key] = False


# TrainingArguments keys transformers accepts that only scripts (run_clm.py & co.) or a hub push
# read; the Trainer itself ignores them, so the notes say so rather than drop them silently.
SCRIPT_ONLY = ("do_train", "do_eval", "do_predict")
HUB_ONLY = ("hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision")


def _notes_for_keys_without_effect(cfg: TrainingConfig) -> None:
    for key in SCRIPT_ONLY:
        if cfg.user_set("TrainingArguments", key):
            cfg.notes.append(f"TrainingArguments.{key} has no effect: the recipe always trains, and evaluates the "
                             "held-out rows when DatasetConfig.train_test_split < 1 (as upstream's SFTTrainer)")
    for key in HUB_ONLY:
        if cfg.user_set("TrainingArguments", key):
            cfg.notes.append(f"TrainingArguments.{key} has no effect: the adapter goes to tuning.output, not the hub")
    if not cfg.quantization.get("load_in_4bit") and not cfg.quantization.get("load_in_8bit"):
        unused = sorted(k for k in cfg.user_keys.get("QuantizationConfig", set())
                        if k not in ("load_in_4bit", "load_in_8bit", "quant_method"))
        if unused:
            cfg.notes.append(f"QuantizationConfig {unused} have no effect: the base model is not quantized "
                             "(set load_in_4bit or load_in_8bit)")


def honour_or_refuse(cfg: TrainingConfig, source: str) -> None:
    """Keys upstream's recipe accepts that need a decision here: every one is used, refused with
    a reason, or named in the notes as having no effect; none is dropped silently."""
    errors: list[FieldError] = []
    t, m = cfg.training, cfg.model
    if t.get("max_length") is not None:
        # TRL's SFTConfig name for the sample length; ours is DatasetConfig.max_seq_length.
        msl = cfg.dataset.get("max_seq_length")
        if cfg.user_set("DatasetConfig", "max_seq_length") and msl != t["max_length"]:
            errors.append(FieldError(f"{ROOT}.TrainingArguments.max_length", t["max_length"],
                                     f"differs from DatasetConfig.max_seq_length ({msl})", "set only one of them"))
        cfg.dataset["max_seq_length"] = t["max_length"]
    strategy = t.get("packing_strategy")
    if strategy is not None and strategy not in ("bfd", "wrapped"):
        errors.append(FieldError(f"{ROOT}.TrainingArguments.packing_strategy", strategy, "must be 'bfd' or 'wrapped'",
                                 "bfd (best-fit decreasing) keeps every sample whole"))
    if t.get("group_by_length") and t.get("train_sampling_strategy") not in (None, "random", "group_by_length"):
        errors.append(FieldError(f"{ROOT}.TrainingArguments.group_by_length", True,
                                 f"conflicts with train_sampling_strategy {t['train_sampling_strategy']!r}"))
    if m.get("from_tf"):
        errors.append(FieldError(f"{ROOT}.ModelConfig.from_tf", True, "is not supported",
                                 "transformers 5 loads PyTorch/safetensors weights only; convert the checkpoint"))
    if m.get("state_dict") is not None:
        errors.append(FieldError(f"{ROOT}.ModelConfig.state_dict", "...", "cannot be given in YAML",
                                 "put the weights in the model directory"))
    if m.get("output_loading_info"):
        cfg.notes.append("ModelConfig.output_loading_info: missing/unexpected weights are logged by transformers "
                         "while loading")
    if m.get("resume_download") is not None:
        cfg.notes.append("ModelConfig.resume_download has no effect: huggingface_hub always resumes downloads")
    _notes_for_keys_without_effect(cfg)
    for key in MLM_ONLY:
        if cfg.collator.get(key) not in (None, False):
            cfg.notes.append(f"DataCollator.{key} has no effect: it applies to masked-LM collation, and a causal "
                             "language model trains with mlm=false (as upstream)")
    if errors:
        raise TuningConfigError(source, errors)
