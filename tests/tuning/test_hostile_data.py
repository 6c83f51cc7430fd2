"""Hostile training data, each case pinned after it was found broken: BOMs and pretty-printed
JSON, tool calls, chat templates that fail or refuse a conversation, metadata files in data
directories, pipes, and a work dir that is the user's own directory."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kaito_core.api.training.errors import DataError
from kaito_core.tuning import run
from kaito_core.tuning.data import find_data_files, load_examples, scan
from tests.tuning.helpers import chat_rows

MESSAGES = [{"role": "user", "content": "What is the capital of Peru?"},
            {"role": "assistant", "content": "Lima."}]


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def test_files_written_by_windows_tools_and_pretty_printed_json(tmp_path):
    """A UTF-8 BOM made every jsonl/json file fail on line 1 ("Unexpected UTF-8 BOM"); a
    pretty-printed .json object was read as jsonl ("line 1: not valid JSON")."""
    row = json.dumps({"messages": MESSAGES})
    bom = b"\xef\xbb\xbf"
    files = [
        _write(tmp_path / "bom.jsonl", bom + f"{row}\r\n\r\n{row}\r\n".encode()),
        _write(tmp_path / "bom.json", bom + json.dumps([{"messages": MESSAGES}] * 2).encode()),
        _write(tmp_path / "pretty.json", json.dumps({"messages": MESSAGES}, indent=2)),
        _write(tmp_path / "pretty-records.json", json.dumps({"data": [{"messages": MESSAGES}] * 2}, indent=2)),
        _write(tmp_path / "download", bom + json.dumps({"messages": MESSAGES}, indent=2).encode()),
        _write(tmp_path / "bom.csv", bom + b"prompt,completion\r\n007,\"multi\r\nline\"\r\n"),
    ]
    counts = {}
    for f in files:
        examples, summary = load_examples(find_data_files([f]), {})
        counts[f.name] = summary.rows_used
        assert all(e.messages[-1]["content"] for e in examples)
    assert counts == {"bom.jsonl": 2, "bom.json": 2, "pretty.json": 1, "pretty-records.json": 2,
                      "download": 1, "bom.csv": 1}
    examples, _ = load_examples([files[-1]], {})
    assert examples[0].messages == [{"role": "user", "content": "007"},
                                    {"role": "assistant", "content": "multi\r\nline"}]


TOOL_ROW = {"messages": [
    {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Lima?"}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Lima\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny in Lima."}]}


TOOL_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% for c in m.tool_calls or [] %}"
                 "[call {{ c.function.name }} {{ c.function.arguments }}]{% endfor %}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_tool_calls_reach_the_chat_template_and_are_learned(tiny_models, tmp_path):
    """The assistant's tool call was dropped (content None -> ''), so the model was trained to
    answer with an empty turn where it should call the tool."""
    from transformers import AutoTokenizer

    from kaito_core.tuning.encode import IGNORE, Encoder

    data = _write(tmp_path / "tools.jsonl", json.dumps(TOOL_ROW) + "\n")
    (example,), _ = load_examples([data], {})
    assert example.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert example.messages[2]["tool_call_id"] == "c1"
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    with pytest.raises(DataError, match="the chat template does not render tool_calls .*'get_weather'"):
        Encoder(tok, 256).encode(example)  # the tiny model's template knows no tool calls
    tok.chat_template = TOOL_TEMPLATE
    row = Encoder(tok, 256).encode(example)
    learned = tok.decode([t for t in row["labels"] if t != IGNORE])
    assert "[call get_weather" in learned and "It is sunny in Lima." in learned
    assert "sunny<|end|>" not in learned.replace("It is sunny in Lima.", "")  # the tool's answer is not


def test_rows_without_anything_to_learn_are_named(tmp_path):
    rows = [{"messages": MESSAGES},
            {"messages": [{"role": "system", "content": "Only a system prompt."}]},
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [{"type": "image_url"}]}]},
            {"messages": [{"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
                          {"role": "assistant", "content": "y"}]}]
    data = _write(tmp_path / "bad.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary = scan([data], {"skip_malformed_rows": True})
    assert (summary.rows_used, summary.rows_skipped) == (1, 4)
    assert [s.split(": ", 1)[1] for s in summary.first_skipped] == [
        "no assistant message: nothing to learn from (add an assistant turn)"] * 2 + [
        "bad content: only text content parts can be trained on",
        "bad messages: message 0 has tool_calls; only an assistant message can, as a list of {type, function: "
        "{name, arguments}} objects"]


def test_csv_cells_with_newlines_stay_whole(tmp_path):
    """Quoted newlines as Python's csv module writes them (pyarrow's reader keeps them in the cell)."""
    path = tmp_path / "q.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["prompt", "completion"], ["a\nb", "c\nd"]])
    examples, summary = load_examples([path], {})
    assert summary.rows_used == 1 and examples[0].messages[1]["content"] == "c\nd"


def test_a_directory_of_mixed_files_reads_only_the_rows(tmp_path):
    """A Hugging Face dataset repo (README, .gitattributes, dataset_infos.json, data/*.parquet)
    failed on its metadata JSON; a DatasetDict saved one level down trained on every split."""
    import datasets

    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_list([{"messages": MESSAGES}] * 3)
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    (root / "README.md").write_text("---\nlicense: mit\n---\n# card\n")
    (root / ".gitattributes").write_text("*.parquet filter=lfs\n")
    (root / "dataset_infos.json").write_text(json.dumps({"default": {"features": {}}}))
    (root / "extra.csv").write_text("prompt,completion\na,b\n")
    datasets.DatasetDict({"train": ds.select(range(2)), "test": ds.select(range(1))}).save_to_disk(
        str(root / "saved"))
    files = find_data_files([root])
    names = [f.relative_to(root).as_posix() for f in files]
    assert names[0] == "data/train-00000-of-00001.parquet" and names[1] == "extra.csv"
    assert all(n.startswith("saved/train/") and n.endswith(".arrow") for n in names[2:]) and len(names) > 2
    assert scan(files, {}).rows_used == 3 + 1 + 2


def test_a_chat_template_that_fails_or_refuses_a_conversation(tiny_models):
    """jinja2's TemplateSyntaxError and the TemplateError of raise_exception('...') (Llama 2 and
    Mistral templates refuse a system turn) reached the user as internal errors."""
    from transformers import AutoTokenizer

    from kaito_core.tuning.data import Example
    from kaito_core.tuning.encode import Encoder

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    with_system = Example("faq.jsonl line 7", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES])
    tok.chat_template = "{% for m in messages %}{{ m.content }"
    with pytest.raises(DataError, match=r"the chat template is not valid Jinja \(line 1: unexpected '}'\)"):
        Encoder(tok, 64, skip_malformed=True).encode(with_system)
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not "
                         "supported') }}{% endif %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}")
    with pytest.raises(DataError, match=r"faq.jsonl line 7: the chat template refused this conversation \(roles "
                                        r"system,user,assistant\): System role not supported. Fix the template"):
        Encoder(tok, 64).encode(with_system)
    encoder = Encoder(tok, 64, skip_malformed=True)
    assert encoder.encode(with_system) is None
    assert encoder.encode(Example("faq.jsonl line 8", messages=MESSAGES)) is not None
    assert encoder.first_skipped == ["faq.jsonl line 7: the chat template refused this conversation (roles "
                                     "system,user,assistant): System role not supported"]


def test_ctrl_c_while_the_data_is_read_leaves_no_output_dir(tiny_models, tmp_path):
    """The data is a pipe (`--data <(zcat train.jsonl.gz)`): it was opened several times (column
    probe, checking pass, tokenizing), so rows came out cut. It is now read once into the work
    dir. Once the writer's 2 MB are taken the run is inside that read (no timing guess), and
    Ctrl-C (SIGINT) must stop it there cleanly, even with the writer still silent."""
    import signal

    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    row = (json.dumps({"messages": MESSAGES}) + "\n").encode()
    proc = subprocess.Popen([sys.executable, "-m", "kaito_core.tuning", "--model", str(tiny_models["llama"]),
                             "--data", str(fifo), "--output", str(tmp_path / "adapter"), "--progress", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        with open(fifo, "wb") as writer:
            writer.write(row * (2_000_000 // len(row)))
            writer.flush()  # returns once the reader took all but the pipe's buffer
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 75, err
    assert "interrupted: interrupted by SIGINT outside a training step: nothing was published" in err
    assert "Traceback" not in err
    assert not (tmp_path / "adapter").exists()


def test_a_pipe_is_read_once_and_trained_on(tiny_models, chat_jsonl, tmp_path):
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "kaito_core.tuning", "--model", str(tiny_models["llama"]),
                             "--data", str(fifo), "--output", str(tmp_path / "adapter"), "--progress", "none",
                             "--max-steps", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        with open(fifo, "wb") as writer:
            writer.write(chat_jsonl.read_bytes())
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["data"]["rows_used"] == len(chat_rows()) and summary["data"]["files"][0].endswith("000-stream")
    # no preset and no id in the weights: the host path recorded as base model is said, with the fix
    assert summary["base_model"] == str(tiny_models["llama"])
    assert any("pass --base-model ORG/MODEL" in n for n in summary["notes"])


def test_downloads_never_touch_the_users_files_in_the_work_dir(http_server, tiny_models, chat_jsonl, tmp_path):
    """Downloads went to <work dir>/data, removed after the run: with --work-dir . and the
    user's own data/ folder there, their training file was deleted."""
    (http_server.root / "more.jsonl").write_bytes(chat_jsonl.read_bytes())
    project = tmp_path / "project"
    mine = project / "data" / "mine.jsonl"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(chat_jsonl.read_bytes())
    result = run(model_dir=str(tiny_models["llama"]), data=[str(mine), f"{http_server.url}/more.jsonl"],
                 work_dir=str(project), output=str(project / "adapter"), allow_private_urls=True,
                 config={"training_config": {"TrainingArguments": {"max_steps": 1}}}, progress="none")
    assert result.summary["data"]["rows_used"] == 2 * len(chat_rows())
    assert mine.read_bytes() == chat_jsonl.read_bytes()
    assert sorted(p.name for p in project.iterdir()) == [".kaito-lock", "adapter", "checkpoints", "data"]


def test_a_one_line_chat_template_with_escapes_keeps_its_unicode():
    """`chat_template: "<｜User｜>{{ m }}\\n"` (DeepSeek's tokens, "\\n" typed as two characters)
    came out as mojibake ("<ï½\\x9cUser...") and its special tokens never matched."""
    from kaito_core.tuning.encode import resolve_chat_template

    template, origin = resolve_chat_template("<｜User｜>{{ m.content }}\\n— café\\\\", None, None)
    assert template == "<｜User｜>{{ m.content }}\n— café\\" and origin == "ModelConfig.chat_template"


def test_pandas_csv_messages_and_unpaired_surrogates(tmp_path):
    """A list column saved by pandas' to_csv is a Python literal, not JSON ("a string that is not
    JSON"); a JSON escape giving an unpaired surrogate reached the tokenizer as a TypeError."""
    pandas_csv = _write(tmp_path / "pandas.csv", 'messages\n"[{\'role\': \'user\', \'content\': \'hi ""x""\'}, '
                                                 '{\'role\': \'assistant\', \'content\': ""it\'s""}]"\n')
    (example,), _ = load_examples([pandas_csv], {})
    assert example.messages == [{"role": "user", "content": 'hi "x"'}, {"role": "assistant", "content": "it's"}]
    code = _write(tmp_path / "code.csv", 'messages\n"[__import__(\'os\').getcwd()]"\n')
    with pytest.raises(DataError, match="a string that is not JSON"):
        load_examples([code], {})
    surrogate = _write(tmp_path / "s.jsonl", '{"messages": [{"role": "user", "content": "a \\ud800 b"}, '
                                             '{"role": "assistant", "content": "ok"}]}\n')
    with pytest.raises(DataError, match=r"line 1\): bad content: an unpaired UTF-16 surrogate \('\\ud800' at "
                                        r"character 2\)"):
        scan([surrogate], {})
    text = _write(tmp_path / "t.jsonl", '{"text": "fine"}\n{"text": "x \\udfff"}\n')
    summary = scan([text], {"skip_malformed_rows": True})
    assert (summary.rows_used, summary.first_skipped) == (1, [
        "t.jsonl line 2: bad text: an unpaired UTF-16 surrogate ('\\udfff' at character 2) is not text; fix the "
        "escape in the file"])


def test_dataset_path_stays_inside_the_inputs(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    _write(inputs / "train.jsonl", json.dumps({"messages": MESSAGES}) + "\n")
    _write(tmp_path / "secret.jsonl", json.dumps({"text": "not for training"}) + "\n")
    assert find_data_files([inputs], dataset_path="train.jsonl") == [inputs / "train.jsonl"]
    with pytest.raises(DataError, match=r"DatasetConfig.dataset_path '../secret.jsonl': '..' would leave"):
        find_data_files([inputs], dataset_path="../secret.jsonl")


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    """`prompt,prompt,completion`: each row kept the second prompt without a word."""
    data = _write(tmp_path / "dup.csv", "prompt,prompt,completion\nfirst,second,answer\n")
    with pytest.raises(DataError, match=r"dup.csv: the header names the columns \['prompt'\] more than once"):
        scan([data], {})


def test_gzip_compressed_text_files_are_read(tmp_path):
    """`train.jsonl.gz` (how datasets and many hubs ship text data) was "no training data found"."""
    import gzip

    row = json.dumps({"messages": MESSAGES}) + "\n"
    files = [_write(tmp_path / "a.jsonl.gz", gzip.compress((row * 3).encode())),
             _write(tmp_path / "b.csv.gz", gzip.compress(b"prompt,completion\nq,\"multi\nline\"\n")),
             _write(tmp_path / "c.json.gz", gzip.compress(json.dumps([{"messages": MESSAGES}] * 2).encode())),
             _write(tmp_path / "d.json.gz", gzip.compress((row * 2).encode()))]  # one object per line
    assert find_data_files([tmp_path]) == files
    assert [load_examples([f], {})[1].rows_used for f in files] == [3, 1, 2, 2]
    (tmp_path / "cut").mkdir()
    cut = _write(tmp_path / "cut" / "e.jsonl.gz", gzip.compress((row * 2000).encode())[:-200])
    with pytest.raises(DataError, match="e.jsonl.gz: the gzip stream is damaged or cut short"):
        scan([cut], {})
