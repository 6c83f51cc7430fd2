"""training_config.yaml: upstream's example accepted, unknown keys refused by path, merge order."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from kaito_core.api.training.config import parse_training_config, resolve
from kaito_core.api.training.errors import TuningConfigError
from kaito_core.types import TuningRecipe

EXAMPLE = Path(__file__).resolve().parents[1] / "data/reference/kaito-examples/kaito_configmap_tuning_phi_3.yaml"


def _example_configmap() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_upstream_phi3_configmap_is_accepted_and_merged_over_the_preset():
    from kaito_core.plugins import get_registry

    sections = parse_training_config(_example_configmap())
    assert sections["QuantizationConfig"]["bnb_4bit_quant_type"] == "nf4"
    assert sections["TrainingArguments"]["per_device_train_batch_size"] == 2
    preset = get_registry().get_preset("phi-3-mini-4k-instruct")
    cfg = resolve(sections, recipe=preset.tuning, method="qlora", cuda=False)
    assert cfg.method == "qlora"
    assert cfg.lora["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]  # the user's list wins
    assert cfg.training["per_device_train_batch_size"] == 2  # the user's value wins
    # Keys the config leaves out: transformers' defaults, as upstream (not per-preset numbers).
    assert (cfg.training["num_train_epochs"], cfg.training["learning_rate"]) == (3.0, 5e-5)
    assert cfg.training["save_strategy"] == "epoch"
    assert cfg.dataset["train_test_split"] == 1
    # On CPU: bf16 compute is kept (it works), device_map auto becomes cpu, and output_dir is noted.
    assert cfg.model["device_map"] == "cpu"
    assert any("output_dir" in n for n in cfg.notes)


def test_without_a_config_upstreams_params_template_is_used():
    """No tuning.config: upstream's operator uses its chart's lora/qlora-params-template."""
    recipe = TuningRecipe(target_modules=("qkv_proj", "o_proj"), r=16, lora_alpha=32, learning_rate=1e-4)
    cfg = resolve(None, recipe=recipe, method="lora")
    assert cfg.lora["target_modules"] == ["qkv_proj", "o_proj"]
    # the template's LoRA numbers (r 8, alpha 8) and transformers' epochs / learning rate
    assert (cfg.lora["r"], cfg.lora["lora_alpha"], cfg.lora["lora_dropout"]) == (8, 8, 0.0)
    t = cfg.training
    assert (t["num_train_epochs"], t["learning_rate"], t["per_device_train_batch_size"]) == (3.0, 5e-5, 1)
    assert t["save_strategy"] == "epoch" and cfg.dataset["train_test_split"] == 1
    assert not cfg.quantization.get("load_in_4bit")
    assert any("lora-params-template" in n for n in cfg.notes)
    q = resolve(None, recipe=recipe, method="qlora")
    assert q.quantization["load_in_4bit"] and q.quantization["bnb_4bit_quant_type"] == "nf4"
    assert q.quantization["bnb_4bit_compute_dtype"] == "float32"  # CPU: float32 compute


def test_unknown_sections_and_keys_are_refused_with_their_path():
    text = """
training_config:
  LoraConfig:
    rr: 8
    lora_alpha: 16
  TrainingArgs:
    learning_rate: 1e-4
  TrainingArguments:
    learning_rat: 1e-4
    num_train_epochs: many
"""
    with pytest.raises(TuningConfigError) as err:
        parse_training_config(text)
    msg = str(err.value)
    assert "training_config.LoraConfig.rr: unknown key" in msg and "did you mean 'r'?" in msg
    assert "training_config.TrainingArgs: unknown section" in msg and "TrainingArguments" in msg
    assert "training_config.TrainingArguments.learning_rat: unknown key" in msg and "learning_rate" in msg
    assert "training_config.TrainingArguments.num_train_epochs: must be a number (got 'many')" in msg
    assert "4 problems" in msg


@pytest.mark.parametrize("doc, needle", [
    ("training: {}", "training: unknown top-level key"),
    ("training_config: [1, 2]", "must be a mapping of sections"),
    ("training_config:\n  LoraConfig: 3", "training_config.LoraConfig: must be a mapping"),
    ("training_config:\n  LoraConfig: {r: 0}", "training_config.LoraConfig.r: must be a positive integer"),
    ("training_config:\n  LoraConfig: {lora_dropout: 1.5}", "lora_dropout: must be a number in [0, 1)"),
    ("training_config:\n  DatasetConfig: {train_test_split: 0}", "train_test_split: must be a fraction"),
    ("training_config:\n  QuantizationConfig: {bnb_4bit_quant_type: int3}", "bnb_4bit_quant_type: must be one of"),
    ("training_config:\n  TrainingArguments: {push_to_hub: true}", "push_to_hub: must be false"),
    ("training_config:\n  ModelConfig: {torch_dtype: float64}", "torch_dtype: must be one of"),
    ("training_config: {LoraConfig: {r: 8}", "is not valid YAML at line"),
])
def test_bad_values_name_the_field(doc, needle):
    with pytest.raises(TuningConfigError) as err:
        parse_training_config(doc)
    assert needle in str(err.value)


def test_yaml_1_1_numbers_written_as_strings_are_coerced():
    # PyYAML reads 2e-4 (no dot) as a string; upstream parsed every value from text.
    sections = parse_training_config("training_config:\n  TrainingArguments: {learning_rate: 2e-4, max_steps: '10'}")
    assert sections["TrainingArguments"] == {"learning_rate": 2e-4, "max_steps": 10}


def test_configmap_without_the_key_is_explained():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"other.yaml": ""}}
    with pytest.raises(TuningConfigError, match="has no key 'training_config.yaml'"):
        parse_training_config(cm)


def test_method_lora_with_4bit_quantization_runs_qlora_like_upstream():
    sections = parse_training_config("training_config:\n  QuantizationConfig: {load_in_4bit: true}")
    cfg = resolve(sections, recipe=None, method="lora")
    assert cfg.method == "qlora"
    assert any("runs as QLoRA" in n for n in cfg.notes)
    assert resolve(sections, recipe=None, method=None).method == "qlora"


def test_an_empty_config_takes_upstreams_dataclass_defaults():
    cfg = resolve({}, recipe=TuningRecipe(target_modules=("q_proj",)), method="lora")
    t = cfg.training
    assert (t["num_train_epochs"], t["learning_rate"], t["per_device_train_batch_size"]) == (3.0, 5e-5, 8)
    assert (t["save_strategy"], t["save_steps"]) == ("steps", 500)
    assert cfg.dataset["train_test_split"] == 0.8


def test_the_reconcilers_template_equals_what_kaito_tune_trains_with():
    from kaito_core.api.training.defaults import template_config

    for method in ("lora", "qlora"):
        rendered = parse_training_config(template_config(method, ["q_proj", "v_proj"]))
        from_tpl = resolve(rendered, recipe=TuningRecipe(target_modules=("q_proj", "v_proj")), method=method)
        without = resolve(None, recipe=TuningRecipe(target_modules=("q_proj", "v_proj")), method=method)
        for section in ("training", "lora", "dataset"):
            a, b = getattr(from_tpl, section), getattr(without, section)
            assert {k: v for k, v in a.items() if k != "output_dir"} == b, section


@pytest.mark.parametrize("method", ["QLoRA", "LORA", " lora "])
def test_the_method_is_case_insensitive(method):
    assert resolve({}, recipe=None, method=method).method == method.strip().lower()


def test_load_in_8bit_is_honoured_and_4_plus_8_refused():
    cfg = resolve(parse_training_config("training_config:\n  QuantizationConfig: {load_in_8bit: true}"),
                  recipe=None, method="lora")
    assert cfg.method == "lora" and cfg.quantization == {"load_in_8bit": True}
    with pytest.raises(TuningConfigError, match="load_in_8bit: cannot be combined with load_in_4bit"):
        resolve(parse_training_config("training_config:\n  QuantizationConfig: {load_in_8bit: true, "
                                      "load_in_4bit: true}"), recipe=None, method=None)


@pytest.mark.parametrize("doc, needle", [
    ("{ModelConfig: {from_tf: true}}", "ModelConfig.from_tf: is not supported"),
    ("{TrainingArguments: {packing_strategy: ffd}}", "packing_strategy: must be 'bfd' or 'wrapped'"),
    ("{TrainingArguments: {max_length: 64}, DatasetConfig: {max_seq_length: 32}}", "max_length: differs"),
])
def test_upstream_keys_that_cannot_be_honoured_are_refused(doc, needle):
    with pytest.raises(TuningConfigError, match=needle):
        resolve(parse_training_config("training_config: " + doc), recipe=None, method="lora")


def test_keys_without_effect_are_named_in_the_notes():
    cfg = resolve(parse_training_config("training_config: {DataCollator: {mlm_probability: 0.2}, "
                                        "TrainingArguments: {max_length: 128, group_by_length: true}}"),
                  recipe=None, method="lora")
    assert any("mlm_probability has no effect" in n for n in cfg.notes)
    assert cfg.dataset["max_seq_length"] == 128
    cfg = resolve(parse_training_config("training_config: {TrainingArguments: {do_eval: true, hub_model_id: x}, "
                                        "QuantizationConfig: {load_in_4bit: false, bnb_4bit_quant_type: nf4}}"),
                  recipe=None, method="lora")
    notes = " | ".join(cfg.notes)
    assert "do_eval has no effect" in notes and "hub_model_id has no effect" in notes
    assert "QuantizationConfig ['bnb_4bit_quant_type'] have no effect" in notes


def test_method_not_in_the_recipe_is_refused():
    with pytest.raises(TuningConfigError, match="not supported by this preset"):
        resolve({}, recipe=TuningRecipe(methods=("lora",), target_modules=("q_proj",)), method="qlora")


def test_schema_snapshots_match_the_installed_libraries():
    """The key lists the webhook uses without torch must be exactly what the libraries accept."""
    import peft
    import transformers

    from kaito_core.api.training import schema

    ta = {f.name for f in dataclasses.fields(transformers.TrainingArguments) if f.init}
    lora = {f.name for f in dataclasses.fields(peft.LoraConfig) if f.init}
    assert set(schema.TRAINING_ARGUMENTS) == ta
    assert set(schema.PEFT_LORA_CONFIG) == lora
    bnb = set(transformers.BitsAndBytesConfig().to_dict())
    assert set(schema.QUANTIZATION_CONFIG) - {"quant_method"} <= bnb
