"""Bad input and failures: each a clear error, and never an adapter that looks complete."""

from __future__ import annotations

import resource
import signal

import pytest

from kaito_core.tuning import DataError, FetchError, OutputError, TuningConfigError, run
from kaito_core.tuning.output import ADAPTER_CONFIG, MARKER, is_complete


def _no_adapter(out) -> bool:
    return not out.exists() or not any((out / f).exists() for f in (ADAPTER_CONFIG, MARKER))


def test_disk_full_while_writing_leaves_no_adapter(tiny_models, chat_jsonl, fast_config, tmp_path):
    """The output's filesystem fills up during training: the write fails with EFBIG (a file-size
    limit set at the last step, a real OS error), and the destination holds no adapter."""
    fast_config["training_config"]["TrainingArguments"].update(max_steps=3, save_strategy="no")
    out = tmp_path / "adapter"
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed

    def fill_disk(info):
        if info.step == info.max_steps:
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, old_limit[1]))

    try:
        with pytest.raises(OutputError) as err:
            run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config, output=str(out),
                progress="none", on_step=fill_disk)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    msg = str(err.value)
    assert "writing the adapter under" in msg and "File too large" in msg and "Nothing was published" in msg
    assert _no_adapter(out)
    assert not out.exists()  # neither the staging directory nor an empty output directory is left


def test_an_existing_adapter_is_kept_unless_overwrite(tiny_models, chat_jsonl, fast_config, tmp_path):
    fast_config["training_config"]["TrainingArguments"]["max_steps"] = 2
    out = tmp_path / "adapter"
    kwargs = dict(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], config=fast_config,
                  output=str(out), progress="none")
    run(**kwargs)
    first = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(OutputError, match="already holds an adapter.*--overwrite"):
        run(**kwargs)
    fast_config["training_config"]["TrainingArguments"]["seed"] = 7
    run(**kwargs, overwrite=True)
    assert is_complete(out) and (out / "adapter_model.safetensors").read_bytes() != first


def test_output_that_is_a_file_is_refused_before_training(tiny_models, chat_jsonl, tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        run(model_dir=str(tiny_models["llama"]), data=[str(chat_jsonl)], output=str(blocker), progress="none")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/train.jsonl", "http://10.0.0.8/train.jsonl",
                                 "http://169.254.169.254/latest/meta-data/"])
def test_private_urls_are_refused_by_run(url, tiny_models, tmp_path, monkeypatch):
    monkeypatch.delenv("KAITO_ALLOW_PRIVATE_URLS", raising=False)
    out = tmp_path / "adapter"
    with pytest.raises(FetchError, match="is refused"):
        run(model_dir=str(tiny_models["llama"]), data=[url], output=str(out), progress="none")
    assert _no_adapter(out)


def test_data_problems_stop_the_run_without_an_adapter(tiny_models, tmp_path):
    out = tmp_path / "adapter"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    kwargs = dict(model_dir=str(tiny_models["llama"]), output=str(out), progress="none")
    with pytest.raises(DataError, match="training data set is empty"):
        run(**kwargs, data=[str(empty)])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("question,reply\na,b\n")
    with pytest.raises(DataError, match="match no supported layout"):
        run(**kwargs, data=[str(wrong)])
    unreadable = tmp_path / "broken.arrow"
    unreadable.write_bytes(b"ARROW1\x00\x00garbage")
    with pytest.raises(DataError, match="cannot read .*broken.arrow as arrow"):
        run(**kwargs, data=[str(unreadable)])
    assert _no_adapter(out)


def test_bad_config_and_unknown_targets_are_named(tiny_models, chat_jsonl, tmp_path):
    out = tmp_path / "adapter"
    kwargs = dict(model_dir=str(tiny_models["phi3"]), data=[str(chat_jsonl)], output=str(out), progress="none")
    with pytest.raises(TuningConfigError, match=r"training_config.TrainingArguments.learning_rat: unknown key"):
        run(**kwargs, config="training_config:\n  TrainingArguments: {learning_rat: 0.1}\n")
    with pytest.raises(TuningConfigError, match=r"none of \['q_proj', 'v_proj'\] is a module of this model"):
        run(**kwargs, config={"training_config": {"LoraConfig": {"target_modules": ["q_proj", "v_proj"]}}})
    assert _no_adapter(out)
