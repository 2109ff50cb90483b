"""Results files of `mobinumba predict --out` and `mobinumba embed --out`: one row per image.

predict writes CSV, JSON Lines or Parquet, every format with the same flat columns
(columns(topk), PredictionRows):

    path, label_1, probability_1, index_1, ..., label_k, probability_k, index_k, error

embed writes Parquet (EmbeddingRows: path, embedding as a fixed-size list<float32> of C
values, error) or .npy with a sidecar (results_npy.py).

`error` is empty (null) for a classified or embedded image; for an image that could not be
read it holds the message and the other columns are empty.

Never half-written:
- .csv and .jsonl grow by whole rows: each batch is formatted in memory and appended with one
  write(), then flushed, so an interrupted run leaves every finished row intact. Should a
  crash tear the last line anyway (a full disk), --resume cuts it off before appending.
- .parquet cannot be appended to, so rows go to a temporary file beside the output (row groups
  of PARQUET_ROW_GROUP rows, through atomic.AtomicFile) that replaces the output by a rename
  when the run ends, also when it ends by an error, Ctrl-C or SIGTERM; a killed process
  leaves the previous output untouched.
--resume reads the paths already in the output and the caller skips them.
"""
import csv
import io
import json
import os

from .atomic import AtomicFile
from .errors import InputError

FORMATS = (".csv", ".jsonl", ".parquet")  # predict --out
EMBEDDING_FORMATS = (".parquet", ".npy")  # embed --out
# Rows per Parquet row group, held in memory until written: a predict row is ~100 bytes, an
# embedding row 4 * C bytes (16 MiB a group at C = 1024).
PARQUET_ROW_GROUP = 4096


def columns(topk):
    """The column names of a results file with `topk` predictions per image."""
    names = ["path"]
    for rank in range(1, topk + 1):
        names += [f"label_{rank}", f"probability_{rank}", f"index_{rank}"]
    return names + ["error"]


def result_row(result, topk):
    """A FileResult as a dict over columns(topk); None in the columns that do not apply."""
    row = {"path": result.path}
    predictions = result.predictions or []
    for rank in range(1, topk + 1):
        prediction = predictions[rank - 1] if rank <= len(predictions) else None
        row[f"label_{rank}"] = prediction.label if prediction else None
        row[f"probability_{rank}"] = prediction.probability if prediction else None
        row[f"index_{rank}"] = prediction.index if prediction else None
    row["error"] = one_line(result.error)
    return row


def one_line(error):
    """An error message with its whitespace runs made single spaces (None stays None)."""
    return " ".join(error.split()) if error is not None else None


class PredictionRows:
    """The rows of a predict results file: columns(topk), one row per FileResult."""

    formats = FORMATS

    def __init__(self, topk):
        self.topk = topk
        self.columns = columns(topk)

    def row(self, result):
        """A FileResult as a dict over the columns."""
        return result_row(result, self.topk)

    def schema(self):
        """The pyarrow schema of its Parquet file."""
        return parquet_schema(self.topk)

    def table(self, results, schema):
        """A pyarrow Table of FileResults."""
        pa, _ = _pyarrow("a .parquet file")
        return pa.Table.from_pylist([self.row(result) for result in results], schema=schema)

    def resume_problem(self, schema):
        """Why a Parquet file of `schema` cannot be continued with these rows, or None."""
        if schema.names != self.columns:
            return (f"it has columns {_shown(schema.names)}, this run writes "
                    f"{_shown(self.columns)} (use the same --topk, or a new file)")
        return None


class EmbeddingRows:
    """The rows of an embed results file: path, embedding ((C,) float32, or None for an
    image that could not be read), error; one row per FileEmbedding."""

    formats = EMBEDDING_FORMATS
    columns = ["path", "embedding", "error"]

    def __init__(self, channels):
        self.channels = channels

    def row(self, result):
        """A FileEmbedding as a dict over the columns (the embedding as a list of floats)."""
        embedding = None if result.embedding is None else result.embedding.tolist()
        return {"path": result.path, "embedding": embedding, "error": one_line(result.error)}

    def schema(self):
        """The pyarrow schema of its Parquet file: the embedding a fixed-size list<float32>."""
        pa, _ = _pyarrow("a .parquet file")
        return pa.schema([pa.field("path", pa.string()),
                          pa.field("embedding", pa.list_(pa.float32(), self.channels)),
                          pa.field("error", pa.string())])

    def table(self, results, schema):
        """A pyarrow Table of FileEmbeddings, the embeddings converted from their arrays."""
        pa, _ = _pyarrow("a .parquet file")
        return pa.Table.from_arrays(
            [pa.array([result.path for result in results], pa.string()),
             pa.array([result.embedding for result in results], schema.field("embedding").type),
             pa.array([one_line(result.error) for result in results], pa.string())],
            schema=schema)

    def resume_problem(self, schema):
        """Why a Parquet file of `schema` cannot be continued with these rows, or None."""
        if schema.names != self.columns:
            return (f"it has columns {_shown(schema.names)}, an embeddings file has "
                    f"{_shown(self.columns)} (use a new file)")
        pa, _ = _pyarrow("a .parquet file")
        found = schema.field("embedding").type  # the list's item name may differ by writer
        if not (pa.types.is_fixed_size_list(found) and found.list_size == self.channels
                and found.value_type == pa.float32()):
            return (f"its embeddings are {found}, this model gives {self.channels} float32 "
                    f"values (embed with the same model, or a new file)")
        return None


def open_results(path, topk, resume=False, force=False):
    """A results writer for `path`, its format chosen by the suffix (.csv, .jsonl, .parquet).

    An existing file is continued with resume=True (its paths are in the writer's `done`),
    replaced with force=True, and otherwise refused. Use the writer as a context manager.
    """
    path = os.fspath(path)
    suffix = check_results_path(path, resume, force)
    writer = {".csv": CsvResults, ".jsonl": JsonlResults, ".parquet": ParquetResults}[suffix]
    return writer(path, PredictionRows(topk), resume and os.path.exists(path))


def open_embeddings(path, channels, resume=False, force=False):
    """An embeddings writer for `path` (.parquet, or .npy with its sidecar, see
    results_npy.py) of (C,) = (channels,) vectors; resume and force as for open_results()."""
    from .results_npy import NpyEmbeddings, sidecar_path

    path = os.fspath(path)
    suffix = check_results_path(path, resume, force, EMBEDDING_FORMATS)
    if suffix == ".npy":
        exists = os.path.exists(path) or os.path.exists(sidecar_path(path))
        return NpyEmbeddings(path, channels, resume and exists)
    return ParquetResults(path, EmbeddingRows(channels), resume and os.path.exists(path))


def check_results_path(path, resume=False, force=False, formats=FORMATS):
    """Raise InputError unless a results file of one of `formats` can be written at `path`;
    returns the suffix."""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in formats:
        raise InputError(f"{path}: unknown results format {suffix or '(no suffix)'!r}; use "
                         f"{', '.join(formats)}")
    if suffix == ".parquet":
        _pyarrow(path, " or ".join(name for name in formats if name != ".parquet"))
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory; --out takes a file name")
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise InputError(f"{path}: directory {directory} does not exist")
    existing = [path]
    if suffix == ".npy":
        from .results_npy import sidecar_path
        existing.append(sidecar_path(path))
    for name in existing:
        if os.path.exists(name) and not (resume or force):
            raise InputError(f"{name} exists; pass --resume to continue it or --force to "
                             f"replace it")
    return suffix


class _TextResults:
    """Common part of the CSV and JSON Lines writers: whole rows appended, then flushed."""

    def __init__(self, path, rows, resume):
        self.path = path
        self.rows = rows  # PredictionRows
        self.columns = rows.columns
        self.done = set()
        if resume:
            _cut_torn_last_line(path)
            self.done = self._read_done_paths()
            self._file = open(path, "a", encoding="utf-8", newline="")
        else:
            self._file = open(path, "w", encoding="utf-8", newline="")
            self._start()
        self.rows_written = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def write(self, results):
        """Append FileResults as whole rows and flush them to the file."""
        if not results:
            return
        self._file.write(self._format([self.rows.row(result) for result in results]))
        self._file.flush()
        self.rows_written += len(results)

    def _start(self):
        pass

    def _mismatch(self, found):
        return InputError(f"{self.path}: cannot resume: it has columns {_shown(found)}, this "
                          f"run writes {_shown(self.columns)} (use the same --topk, or a new "
                          f"file)")


class CsvResults(_TextResults):
    """A .csv results file with a header row."""

    def _start(self):
        self._file.write(self._format([dict(zip(self.columns, self.columns))]))
        self._file.flush()

    def _format(self, rows):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.columns, lineterminator="\n")
        writer.writerows(rows)
        return buffer.getvalue()

    def _read_done_paths(self):
        with open(self.path, encoding="utf-8", newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            if header is None:  # empty: a run that died before its header; start it again
                self._start_empty()
                return set()
            if header != self.columns:
                raise self._mismatch(header)
            return {row[0] for row in reader if row}

    def _start_empty(self):
        with open(self.path, "w", encoding="utf-8", newline="") as file:
            file.write(self._format([dict(zip(self.columns, self.columns))]))


class JsonlResults(_TextResults):
    """A .jsonl results file: one JSON object per line, keys in column order."""

    def _format(self, rows):
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)

    def _read_done_paths(self):
        done = set()
        with open(self.path, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"{self.path}:{number}: cannot resume: not a JSON line "
                                     f"({error})") from None
                if not isinstance(row, dict) or list(row) != self.columns:
                    raise self._mismatch(list(row) if isinstance(row, dict) else row)
                done.add(row["path"])
        return done


class ParquetResults:
    """A .parquet results file, written to a temporary file and renamed into place at the end.

    rows: PredictionRows or EmbeddingRows, the columns and how results become them.
    """

    def __init__(self, path, rows, resume):
        _, pq = _pyarrow(path)
        self.path = path
        self.rows = rows
        self.schema = rows.schema()
        self.done = set()
        self.rows_written = 0
        self._pending = []  # results not yet in a row group
        previous = pq.ParquetFile(path) if resume else None
        if previous is not None:
            problem = rows.resume_problem(previous.schema_arrow)
            if problem:
                raise InputError(f"{path}: cannot resume: {problem}")
        # Existing outputs were refused or allowed (--resume, --force) by check_results_path.
        self._output = AtomicFile(path, overwrite=True)
        try:
            self._writer = pq.ParquetWriter(self._output.temp_path, self.schema)
            if previous is not None:  # copied a row group at a time: embeddings can be large
                self.done = set(previous.read(columns=["path"]).column("path").to_pylist())
                for index in range(previous.num_row_groups):
                    self._writer.write_table(previous.read_row_group(index).cast(self.schema))
        except BaseException:
            self._output.discard()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Write what is pending, close the file and move it over the output, also when the
        run was interrupted (the rows so far are kept); a file that fails to close is dropped."""
        try:
            self._flush_rows()
            self._writer.close()
        except BaseException:
            self._output.discard()
            raise
        self._output.commit(after_interruption=True)

    def write(self, results):
        """Add results; they reach the file in row groups of PARQUET_ROW_GROUP rows."""
        self._pending += results
        self.rows_written += len(results)
        if len(self._pending) >= PARQUET_ROW_GROUP:
            self._flush_rows()

    def _flush_rows(self):
        if self._pending:
            self._writer.write_table(self.rows.table(self._pending, self.schema))
            self._pending = []


def parquet_schema(topk):
    """The pyarrow schema of a Parquet results file (nullable prediction columns)."""
    pa, _ = _pyarrow("a .parquet file")
    fields = [pa.field("path", pa.string())]
    for rank in range(1, topk + 1):
        fields += [pa.field(f"label_{rank}", pa.string()),
                   pa.field(f"probability_{rank}", pa.float64()),
                   pa.field(f"index_{rank}", pa.int64())]
    return pa.schema(fields + [pa.field("error", pa.string())])


def _pyarrow(what, instead=".csv or .jsonl"):
    """pyarrow and pyarrow.parquet, or InputError naming the extra and the formats `instead`."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InputError(f"{what}: writing Parquet needs pyarrow (pip install "
                         f"'mobinumba[stream]'); or use {instead}") from None
    return pyarrow, pyarrow.parquet


def read_embeddings(path):
    """(paths, embeddings (N, C) float32, errors) of an embed results file (.parquet, or .npy
    with its sidecar), in file order: errors[i] is None for an embedded image, and its row of
    embeddings is all NaN otherwise."""
    import numpy as np

    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() == ".npy":
        from .results_npy import read_npy_embeddings
        return read_npy_embeddings(path)
    _, pq = _pyarrow(path)
    table = pq.read_table(path)
    column = table.column("embedding").combine_chunks()  # fixed-size list<float32>[C]
    size = column.type.list_size
    values = column.values.slice(column.offset * size, len(column) * size)
    embeddings = values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, size)
    embeddings[~column.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return (table.column("path").to_pylist(), embeddings, table.column("error").to_pylist())


def read_results(path):
    """The rows of a results file as a list of dicts (None for empty cells), in file order.

    CSV cells come back typed like the other formats: floats, ints, None for empty.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".parquet":
        _, pq = _pyarrow(path)
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8", newline="") as file:
        if suffix == ".jsonl":
            return [json.loads(line) for line in file if line.strip()]
        return [{name: _typed(name, value) for name, value in row.items()}
                for row in csv.DictReader(file)]


def _typed(name, value):
    if value == "" and name != "path":
        return None
    if name.startswith("probability_"):
        return float(value)
    if name.startswith("index_"):
        return int(value)
    return value


def _cut_torn_last_line(path):
    """Truncate a file after its last newline (drops a row whose write was cut short)."""
    with open(path, "rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        keep = 0
        step = 1 << 16
        for start in range(max(0, (size - 1) // step * step), -1, -step):
            file.seek(start)
            chunk = file.read(min(step, size - start))
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
        file.truncate(keep)


def _shown(names):
    return "(" + ", ".join(map(str, names[:4])) + (", ..." if len(names) > 4 else "") + ")"

