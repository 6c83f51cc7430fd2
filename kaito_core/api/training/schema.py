"""The keys each ``training_config`` section accepts, and their kinds (no heavy imports).

``TRAINING_ARGUMENTS`` and ``PEFT_LORA_CONFIG`` are snapshots of the init fields of
``transformers.TrainingArguments`` (5.24) and ``peft.LoraConfig`` (0.21), taken so that the
operator's admission webhook and ``kaito tune`` can refuse an unknown key without importing
torch. A test checks the snapshots against the installed libraries. Kinds: int, float, bool,
str, list, dict, any.
"""

from __future__ import annotations

TRAINING_ARGUMENTS: dict[str, str] = {
    'output_dir': 'str', 'per_device_train_batch_size': 'int', 'num_train_epochs': 'float',
    'max_steps': 'int', 'learning_rate': 'float', 'lr_scheduler_type': 'any',
    'lr_scheduler_kwargs': 'any', 'warmup_steps': 'float', 'optim': 'any', 'optim_args': 'str',
    'weight_decay': 'float', 'adam_beta1': 'float', 'adam_beta2': 'float', 'adam_epsilon': 'float',
    'optim_target_modules': 'any', 'gradient_accumulation_steps': 'int',
    'average_tokens_across_devices': 'bool', 'max_grad_norm': 'float',
    'label_smoothing_factor': 'float', 'bf16': 'bool', 'fp16': 'bool', 'bf16_full_eval': 'bool',
    'fp16_full_eval': 'bool', 'tf32': 'bool', 'activation_checkpointing': 'bool',
    'activation_checkpointing_kwargs': 'any', 'gradient_checkpointing': 'bool',
    'gradient_checkpointing_kwargs': 'any', 'torch_compile': 'bool', 'torch_compile_backend': 'str',
    'torch_compile_mode': 'str', 'use_liger_kernel': 'bool', 'liger_kernel_config': 'dict',
    'use_cache': 'bool', 'neftune_noise_alpha': 'float', 'torch_empty_cache_steps': 'int',
    'auto_find_batch_size': 'bool', 'logging_strategy': 'any', 'logging_steps': 'float',
    'logging_first_step': 'bool', 'log_on_each_node': 'bool', 'logging_nan_inf_filter': 'bool',
    'include_num_input_tokens_seen': 'any', 'log_level': 'str', 'log_level_replica': 'str',
    'disable_tqdm': 'bool', 'report_to': 'any', 'run_name': 'str', 'project': 'str',
    'trackio_space_id': 'str', 'trackio_bucket_id': 'str', 'trackio_static_space_id': 'any',
    'eval_strategy': 'any', 'eval_steps': 'float', 'eval_delay': 'float',
    'per_device_eval_batch_size': 'int', 'prediction_loss_only': 'bool', 'eval_on_start': 'bool',
    'eval_do_concat_batches': 'bool', 'eval_use_gather_object': 'bool',
    'eval_accumulation_steps': 'int', 'include_for_metrics': 'list', 'batch_eval_metrics': 'bool',
    'save_only_model': 'bool', 'save_strategy': 'any', 'save_steps': 'float',
    'save_on_each_node': 'bool', 'save_total_limit': 'int', 'enable_jit_checkpoint': 'bool',
    'push_to_hub': 'bool', 'hub_token': 'str', 'hub_private_repo': 'bool', 'hub_model_id': 'str',
    'hub_strategy': 'any', 'hub_always_push': 'bool', 'hub_revision': 'str',
    'load_best_model_at_end': 'bool', 'metric_for_best_model': 'str', 'greater_is_better': 'bool',
    'ignore_data_skip': 'bool', 'restore_callback_states_from_checkpoint': 'bool',
    'full_determinism': 'bool', 'seed': 'int', 'data_seed': 'int', 'use_cpu': 'bool',
    'accelerator_config': 'any', 'parallelism_config': 'any', 'dataloader_drop_last': 'bool',
    'dataloader_num_workers': 'int', 'dataloader_pin_memory': 'bool',
    'dataloader_persistent_workers': 'bool', 'dataloader_prefetch_factor': 'int',
    'dataloader_multiprocessing_context': 'str', 'dataloader_in_order': 'bool',
    'remove_unused_columns': 'bool', 'label_names': 'list', 'train_sampling_strategy': 'str',
    'length_column_name': 'str', 'ddp_find_unused_parameters': 'bool', 'ddp_bucket_cap_mb': 'int',
    'ddp_broadcast_buffers': 'bool', 'ddp_static_graph': 'bool', 'ddp_backend': 'str',
    'ddp_timeout': 'int', 'fsdp': 'str', 'fsdp_config': 'any', 'deepspeed': 'any', 'debug': 'any',
    'skip_memory_metrics': 'bool', 'do_train': 'bool', 'do_eval': 'bool', 'do_predict': 'bool',
    'resume_from_checkpoint': 'str', 'local_rank': 'int',
}

PEFT_LORA_CONFIG: dict[str, str] = {
    'task_type': 'any', 'peft_type': 'any', 'auto_mapping': 'any', 'peft_version': 'str',
    'base_model_name_or_path': 'str', 'revision': 'str', 'inference_mode': 'bool', 'r': 'int',
    'target_modules': 'any', 'exclude_modules': 'any', 'lora_alpha': 'int', 'lora_dropout': 'float',
    'fan_in_fan_out': 'bool', 'bias': 'any', 'use_rslora': 'bool', 'modules_to_save': 'list',
    'init_lora_weights': 'any', 'layers_to_transform': 'any', 'layers_pattern': 'any',
    'rank_pattern': 'any', 'alpha_pattern': 'any', 'megatron_config': 'any', 'megatron_core': 'str',
    'trainable_token_indices': 'any', 'loftq_config': 'any', 'eva_config': 'any',
    'corda_config': 'any', 'lora_ga_config': 'any', 'use_dora': 'bool', 'velora_config': 'any',
    'alora_invocation_tokens': 'list', 'use_qalora': 'bool', 'qalora_group_size': 'int',
    'monteclora_config': 'any', 'layer_replication': 'list', 'runtime_config': 'any',
    'lora_bias': 'bool', 'target_parameters': 'list', 'use_bdlora': 'any', 'arrow_config': 'any',
    'kasa_config': 'any', 'ensure_weight_tying': 'bool',
}

# Upstream KAITO's own dataclasses (presets/workspace/tuning/text-generation/cli.py).
MODEL_CONFIG: dict[str, str] = {
    "pretrained_model_name_or_path": "str", "state_dict": "any", "cache_dir": "str", "from_tf": "bool",
    "force_download": "bool", "resume_download": "bool", "proxies": "any", "output_loading_info": "bool",
    "local_files_only": "bool", "revision": "str", "trust_remote_code": "bool", "load_in_4bit": "bool",
    "load_in_8bit": "bool", "torch_dtype": "str", "dtype": "str", "device_map": "any", "chat_template": "str",
}

QUANTIZATION_CONFIG: dict[str, str] = {
    "quant_method": "str", "load_in_8bit": "bool", "load_in_4bit": "bool", "llm_int8_threshold": "float",
    "llm_int8_skip_modules": "list", "llm_int8_enable_fp32_cpu_offload": "bool",
    "llm_int8_has_fp16_weight": "bool", "bnb_4bit_compute_dtype": "str", "bnb_4bit_quant_type": "str",
    "bnb_4bit_use_double_quant": "bool", "bnb_4bit_quant_storage": "str",
}

DATA_COLLATOR: dict[str, str] = {
    "mlm": "bool", "whole_word_mask": "bool", "mlm_probability": "float", "mask_replace_prob": "float",
    "random_replace_prob": "float", "pad_to_multiple_of": "int", "return_tensors": "str", "seed": "int",
}

DATASET_CONFIG: dict[str, str] = {
    "dataset_path": "str", "dataset_extension": "str", "shuffle_dataset": "bool", "shuffle_seed": "int",
    "context_column": "str", "response_column": "str", "messages_column": "str", "train_test_split": "float",
    # kaito extensions (documented in docs/tuning.md)
    "prompt_column": "str", "completion_column": "str", "max_seq_length": "int", "skip_malformed_rows": "bool",
}

# TrainingArguments keys kaito adds: TRL SFTConfig's packing keys (``max_length`` is TRL's name
# for DatasetConfig.max_seq_length) and transformers 4.x's ``group_by_length``, which upstream's
# image (transformers 4.4x) accepted and transformers 5 spells train_sampling_strategy.
KAITO_TRAINING_ARGUMENTS: dict[str, str] = {
    "packing": "bool", "packing_strategy": "str", "max_length": "int", "group_by_length": "bool",
}

SECTIONS: dict[str, dict[str, str]] = {
    "ModelConfig": MODEL_CONFIG,
    "QuantizationConfig": QUANTIZATION_CONFIG,
    "LoraConfig": PEFT_LORA_CONFIG,
    "TrainingArguments": {**TRAINING_ARGUMENTS, **KAITO_TRAINING_ARGUMENTS},
    "DataCollator": DATA_COLLATOR,
    "DatasetConfig": DATASET_CONFIG,
}
