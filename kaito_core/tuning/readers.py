"""Read data files row by row, without holding a whole file in memory.

jsonl is read line by line; parquet by row groups (``ParquetFile.iter_batches``); arrow IPC
files and streams batch by batch from a memory map; csv with pyarrow's streaming reader. Only a
``.json`` array is parsed whole (the standard library has no incremental JSON parser); write
large data as jsonl or parquet. A file with a bad row therefore fails when that row is reached,
with memory bounded by one batch, not by the file (a 2 GB jsonl used to be read whole first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from kaito_core.api.training.errors import DataError

BATCH_ROWS = 4096
COLUMN_PROBE_LINES = 100  # jsonl: the layout is chosen from the keys of the first rows


def read_rows(path: Path, fmt: str) -> tuple[list[str], Iterator[tuple[str, Any]]]:
    """Columns and an iterator of (row label, row mapping). Unreadable files raise DataError."""
    try:
        if fmt == "jsonl":
            return _read_jsonl(path)
        if fmt == "json":
            return _read_json(path)
        if fmt == "csv":
            cols, batches = _csv_batches(path)
        elif fmt == "parquet":
            cols, batches = _parquet_batches(path)
        else:
            cols, batches = _arrow_batches(path)
    except DataError:
        raise
    except PermissionError as exc:
        raise DataError(f"cannot read {path}: permission denied ({exc.strerror}); make the file readable") from None
    except OSError as exc:
        raise DataError(f"cannot read {path} as {fmt}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid & co for corrupt files
        raise DataError(f"cannot read {path} as {fmt}: {type(exc).__name__}: {exc}") from None
    return cols, _numbered(path, fmt, batches)


def _numbered(path: Path, fmt: str, batches) -> Iterator[tuple[str, Any]]:
    n = 0
    try:
        for b in batches:
            for row in b.to_pylist():
                n += 1
                yield f"{path.name} row {n}", row
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt batch further down the file
        raise DataError(f"cannot read {path} as {fmt} after row {n}: {type(exc).__name__}: {exc}") from None


def _csv_batches(path: Path):
    import csv

    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Every column as text: a CSV cell "007" stays "007", a messages cell stays JSON.
    with open_data(path) as f:  # pyarrow decompresses a .csv.gz path itself
        header = f.readline().decode("utf-8-sig", "replace")  # pyarrow skips a BOM; so must the names
    names = next(csv.reader([header]), [])
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # a row would keep only the last cell of each; which one is meant cannot be told
        raise DataError(f"{path}: the header names the columns {twice} more than once; rename them")
    reader = pacsv.open_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, strings_can_be_null=False),
        read_options=pacsv.ReadOptions(block_size=1 << 22))
    return list(reader.schema.names), reader


def _parquet_batches(path: Path):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    return list(pf.schema_arrow.names), pf.iter_batches(batch_size=BATCH_ROWS)


def _arrow_batches(path: Path):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with open(path, "rb") as f:
        magic = f.read(6)
    source = pa.memory_map(str(path))
    if magic == b"ARROW1":
        reader = ipc.open_file(source)
        return list(reader.schema.names), (reader.get_batch(i) for i in range(reader.num_record_batches))
    reader = ipc.open_stream(source)
    return list(reader.schema.names), reader


GZIP_SUFFIXES = (".gz", ".gzip")


def open_data(path: Path):
    """A data file's bytes: ``.jsonl.gz``, ``.csv.gz``, ``.json.gz`` decompressed as they are
    read (datasets reads them the same way), others as they are."""
    import gzip

    return gzip.open(path, "rb") if path.suffix.lower() in GZIP_SUFFIXES else open(path, "rb")


def _damaged(path: Path, exc: BaseException) -> DataError:
    return DataError(f"cannot read {path}: the gzip stream is damaged or cut short ({exc}); download it again")


BOM = b"\xef\xbb\xbf"  # Windows tools start UTF-8 text with it; json.loads refuses it


def _utf8_lines(path: Path) -> Iterator[tuple[int, str]]:
    import zlib

    with open_data(path) as f:
        lines = enumerate(f, 1)
        while True:
            try:
                n, raw = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as exc:  # gzip: damaged or truncated
                raise _damaged(path, exc) from None
            if n == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"cannot read {path}: line {n} is not UTF-8 text (byte {exc.start}); save it as "
                                "UTF-8") from None


def _parse_line(path: Path, n: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {n}: not valid JSON ({exc.msg} at column {exc.colno}); every line "
                        "of a .jsonl file must be one JSON object") from None


def _read_jsonl(path: Path):
    cols: dict[str, None] = {}
    for n, line in _utf8_lines(path):
        if n > COLUMN_PROBE_LINES:
            break
        if line.strip():
            obj = _parse_line(path, n, line)
            if isinstance(obj, dict):
                cols.update(dict.fromkeys(obj))

    def rows() -> Iterator[tuple[str, Any]]:
        for n, line in _utf8_lines(path):
            if line.strip():
                yield f"{path.name} line {n}", _parse_line(path, n, line)

    return list(cols), rows()


def _read_json(path: Path):
    import zlib

    try:
        with open_data(path) as f:
            text = f.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except (EOFError, zlib.error) as exc:
        raise _damaged(path, exc) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    del text
    if isinstance(data, dict) and "messages" in data:
        data = [data]  # one conversation, pretty-printed
    if isinstance(data, dict):
        # {"data": [...]} or a column-oriented {"col": [values...]}
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            data = next(iter(lists.values()))
        elif lists and len(lists) == len(data) and len({len(v) for v in lists.values()}) == 1:
            keys = list(lists)
            data = [dict(zip(keys, vals)) for vals in zip(*lists.values())]
        else:
            raise DataError(f"{path}: a JSON file must hold an array of records (or one object per line)")
    if not isinstance(data, list):
        raise DataError(f"{path}: a JSON file must hold an array of records, found {type(data).__name__}")
    cols: dict[str, None] = {}
    for r in data[:1000]:
        if isinstance(r, dict):
            cols.update(dict.fromkeys(r))
    return list(cols), ((f"{path.name} record {i}", r) for i, r in enumerate(data, 1))


def save_to_disk_files(directory: Path) -> list[Path] | None:
    """The arrow files of a ``datasets`` ``save_to_disk`` directory (its JSON files are metadata,
    not data), or None when ``directory`` is not one. A DatasetDict gives its ``train`` split."""
    if (directory / "dataset_dict.json").is_file():
        try:
            splits = json.loads((directory / "dataset_dict.json").read_text()).get("splits") or []
        except (OSError, ValueError):
            splits = []
        pick = "train" if "train" in splits else (splits[0] if splits else None)
        return save_to_disk_files(directory / pick) if pick else None
    if (directory / "state.json").is_file() and (directory / "dataset_info.json").is_file():
        try:
            state = json.loads((directory / "state.json").read_text())
            names = [f["filename"] for f in state.get("_data_files", [])]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        files = [directory / n for n in names] or sorted(directory.glob("*.arrow"))
        return [f for f in files if f.is_file()] or None
    return None
