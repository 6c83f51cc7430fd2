"""Upstream KAITO's tuning defaults, in one torch-free place for the recipe and the reconciler.

Upstream has two layers of defaults, and a Workspace gets one or the other:

1. **No ``tuning.config``**: the operator uses the Helm chart's ConfigMap template
   ``lora-params-template`` or ``qlora-params-template`` (charts/kaito/workspace/templates/
   {lora,qlora}-params.yaml): r 8, lora_alpha 8, lora_dropout 0.0, ``save_strategy: epoch``,
   ``per_device_train_batch_size: 1``, ``train_test_split: 1`` and, unset there,
   transformers' ``num_train_epochs`` 3 and ``learning_rate`` 5e-5 (the template's comment:
   "num_train_epochs: <Defaults to 3, adjustable>"). :func:`template_config` returns it.
2. **A ``tuning.config``**: every key it leaves out takes the default of upstream's dataclasses
   (presets/workspace/tuning/text-generation/cli.py: ``DatasetConfig.train_test_split`` 0.8,
   ``shuffle_seed`` 42, ``response_column`` "text") and of ``transformers.TrainingArguments``
   (epochs 3, learning rate 5e-5, batch size 8, linear schedule, ``save_strategy`` "steps" every
   500 steps). :data:`TRAINING_ARGUMENTS` and :data:`DATASET_CONFIG` hold them.

``kaito tune`` and the tuning Job run the same recipe with the same ConfigMap, so a Workspace
trains the same way here and in the cluster. The Job's ``backoffLimit`` is Kubernetes' default,
6, as upstream leaves it unset: with checkpoints on the output volume, a restarted pod resumes.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

JOB_BACKOFF_LIMIT = 6
LORA_TEMPLATE_NAME = "lora-params-template"
QLORA_TEMPLATE_NAME = "qlora-params-template"
RESULTS_DIR = "/mnt/results"

# transformers.TrainingArguments' own defaults, which upstream inherits for keys a config omits.
TRAINING_ARGUMENTS: dict[str, Any] = {
    "num_train_epochs": 3.0, "learning_rate": 5e-5, "per_device_train_batch_size": 8,
    "lr_scheduler_type": "linear", "save_strategy": "steps", "save_steps": 500, "seed": 42,
}

# Upstream's DatasetConfig dataclass defaults (+ kaito's extensions, documented in docs/tuning.md).
DATASET_CONFIG: dict[str, Any] = {
    "dataset_path": None, "dataset_extension": None, "shuffle_dataset": True, "shuffle_seed": 42,
    "context_column": None, "response_column": "text", "messages_column": None, "train_test_split": 0.8,
    # kaito extensions
    "prompt_column": "prompt", "completion_column": "completion", "max_seq_length": 1024,
    "skip_malformed_rows": False,
}

LORA_CONFIG: dict[str, Any] = {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}

QLORA_QUANTIZATION: dict[str, Any] = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                      "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_use_double_quant": True}


def template_name(method: str | None) -> str:
    return QLORA_TEMPLATE_NAME if (method or "lora").lower() == "qlora" else LORA_TEMPLATE_NAME


def template_config(method: str | None, target_modules: Iterable[str] | None = None) -> dict[str, Any]:
    """Upstream's default ``training_config`` for ``method`` (the chart's params template), with
    the preset's LoRA target modules (upstream passes them as DEFAULT_TARGET_MODULES).

    ``DataCollator.mlm`` is false here: upstream's template says true and its recipe turns it off
    at once, because a causal LM has no mask token. The reconciler renders this as the Job's
    ConfigMap; ``kaito tune`` without ``--config`` trains with it.
    """
    qlora = (method or "lora").lower() == "qlora"
    lora = dict(LORA_CONFIG)
    if target_modules:
        lora["target_modules"] = list(target_modules)
    cfg: dict[str, Any] = {
        "ModelConfig": {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"},
        "QuantizationConfig": dict(QLORA_QUANTIZATION) if qlora else {"load_in_4bit": False},
        "LoraConfig": lora,
        "TrainingArguments": {"output_dir": RESULTS_DIR, "ddp_find_unused_parameters": False,
                              "save_strategy": "epoch", "per_device_train_batch_size": 1},
        "DataCollator": {"mlm": False},
        "DatasetConfig": {"shuffle_dataset": True, "train_test_split": 1},
    }
    return {"training_config": copy.deepcopy(cfg)}


# ModelConfig keys of the template that depend on the machine: the recipe picks them for the
# device it runs on (bfloat16 + device_map auto on a GPU with bf16, float32 + cpu otherwise).
DEVICE_KEYS = ("torch_dtype", "device_map")
