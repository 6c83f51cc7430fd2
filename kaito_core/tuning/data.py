"""Training data: find the files, read rows, turn each row into a conversation or a text.

Formats: csv, json (an array, or one object per line), jsonl, parquet and arrow (IPC file or
stream, as ``datasets`` saves). Row layouts, checked per file in this order:

1. a messages column (``DatasetConfig.messages_column``, else ``messages``): OpenAI-style
   ``[{"role": ..., "content": ...}, ...]`` (upstream's dolly-15k "oai-style" parquet);
2. a prompt/response pair: ``DatasetConfig.context_column`` + ``response_column`` when a
   context column is configured, else ``prompt`` + ``completion``;
3. a plain text column (``DatasetConfig.response_column``, default ``text``): the whole text is
   learned.

A malformed row stops the run with its file and row number (or is skipped and counted when
``DatasetConfig.skip_malformed_rows`` is true); the summary says how many rows were used.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from kaito_core.api.training.errors import DataError
from kaito_core.tuning.messages import ROLES, Malformed, to_messages, unicode_text  # noqa: F401 - ROLES re-exported

EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
              ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
FORMATS = ("csv", "json", "jsonl", "parquet", "arrow")
# JSON files a directory of data often holds that are not rows: a Hugging Face dataset repo's
# or save_to_disk's metadata, a model's or adapter's files, kaito's own records. Skipped when a
# directory is searched (named explicitly, a file is always read).
NOT_DATA = frozenset({
    "dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json", "config.json",
    "adapter_config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "trainer_state.json", "kaito-tuning-summary.json", "kaito-run.json"})


@dataclass
class Example:
    """One usable row: a conversation (loss on assistant turns) or a plain text (loss on all)."""

    source: str  # "file.jsonl row 3"
    messages: list[dict[str, Any]] | None = None
    text: str | None = None


@dataclass
class DataSummary:
    files: list[str] = field(default_factory=list)
    rows_total: int = 0
    rows_used: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_skipped: list[str] = field(default_factory=list)
    layouts: dict[str, str] = field(default_factory=dict)
    train_rows: int = 0
    eval_rows: int = 0

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, where: str, reason: str) -> None:
        self.skipped[reason.split(":")[0]] += 1
        if len(self.first_skipped) < 5:
            self.first_skipped.append(f"{where}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "layouts": self.layouts, "rows_total": self.rows_total,
                "rows_used": self.rows_used, "rows_skipped": self.rows_skipped,
                "skipped_reasons": dict(self.skipped), "first_skipped": self.first_skipped,
                "train_rows": self.train_rows, "eval_rows": self.eval_rows}


# --- finding and reading files ---------------------------------------------------------------


def find_data_files(paths: list[Path], *, dataset_path: str | None = None) -> list[Path]:
    """The data files under ``paths`` (files or directories, searched recursively, sorted).

    ``dataset_path`` (DatasetConfig) picks one file, relative to the input directories.
    """
    if dataset_path:
        cand = Path(dataset_path)
        if ".." in cand.parts:
            raise DataError(f"DatasetConfig.dataset_path {dataset_path!r}: '..' would leave the input directory; "
                            "give a path inside it (or an absolute path)")
        tries = [cand] if cand.is_absolute() else [p / cand for p in paths if p.is_dir()] + [cand]
        for t in tries:
            if t.is_file():
                return [t]
        raise DataError(f"DatasetConfig.dataset_path {dataset_path!r}: no such file in "
                        f"{', '.join(str(p) for p in paths) or 'the inputs'}")
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(_walk(p))
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"input {str(p)!r} does not exist; give a data file or a directory of them")
    usable = [f for f in files if _by_name(f) or _sniff(f)]
    if not usable:
        shown = ", ".join(str(f) for f in files[:5]) or "no files at all"
        raise DataError(f"no training data found in {', '.join(str(p) for p in paths)} ({shown}); "
                        f"expected files ending in {', '.join(sorted(EXTENSIONS))} (csv, json and jsonl also "
                        "gzip-compressed, .gz)")
    return usable


def _walk(directory: Path) -> list[Path]:
    """The files under ``directory`` (sorted; hidden ones and symlinked directories skipped). A
    ``datasets.save_to_disk`` directory, at the top or further down (a data image holding one),
    gives its arrow files only (a DatasetDict: its train split), not its metadata or other splits."""
    from kaito_core.tuning.readers import save_to_disk_files

    saved = save_to_disk_files(directory)
    if saved:
        return saved
    out: list[Path] = []
    for child in sorted(directory.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and not child.is_symlink():
            out.extend(_walk(child))
        elif child.is_file() and child.name.lower() not in NOT_DATA:
            out.append(child)
    return out


def _by_name(path: Path) -> str | None:
    """The format a file's name says: ``train.jsonl``, or ``train.jsonl.gz`` (text formats only)."""
    from kaito_core.tuning.readers import GZIP_SUFFIXES

    suffix = path.suffix.lower()
    if suffix in GZIP_SUFFIXES:
        inner = Path(path.stem).suffix.lower()
        return EXTENSIONS.get(inner) if inner in (".csv", ".json", ".jsonl", ".ndjson") else None
    return EXTENSIONS.get(suffix)


def _sniff(path: Path) -> str | None:
    """Guess the format of a file without a known extension (e.g. a download named 'data')."""
    from kaito_core.tuning.readers import GZIP_SUFFIXES, open_data

    if path.suffix.lower() in GZIP_SUFFIXES:
        try:
            with open_data(path) as f:
                head, tail = f.read(4096), b""
        except (OSError, EOFError, ValueError):
            return None
    else:
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
                f.seek(-4, 2) if path.stat().st_size >= 8 else None
                tail = f.read(4) if path.stat().st_size >= 8 else b""
        except OSError:
            return None
    head = head.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM
    if head.startswith(b"PAR1") and tail == b"PAR1":
        return "parquet"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow"
    text = head.lstrip()
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    return None


def format_of(path: Path, override: str | None = None) -> str:
    if override:
        fmt = override.lower().lstrip(".")
        if fmt not in FORMATS:
            raise DataError(f"DatasetConfig.dataset_extension {override!r}: expected one of {list(FORMATS)}")
        return fmt
    fmt = _by_name(path) or _sniff(path)
    if fmt is None:
        raise DataError(f"{path}: unknown data format; name it .csv, .json, .jsonl, .parquet or .arrow, "
                        "or set DatasetConfig.dataset_extension")
    named = Path(path.stem).suffix.lower() if path.suffix.lower() in (".gz", ".gzip") else path.suffix.lower()
    if named not in (".jsonl", ".ndjson") and fmt in ("json", "jsonl") and _sniff(path) == "jsonl":
        # ".json" files holding one object per line, as datasets writes them; or one
        # pretty-printed object (its first line is just "{")
        fmt = "jsonl" if _first_line_is_json(path) else "json"
    return fmt


def _first_line_is_json(path: Path) -> bool:
    """One object per line, or one pretty-printed document (whose first line is just ``{``)?"""
    from kaito_core.tuning.readers import open_data

    try:
        with open_data(path) as f:
            for raw in f:
                line = raw.removeprefix(b"\xef\xbb\xbf").strip()
                if line:
                    json.loads(line)
                    return True
    except (OSError, ValueError, EOFError):
        return False
    return False


def read_rows(path: Path, fmt: str) -> tuple[list[str], Iterator[tuple[str, Any]]]:
    """Columns and an iterator of (row label, row mapping), streamed (see :mod:`.readers`)."""
    from kaito_core.tuning.readers import read_rows as _read

    return _read(path, fmt)


# --- rows -> examples ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    kind: str  # messages | pair | text
    columns: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.kind} ({', '.join(self.columns)})"


def choose_layout(columns: list[str], ds: Mapping[str, Any], path: Path) -> Layout:
    cols = set(columns)
    messages_col = ds.get("messages_column")
    if messages_col:
        if messages_col in cols:
            return Layout("messages", (messages_col,))
        raise _wrong_columns(path, columns, f"DatasetConfig.messages_column is {messages_col!r}")
    if ds.get("context_column"):
        ctx, resp = ds["context_column"], ds.get("response_column") or "text"
        missing = [c for c in (ctx, resp) if c not in cols]
        if missing:
            raise _wrong_columns(path, columns, f"DatasetConfig.context_column/response_column are "
                                                f"{ctx!r}/{resp!r}; missing {missing}")
        return Layout("pair", (ctx, resp))
    if "messages" in cols:
        return Layout("messages", ("messages",))
    prompt, completion = ds.get("prompt_column") or "prompt", ds.get("completion_column") or "completion"
    if prompt in cols and completion in cols:
        return Layout("pair", (prompt, completion))
    resp = ds.get("response_column") or "text"
    if resp in cols:
        return Layout("text", (resp,))
    raise _wrong_columns(path, columns, "")


def _wrong_columns(path: Path, columns: list[str], why: str) -> DataError:
    found = ", ".join(repr(c) for c in columns) or "none"
    lead = f"{why}; " if why else ""
    return DataError(
        f"{path}: {lead}the columns found ({found}) match no supported layout. Expected a 'messages' column "
        "(OpenAI chat format), 'prompt' + 'completion', or a 'text' column; for other names set "
        "DatasetConfig.messages_column, or context_column + response_column, or response_column")


def row_to_example(row: Any, layout: Layout, where: str) -> Example:
    if not isinstance(row, Mapping):
        raise Malformed(f"not a record: expected an object with columns, got {type(row).__name__}")
    if layout.kind == "messages":
        return Example(where, messages=to_messages(row.get(layout.columns[0])))
    if layout.kind == "pair":
        ctx, resp = (row.get(c) for c in layout.columns)
        if ctx is None:
            ctx = ""
        if not isinstance(ctx, str):
            raise Malformed(f"bad {layout.columns[0]}: expected text, got {type(ctx).__name__}")
        if not isinstance(resp, str) or not resp.strip():
            raise Malformed(f"empty {layout.columns[1]}: nothing to learn from")
        ctx, resp = unicode_text(ctx, layout.columns[0]), unicode_text(resp, layout.columns[1])
        return Example(where, messages=[{"role": "user", "content": ctx}, {"role": "assistant", "content": resp}])
    text = row.get(layout.columns[0])
    if not isinstance(text, str) or not text.strip():
        raise Malformed(f"empty {layout.columns[0]}: no text to learn from")
    return Example(where, text=unicode_text(text, layout.columns[0]))


def iter_examples(files: list[Path], ds: Mapping[str, Any], summary: DataSummary) -> Iterator[Example]:
    """Stream every file's rows as examples; malformed rows raise (or are skipped and counted).
    Counts go into ``summary``; nothing is kept, so a file of any size is read in bounded memory."""
    skip = bool(ds.get("skip_malformed_rows"))
    for path in files:
        fmt = format_of(path, ds.get("dataset_extension"))
        columns, rows = read_rows(path, fmt)
        layout = choose_layout(columns, ds, path) if columns else None
        if layout:
            summary.layouts[path.name] = layout.describe()
        for where, row in rows:
            summary.rows_total += 1
            try:
                if layout is None:
                    raise Malformed(f"not a record: expected an object with columns, got {type(row).__name__}")
                ex = row_to_example(row, layout, where)
            except Malformed as exc:
                if not skip:
                    raise DataError(f"{path} ({where.split(' ', 1)[1]}): {exc}. Fix the record, or set "
                                    "DatasetConfig.skip_malformed_rows: true (--skip-malformed) to skip "
                                    "such rows") from None
                summary.skip(where, str(exc))
                continue
            summary.rows_used += 1
            yield ex


def _check_not_empty(files: list[Path], summary: DataSummary) -> None:
    if summary.rows_used:
        return
    where = ", ".join(Path(f).name for f in files)
    why = f"; {summary.rows_skipped} malformed rows were skipped, e.g. {summary.first_skipped[0]}" \
        if summary.first_skipped else ""
    raise DataError(f"the training data set is empty: {summary.rows_total} rows in {where}{why}")


def scan(files: list[Path], ds: Mapping[str, Any]) -> DataSummary:
    """First pass: check every row and count, keeping nothing (errors surface before any model
    is loaded, in memory bounded by one batch)."""
    summary = DataSummary(files=[str(f) for f in files])
    for _ in iter_examples(files, ds, summary):
        pass
    _check_not_empty(files, summary)
    return summary


def load_examples(files: list[Path], ds: Mapping[str, Any]) -> tuple[list[Example], DataSummary]:
    """Read every file into examples (small data; the recipe streams with :func:`iter_examples`)."""
    summary = DataSummary(files=[str(f) for f in files])
    examples = list(iter_examples(files, ds, summary))
    _check_not_empty(files, summary)
    return examples, summary


def shuffle_and_split(examples: list[Any], ds: Mapping[str, Any],
                      summary: DataSummary) -> tuple[list[Any], list[Any]]:
    """Upstream order: shuffle once (seeded), then keep ``train_test_split`` of the rows for training."""
    items = list(examples)
    if ds.get("shuffle_dataset", True):
        random.Random(ds.get("shuffle_seed", 42)).shuffle(items)
    frac = float(ds.get("train_test_split", 1.0))
    n_train = len(items) if frac >= 1 else max(1, int(round(len(items) * frac)))
    if frac < 1 and n_train == len(items) and len(items) > 1:
        n_train -= 1  # keep at least one evaluation row when a split was asked for
    train, test = items[:n_train], items[n_train:]
    summary.train_rows, summary.eval_rows = len(train), len(test)
    return train, test
