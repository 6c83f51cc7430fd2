"""Training on tiny real models (CPU): loss goes down, the adapter reloads and changes the output,
QLoRA trains with non-zero gradients, and progress reaches the log and Prometheus."""

from __future__ import annotations

import json
import logging
import urllib.request

import pytest

from kaito_core.tuning import run
from kaito_core.tuning.output import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MARKER, SUMMARY, is_complete
from tests.tuning.helpers import free_port, logits_for

PRESETS = {"llama": "llama-3.1-8b-instruct", "phi3": "phi-3-mini-4k-instruct", "falcon": "falcon-7b"}


def _decreased(losses: list[float]) -> bool:
    k = max(3, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return last < first - 0.05


@pytest.mark.parametrize("arch", ["llama", "phi3", "falcon"])
def test_lora_learns_and_the_adapter_changes_the_output(arch, tiny_models, chat_jsonl, fast_config, tmp_path):
    steps = []
    out = tmp_path / "adapter"
    result = run(model_dir=str(tiny_models[arch]), preset=PRESETS[arch], method="lora", data=[str(chat_jsonl)],
                 config=fast_config, output=str(out), progress="none", on_step=steps.append)
    s = result.summary
    losses = [st.loss for st in steps]
    assert len(losses) == s["steps"] == 20
    assert _decreased(losses), losses
    assert is_complete(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([ADAPTER_CONFIG, ADAPTER_WEIGHTS, SUMMARY, MARKER])
    on_disk = json.loads((out / SUMMARY).read_text())
    assert on_disk["final_loss"] == pytest.approx(losses[-1]) and on_disk["tokens_seen"] == steps[-1].tokens_seen > 0
    assert on_disk["data"]["rows_used"] == 16 and on_disk["duration_s"] > 0
    adapter_cfg = json.loads((out / ADAPTER_CONFIG).read_text())
    # The preset's LoRA targets for the architecture, and the preset's model id as the base.
    from kaito_core.plugins import get_registry

    preset = get_registry().get_preset(PRESETS[arch])
    assert set(adapter_cfg["target_modules"]) == set(preset.tuning.target_modules)
    assert adapter_cfg["base_model_name_or_path"] == preset.hf_repo
    base = logits_for(tiny_models[arch], None)
    tuned = logits_for(tiny_models[arch], out)
    assert (tuned - base).abs().max().item() > 1e-3


def test_qlora_trains_with_nonzero_gradients(tiny_models, chat_jsonl, fast_config, tmp_path):
    steps = []
    result = run(model_dir=str(tiny_models["llama"]), method="qlora", data=[str(chat_jsonl)], config=fast_config,
                 output=str(tmp_path / "q"), progress="none", on_step=steps.append)
    s = result.summary
    assert s["method"] == "qlora"
    assert s["quantized_linear_layers"] > 0 and s["quantized_linear_layers"] <= s["linear_layers"]
    assert all(st.grad_norm > 0 for st in steps) and s["grad_norm_max"] > 0
    assert _decreased([st.loss for st in steps])
    assert s["config"]["training_config"]["QuantizationConfig"]["bnb_4bit_quant_type"] == "nf4"
    tuned = logits_for(tiny_models["llama"], tmp_path / "q")
    assert (tuned - logits_for(tiny_models["llama"], None)).abs().max().item() > 1e-3


def test_falcon_qlora_says_its_layers_stay_fp32(tiny_models, chat_jsonl, fast_config, tmp_path, caplog):
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 3
    with caplog.at_level(logging.WARNING, logger="kaito.tuning"):
        result = run(model_dir=str(tiny_models["falcon"]), method="qlora", data=[str(chat_jsonl)],
                     config=fast_config, output=str(tmp_path / "f"), progress="none")
    s = result.summary
    assert s["quantized_linear_layers"] == 0 and s["linear_layers"] > 0
    note = next(n for n in s["notes"] if n.startswith("QLoRA: bitsandbytes quantized 0 of"))
    assert "FalconForCausalLM" in note and "fp32" in note
    assert note in caplog.text
    assert s["grad_norm_max"] > 0


def test_progress_log_lines_and_prometheus_metrics(tiny_models, chat_jsonl, fast_config, tmp_path, caplog):
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 6
    port = free_port()
    scraped: list[str] = []

    def scrape(info):
        if info.step == 4:
            scraped.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())

    with caplog.at_level(logging.INFO, logger="kaito.tuning"):
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
            output=str(tmp_path / "a"), progress="log", metrics_port=port, on_step=scrape)
    text = scraped[0]
    assert "kaito_tuning_step 4.0" in text and "kaito_tuning_max_steps 6.0" in text
    assert "kaito_tuning_loss " in text and "kaito_tuning_tokens_per_second " in text
    assert "kaito_tuning_tokens_total " in text
    lines = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.getMessage().startswith("step {")]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert all(x["loss"] > 0 and x["tokens_per_s"] > 0 for x in lines)
    with pytest.raises(OSError):  # the metrics server is stopped with the run
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_upstream_dolly_oai_parquet_with_held_out_rows(tiny_models, tmp_path):
    """The shape of philschmid/dolly-15k-oai-style: one 'messages' column of {content, role}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i in range(10):
        rows.append({"messages": [
            {"content": "You are an assistant that answers questions.", "role": "system"},
            {"content": f"Name the number after {i}.", "role": "user"},
            {"content": f"The number after {i} is {i + 1}.", "role": "assistant"}]})
    path = tmp_path / "train-00000-of-00001-54e3756291ca09c6.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    cfg = {"training_config": {"TrainingArguments": {"max_steps": 4, "learning_rate": 1e-2},
                               "DatasetConfig": {"train_test_split": 0.8}}}
    result = run(model_dir=str(tiny_models["phi3"]), method="lora", data=[str(path)], config=cfg,
                 output=str(tmp_path / "out"), progress="none")
    d = result.summary["data"]
    assert (d["rows_total"], d["train_rows"], d["eval_rows"]) == (10, 8, 2)
    assert d["layouts"][path.name] == "messages (messages)"
    assert result.summary["eval_loss"] is not None and result.summary["eval_loss"] > 0


def test_upstream_phi3_configmap_trains_unchanged(tiny_models, chat_jsonl, tmp_path):
    """kaito-examples/kaito_configmap_tuning_phi_3.yaml as is: bf16, nf4 QLoRA, q/k/v/o targets
    (Phi-3 fuses q/k/v, so only o_proj matches, and the run says so)."""
    from tests.tuning.test_config import EXAMPLE, _example_configmap

    result = run(model_dir=str(tiny_models["phi3"]), preset="phi-3-mini-4k-instruct", method="qlora",
                 data=[str(chat_jsonl)], config=_example_configmap(), output=str(tmp_path / "out"),
                 progress="none", max_steps=3)
    s = result.summary
    assert s["steps"] == 3 and s["target_modules"] == ["o_proj"] and s["grad_norm_max"] > 0
    assert s["config"]["training_config"]["ModelConfig"]["torch_dtype"] == "bfloat16"
    assert any("['q_proj', 'k_proj', 'v_proj'] are not modules of this model" in n for n in s["notes"])
    assert EXAMPLE.name.endswith(".yaml")


def test_progress_bar_mode_draws_a_bar(tiny_models, chat_jsonl, fast_config, tmp_path, capsys):
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 2
    run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
        output=str(tmp_path / "out"), progress="bar")
    err = capsys.readouterr().err
    assert "tuning: 100%" in err and "2/2" in err and "loss=" in err


def test_load_in_8bit_trains_lora_over_an_8bit_base(tiny_models, chat_jsonl, fast_config, tmp_path):
    fast_config["training_config"]["QuantizationConfig"] = {"load_in_8bit": True}
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 6
    steps = []
    result = run(model_dir=str(tiny_models["llama"]), method="LoRA", data=[str(chat_jsonl)], config=fast_config,
                 output=str(tmp_path / "q8"), progress="none", on_step=steps.append)
    s = result.summary
    assert s["method"] == "lora" and s["quantization"] == "8bit"
    assert 0 < s["quantized_linear_layers"] <= s["linear_layers"]  # bitsandbytes Linear8bitLt layers
    assert all(st.grad_norm > 0 for st in steps)
    assert is_complete(tmp_path / "q8")
