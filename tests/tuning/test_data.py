"""Data: five formats, three row layouts, assistant-only labels, clear errors with file and row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kaito_core.tuning.data import find_data_files, load_examples, shuffle_and_split
from kaito_core.tuning.encode import IGNORE, Encoder
from kaito_core.api.training.errors import DataError
from tests.tuning.helpers import chat_rows

DS = {"response_column": "text", "shuffle_dataset": True, "shuffle_seed": 42, "train_test_split": 0.75}
PAIRS = [{"prompt": f"Say {w}.", "completion": w.upper()} for w in ("one", "two", "three", "four")]


def write(path: Path, fmt: str, rows: list[dict]) -> Path:
    import pyarrow as pa

    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt == "arrow":
        import pyarrow.ipc as ipc

        table = pa.Table.from_pylist(rows)
        with ipc.new_stream(str(path), table.schema) as w:  # the stream format datasets saves
            w.write_table(table)
    return path


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet", "arrow"])
def test_every_format_reads_messages_and_pairs(tmp_path, fmt):
    msgs = write(tmp_path / f"chat.{fmt}", fmt, chat_rows())
    examples, summary = load_examples([msgs], DS)
    assert len(examples) == summary.rows_used == 16
    assert examples[0].messages[-1] == {"role": "assistant", "content": "The capital of France is Paris."}
    pairs = write(tmp_path / f"pairs.{fmt}", fmt, PAIRS)
    examples, summary = load_examples([pairs], DS)
    assert examples[1].messages == [{"role": "user", "content": "Say two."}, {"role": "assistant", "content": "TWO"}]
    assert summary.layouts[pairs.name].startswith("pair")


def test_dataset_config_column_names_and_text_layout(tmp_path):
    rows = [{"question": "2+2?", "answer": "4", "id": 1}, {"question": "3+3?", "answer": "6", "id": 2}]
    f = write(tmp_path / "qa.parquet", "parquet", rows)
    examples, _ = load_examples([f], {**DS, "context_column": "question", "response_column": "answer"})
    assert examples[0].messages[1]["content"] == "4"
    t = write(tmp_path / "plain.jsonl", "jsonl", [{"text": "Kubernetes schedules pods."}])
    examples, summary = load_examples([t], DS)
    assert examples[0].text == "Kubernetes schedules pods." and summary.layouts["plain.jsonl"] == "text (text)"


def test_wrong_columns_say_what_was_found_and_expected(tmp_path):
    f = write(tmp_path / "odd.csv", "csv", [{"question": "a", "reply": "b"}])
    with pytest.raises(DataError) as err:
        load_examples([f], DS)
    msg = str(err.value)
    assert "odd.csv" in msg and "'question', 'reply'" in msg and "'messages'" in msg and "context_column" in msg


def test_malformed_row_names_file_and_row_or_is_skipped_and_counted(tmp_path):
    rows = chat_rows()[:4]
    rows[2] = {"messages": [{"role": "user", "content": "hi"}]}  # no assistant turn
    lines = [json.dumps(r) for r in rows] + ['{"messages": "not json"}']
    f = tmp_path / "train.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_examples([f], DS)
    assert "train.jsonl (line 3): no assistant message" in str(err.value)
    assert "--skip-malformed" in str(err.value)
    examples, summary = load_examples([f], {**DS, "skip_malformed_rows": True})
    assert (summary.rows_total, summary.rows_used, summary.rows_skipped) == (5, 3, 2)
    assert summary.first_skipped[0].startswith("train.jsonl line 3")
    assert set(summary.to_dict()["skipped_reasons"]) == {"no assistant message", "bad messages"}


def test_broken_and_empty_inputs_are_clear(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 2: not valid JSON"):
        load_examples([bad_json], DS)
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet PAR1")
    with pytest.raises(DataError, match=r"cannot read .*corrupt.parquet as parquet"):
        load_examples([corrupt], DS)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="training data set is empty: 0 rows in empty.jsonl"):
        load_examples([empty], DS)
    with pytest.raises(DataError, match="does not exist"):
        find_data_files([tmp_path / "missing"])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no data here")
    with pytest.raises(DataError, match="no training data found"):
        find_data_files([tmp_path / "notes"])


def test_directory_input_and_shuffle_split_are_seeded(tmp_path):
    write(tmp_path / "a.jsonl", "jsonl", chat_rows())
    write(tmp_path / "b.parquet", "parquet", PAIRS)
    files = find_data_files([tmp_path])
    assert [f.name for f in files] == ["a.jsonl", "b.parquet"]
    examples, summary = load_examples(files, DS)
    train1, test1 = shuffle_and_split(examples, DS, summary)
    train2, _ = shuffle_and_split(examples, DS, summary)
    assert (len(train1), len(test1)) == (15, 5) and (summary.train_rows, summary.eval_rows) == (15, 5)
    assert [e.source for e in train1] == [e.source for e in train2]
    other, _ = shuffle_and_split(examples, {**DS, "shuffle_seed": 7}, summary)
    assert [e.source for e in other] != [e.source for e in train1]
    same_order, _ = shuffle_and_split(examples, {**DS, "shuffle_dataset": False, "train_test_split": 1}, summary)
    assert [e.source for e in same_order] == [e.source for e in examples]


def test_loss_only_on_assistant_tokens(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    f = write(tmp_path / "c.jsonl", "jsonl", chat_rows()[:1])
    examples, _ = load_examples([f], DS)
    row = Encoder(tok, 256).encode(examples[0])
    learned = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE]
    assert tok.decode(learned) == "The capital of France is Paris.<|end|>\n"
    assert list(row["labels"][: len(row["labels"]) - len(learned)]) == [IGNORE] * (len(row["labels"]) - len(learned))
    assert "What is the capital" in tok.decode(row["input_ids"])
    # A row whose answer lies beyond max_seq_length has nothing to learn: skipped and counted.
    enc = Encoder(tok, 8)
    assert enc.encode_all(examples) == [] and enc.skipped["no assistant tokens within max_seq_length"] == 1
