"""`csv`, `jsonl`, `parquet` and `arrow`: rows of text (and labels) tokenized into a transformers
model's inputs. `arrow` reads a Hugging Face `datasets` set saved on disk (`save_to_disk`: its
state.json lists data-*.arrow files, Arrow IPC streams) or one .arrow file, with pyarrow only.

`data.path` is a UTF-8 .csv file with a header row, or a .jsonl file with one JSON object per line
(blank lines skipped; a leading byte-order mark is skipped in either). `data.columns` names the
field holding the text (`text`), an optional second text (`text_pair`, for sentence-pair tasks)
and the label (`label`: class names, mapped to their index among the sorted names; or integer
indices, kept as they are; null for a model without labels, an embedding model). At most
`columns.max_rows` rows are read (the first ones), and the file may be at most TABLE_BYTES.

The tokenizer comes from `columns.tokenizer` (a folder with tokenizer files), else from the
recipe's Hugging Face model folder; it is loaded from local files only and never runs remote code.
Every row is padded and truncated to the sequence length of the model's inputs (the second
dimension of the first input's shape), and the source gives exactly the model's inputs by name
(input_ids, attention_mask, token_type_ids, ...) in their dtypes.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress.data.base import Splits, seeded_splits
from compress.errors import InputError

if TYPE_CHECKING:
    from compress.contracts import DataContext
    from compress.recipe import DataConfig, TextColumnsConfig

TABLE_BYTES = 2 << 30  # the rows are held in memory while tokenized
CHUNK_ROWS = 1024  # rows tokenized at a time
_INTEGER = re.compile(r"[+-]?\d+")

Row = tuple[str, str | None, Any]  # text, text pair, raw label


def csv_source(config: DataConfig, ctx: DataContext) -> Splits:
    return _table(config, ctx, "csv")


def jsonl_source(config: DataConfig, ctx: DataContext) -> Splits:
    return _table(config, ctx, "jsonl")


def parquet_source(config: DataConfig, ctx: DataContext) -> Splits:
    """A .parquet file (pyarrow), with the same columns as csv."""
    return _table(config, ctx, "parquet")


def arrow_source(config: DataConfig, ctx: DataContext) -> Splits:
    """A Hugging Face `datasets` set saved on disk (`save_to_disk`: state.json and data-*.arrow
    streams), or one .arrow file, read with pyarrow (the `datasets` library is not needed)."""
    return _table(config, ctx, "arrow")


def _table(config: DataConfig, ctx: DataContext, kind: str) -> Splits:
    assert config.path is not None  # the recipe schema requires it for these sources
    is_folder = kind == "arrow" and (ctx.folder / config.path).expanduser().is_dir()
    path = ctx.resolve_path(config.path, field="data.path", what="dataset" if is_folder else f"{kind.upper()} file",
                            kind="folder" if is_folder else "file")
    columns = config.columns
    length, inputs = _sequence(ctx)
    folder = _tokenizer_folder(columns, ctx)  # before reading: a missing tokenizer fails fast
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if is_folder else path.stat().st_size
    if size > TABLE_BYTES:
        raise InputError(f"{path.name} is {size:,} bytes, more than the {TABLE_BYTES:,} a {kind} source reads",
                         file=ctx.file, field="data.path")
    reader = {"csv": _csv_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows, "arrow": _arrow_rows}[kind]
    rows = _read(reader, path, columns, ctx.file)
    if len(rows) < 3:
        raise InputError(f"{path.name} has {len(rows)} row{'s' if len(rows) != 1 else ''}: a train, a calibration "
                         "and a test split need at least 3", file=ctx.file, field="data.path")
    labels = None if columns.label is None else _labels([row[2] for row in rows], path.name, ctx.file)
    tokenizer = _load_tokenizer(folder, ctx.file)
    x = _tokenize(tokenizer, rows, length, inputs, ctx.file)
    return seeded_splits(x, labels, calibration_fraction=config.calibration_fraction,
                         test_fraction=config.test_fraction, seed=config.seed, source=f"{kind}:{path.name}",
                         file=ctx.file)


# --- what the model takes ------------------------------------------------------------------------

def _sequence(ctx: DataContext) -> tuple[int, list[tuple[str, list[int], str]]]:
    """The sequence length every input is padded to, and the model's inputs."""
    inputs = ctx.inputs or [("input_ids", list(ctx.input_shape), ctx.input_dtype)]
    for name, shape, dtype in inputs:
        if len(shape) != 2 or not dtype.startswith("int"):
            raise InputError(f"a csv or jsonl source feeds token inputs of shape [batch, sequence] (int64); model "
                             f"input {name!r} is shape {shape}, dtype {dtype}", file=ctx.file, field="model.inputs")
    length = inputs[0][1][1]
    different = [name for name, shape, _ in inputs if shape[1] != length]
    if different:
        raise InputError(f"model input {different[0]!r} has a sequence length other than {inputs[0][0]!r}'s "
                         f"{length}: the tokenizer pads every input to one length", file=ctx.file,
                         field="model.inputs")
    return length, inputs


def _tokenizer_folder(columns: TextColumnsConfig, ctx: DataContext) -> Path:
    if columns.tokenizer:
        return ctx.resolve_path(columns.tokenizer, field="data.columns.tokenizer", what="tokenizer", kind="folder")
    if ctx.model_folder is not None:
        return ctx.model_folder
    raise InputError("no tokenizer: set data.columns.tokenizer to a folder with tokenizer files (or load the model "
                     "with model.huggingface, whose folder has them)", file=ctx.file, field="data.columns.tokenizer")


def _load_tokenizer(folder: Path, file: str) -> Any:
    try:
        from transformers import AutoTokenizer

        from compress.hf import quiet_transformers
    except ImportError:
        raise InputError("a csv or jsonl source needs transformers for its tokenizer: pip install "
                         "'edge-compress[hf]'", file=file, field="data.columns.tokenizer") from None
    quiet_transformers()
    try:  # local files only, never code from the folder
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many kinds for a folder it cannot read
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load a tokenizer from {folder}: {type(exc).__name__}: {reason}", file=file,
                         field="data.columns.tokenizer") from None


def _tokenize(tokenizer: Any, rows: list[Row], length: int, inputs: list[tuple[str, list[int], str]],
              file: str) -> dict[str, np.ndarray]:
    """Each model input for every row, padded and truncated to `length`, in chunks of CHUNK_ROWS."""
    x = {name: np.empty((len(rows), length), dtype=np.dtype(dtype)) for name, _, dtype in inputs}
    pairs = rows[0][1] is not None
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start:start + CHUNK_ROWS]
        texts = [row[0] for row in chunk]
        encoded = tokenizer(texts, [row[1] for row in chunk] if pairs else None, padding="max_length",
                            truncation=True, max_length=length, return_tensors="np")
        for name in x:
            if name not in encoded:
                raise InputError(f"model input {name!r} is not one the tokenizer makes (it makes "
                                 f"{', '.join(encoded)})", file=file, field="model.inputs")
            x[name][start:start + len(chunk)] = encoded[name]
    return x


# --- the rows ------------------------------------------------------------------------------------

def _read(reader: Any, path: Path, columns: TextColumnsConfig, file: str) -> list[Row]:
    rows: list[Row] = []
    try:
        for row in reader(path, columns, file):
            rows.append(row)
            if len(rows) >= columns.max_rows:
                break  # the first max_rows rows
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name} is not UTF-8 text (byte {exc.start} of a block)", file=file,
                         field="data.path") from None
    except OSError as exc:
        raise InputError(f"cannot read {path.name}: {exc.strerror or exc}", file=file, field="data.path") from None
    return rows


def _fields(columns: TextColumnsConfig) -> list[tuple[str, str]]:
    """(field of the recipe, column) for each column the rows must have."""
    wanted = [("data.columns.text", columns.text)]
    if columns.text_pair is not None:
        wanted.append(("data.columns.text_pair", columns.text_pair))
    if columns.label is not None:
        wanted.append(("data.columns.label", columns.label))
    return wanted


def _csv_rows(path: Path, columns: TextColumnsConfig, file: str) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames
            if not header:
                raise InputError(f"{path.name} is empty: a csv source needs a header row naming its columns",
                                 file=file, field="data.path")
            for field, column in _fields(columns):
                if column not in header:
                    raise InputError(f"{path.name} has no column {column!r} (its columns: {', '.join(header)})",
                                     file=file, field=field)
            for row in reader:
                where = f"{path.name} line {reader.line_num}"
                yield (_text(row.get(columns.text), columns.text, where, "data.columns.text", file),
                       None if columns.text_pair is None else
                       _text(row.get(columns.text_pair), columns.text_pair, where, "data.columns.text_pair", file),
                       None if columns.label is None else row.get(columns.label))
        except csv.Error as exc:
            raise InputError(f"{path.name} line {reader.line_num} is not valid CSV: {exc}", file=file,
                             field="data.path") from None


def _jsonl_rows(path: Path, columns: TextColumnsConfig, file: str) -> Iterator[Row]:
    wanted = _fields(columns)
    any_line = False
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            any_line = True
            where = f"{path.name} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where} is not JSON: {exc.msg} (column {exc.colno})", file=file,
                                 field="data.path") from None
            except RecursionError:
                raise InputError(f"{where} nests too deep to read", file=file, field="data.path") from None
            if not isinstance(record, dict):
                raise InputError(f"{where} is a JSON {type(record).__name__}, not an object", file=file,
                                 field="data.path")
            for field, column in wanted:
                if column not in record:
                    raise InputError(f"{where} has no field {column!r} (its fields: {', '.join(map(str, record))})",
                                     file=file, field=field)
            yield (_text(record[columns.text], columns.text, where, "data.columns.text", file),
                   None if columns.text_pair is None else
                   _text(record[columns.text_pair], columns.text_pair, where, "data.columns.text_pair", file),
                   None if columns.label is None else record[columns.label])
    if not any_line:
        raise InputError(f"{path.name} is empty: a jsonl source needs one JSON object per line", file=file,
                         field="data.path")


def _parquet_rows(path: Path, columns: TextColumnsConfig, file: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read {path.name} as parquet: {_first_line(exc)}", file=file,
                         field="data.path") from None
    yield from _columnar_rows(table, path.name, columns, file)


def _arrow_rows(path: Path, columns: TextColumnsConfig, file: str) -> Iterator[Row]:
    import pyarrow as pa

    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            raise InputError(f"{path.name} holds several splits ({', '.join(map(str, splits))}): point data.path at "
                             "one split's folder", file=file, field="data.path")
        files = _arrow_files(path, file)
    else:
        files = [path]
    tables = []
    for arrow in files:
        try:
            with pa.memory_map(str(arrow)) as source:
                try:
                    tables.append(pa.ipc.open_stream(source).read_all())  # what save_to_disk writes
                except pa.ArrowInvalid:
                    source.seek(0)
                    tables.append(pa.ipc.open_file(source).read_all())
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read {arrow.name} as Arrow: {_first_line(exc)}", file=file,
                             field="data.path") from None
    try:
        table = pa.concat_tables(tables)
    except pa.ArrowException as exc:
        raise InputError(f"the Arrow files of {path.name} differ in their columns: {_first_line(exc)}", file=file,
                         field="data.path") from None
    yield from _columnar_rows(table, path.name, columns, file)


def _arrow_files(folder: Path, file: str) -> list[Path]:
    """The data files a save_to_disk folder's state.json lists (inside the folder), else data-*.arrow."""
    names: list[str] = []
    state = folder / "state.json"
    if state.is_file():
        try:
            names = [str(entry["filename"]) for entry in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{folder.name}/state.json does not list its data files (_data_files)", file=file,
                             field="data.path") from None
    files = [folder / name for name in names] or sorted(folder.glob("*.arrow"))
    root = folder.resolve()
    for arrow in files:
        if not arrow.resolve().is_relative_to(root) or not arrow.is_file():
            raise InputError(f"{folder.name}: data file {arrow.name!r} is not a file inside the folder", file=file,
                             field="data.path")
    if not files:
        raise InputError(f"{folder.name} has no .arrow data files", file=file, field="data.path")
    return files


def _columnar_rows(table: Any, name: str, columns: TextColumnsConfig, file: str) -> Iterator[Row]:
    for field, column in _fields(columns):
        if column not in table.column_names:
            raise InputError(f"{name} has no column {column!r} (its columns: {', '.join(table.column_names)})",
                             file=file, field=field)
    texts = table.column(columns.text).to_pylist()
    pairs = None if columns.text_pair is None else table.column(columns.text_pair).to_pylist()
    labels = None if columns.label is None else table.column(columns.label).to_pylist()
    for index, text in enumerate(texts):
        where = f"{name} row {index + 1}"
        yield (_text(text, columns.text, where, "data.columns.text", file),
               None if pairs is None else _text(pairs[index], columns.text_pair or "", where,
                                                "data.columns.text_pair", file),
               None if labels is None else labels[index])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _text(value: Any, column: str, where: str, field: str, file: str) -> str:
    if not isinstance(value, str):
        shown = "missing" if value is None else f"{type(value).__name__} {repr(value)[:40]}"
        raise InputError(f"{where}: {column!r} is {shown}, not a string", file=file, field=field)
    return value


# --- the labels ----------------------------------------------------------------------------------

def _labels(raw: list[Any], name: str, file: str) -> np.ndarray:
    """Integer indices as they are (ints, or strings of digits), else class names mapped to their
    index among the sorted names."""
    for index, value in enumerate(raw):
        if value is None or value == "" or isinstance(value, bool) or not isinstance(value, int | str):
            shown = "missing" if value is None or value == "" else f"{value!r} (a {type(value).__name__})"
            raise InputError(f"{name}: the label of row {index + 1} is {shown}; labels are class names or integer "
                             "indices", file=file, field="data.columns.label")
    if all(isinstance(v, int) or _INTEGER.fullmatch(v.strip()) for v in raw):
        labels = np.array([int(v) for v in raw], dtype=np.int64)
        if labels.min() < 0:
            row = int(np.argmin(labels))
            raise InputError(f"{name}: the label of row {row + 1} is {labels[row]}; class indices start at 0",
                             file=file, field="data.columns.label")
        return labels
    names = sorted({str(v) for v in raw})
    index = {label: i for i, label in enumerate(names)}
    return np.array([index[str(v)] for v in raw], dtype=np.int64)
