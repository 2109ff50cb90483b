"""`mobinumba embed --out feats.npy`: embeddings as one .npy array plus a sidecar of paths.

    feats.npy          (N, C) float32, C order: row i is the embedding of the sidecar's line i;
                       all NaN for an image that could not be read
    feats.paths.jsonl  N lines, in input order: {"path": "...", "error": null} or
                       {"path": "...", "error": "one-line message"}

np.load("feats.npy", mmap_mode="r") reads the array without loading it; read_npy_embeddings()
reads both and checks that they agree.

Never half-written, like a Parquet results file: rows go to two temp files beside the outputs
(the .npy with a header written for 0 rows and rewritten with the final count at the end),
which replace both outputs together when the run ends, also by an error, Ctrl-C or SIGTERM
(one atomic.AtomicFile with the sidecar as its companion: signals are held from the first
rename to the second); a killed process leaves the previous pair untouched. Only a crash
between the two renames could pair a new sidecar with an old array: --resume then refuses the
pair (the counts differ) instead of continuing it.

--resume checks the previous pair (2-D float32 with C columns, as many rows as sidecar lines),
copies it into the new temp files in chunks, and the caller skips its paths.
"""
import io
import json
import os

import numpy as np

from .atomic import AtomicFile
from .errors import InputError, MobinumbaError
from .results import one_line

SIDECAR_SUFFIX = ".paths.jsonl"
# Rows of a previous array copied at a time on --resume (16 MiB at C = 1024).
COPY_ROWS = 4096


def sidecar_path(path):
    """The sidecar of an .npy embeddings file: feats.npy -> feats.paths.jsonl."""
    return os.path.splitext(os.fspath(path))[0] + SIDECAR_SUFFIX


def _header(rows, channels):
    """The .npy (format 1.0) header of a (rows, channels) float32 C-order array, as bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                 "fortran_order": False, "shape": (rows, channels)})
    return buffer.getvalue()


class NpyEmbeddings:
    """An .npy embeddings file and its sidecar, written through temp files (see the module
    doc). `done` holds the paths of a resumed pair; use as a context manager."""

    def __init__(self, path, channels, resume):
        self.path = path
        self.sidecar = sidecar_path(path)
        self.channels = channels
        self.done = set()
        self.rows_written = 0
        self._rows = 0  # rows in the temp array, resumed ones included
        previous = read_npy_embeddings(path, channels, mmap=True) if resume else None
        # Existing outputs were refused or allowed (--resume, --force) by check_results_path.
        self._output = AtomicFile(path, overwrite=True, companions=[self.sidecar])
        try:
            self._array = open(self._output.temp_path, "wb")
            self._lines = open(self._output.companion_temp_paths[0], "w", encoding="utf-8")
            self._array.write(_header(0, channels))
            if previous is not None:
                paths, embeddings, errors = previous
                self.done = set(paths)
                for start in range(0, len(paths), COPY_ROWS):
                    self._append(paths[start:start + COPY_ROWS],
                                 embeddings[start:start + COPY_ROWS],
                                 errors[start:start + COPY_ROWS])
        except BaseException:
            self._close_files()
            self._output.discard()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Write the final row count into the header, close both files and move them over the
        outputs, also when the run was interrupted (the rows so far are kept)."""
        try:
            header = _header(self._rows, self.channels)
            if len(header) != len(_header(0, self.channels)):  # numpy pads it to stay fixed
                raise MobinumbaError(f"{self.path}: the .npy header for {self._rows} rows "
                                     f"does not fit the space written for it")
            self._array.seek(0)
            self._array.write(header)
            self._close_files()
        except BaseException:
            self._close_files()
            self._output.discard()
            raise
        self._output.commit(after_interruption=True)

    def write(self, results):
        """Append FileEmbeddings: their rows (NaN for an error) and sidecar lines."""
        if not results:
            return
        embeddings = np.full((len(results), self.channels), np.nan, np.float32)  # (k, C)
        for row, result in enumerate(results):
            if result.embedding is not None:
                embeddings[row] = result.embedding
        errors = [one_line(result.error) for result in results]
        self._append([result.path for result in results], embeddings, errors)
        self.rows_written += len(results)

    def _append(self, paths, embeddings, errors):
        self._array.write(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
        self._lines.write("".join(json.dumps({"path": path, "error": error},
                                             ensure_ascii=False) + "\n"
                                  for path, error in zip(paths, errors)))
        self._rows += len(paths)

    def _close_files(self):
        for name in ("_array", "_lines"):
            file = getattr(self, name, None)
            if file is not None:
                file.close()


def read_npy_embeddings(path, channels=None, mmap=False):
    """(paths, embeddings (N, C) float32, errors) of an .npy embeddings file and its sidecar,
    in row order (errors[i] None for an embedded image). Raises InputError naming the file
    when either is unreadable, they disagree, or C differs from `channels` (when given).
    mmap: map the array instead of reading it."""
    path = os.fspath(path)
    sidecar = sidecar_path(path)
    for name in (path, sidecar):
        if not os.path.isfile(name):
            raise InputError(f"{name}: not found; an .npy embeddings file comes with its "
                             f"sidecar {os.path.basename(sidecar)} (use --force to start anew)")
    try:  # mapped: a header claiming more rows than the file holds fails here, unallocated
        embeddings = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as error:  # numpy's header parser raises ValueError, SyntaxError,
        # tokenize.TokenError, ... on a damaged header (found by tests/test_embed.py's fuzzer)
        raise InputError(f"{path}: not a readable .npy file ({type(error).__name__}: "
                         f"{' '.join(str(error).split())})") from None
    if embeddings.ndim != 2 or embeddings.dtype != np.float32:
        raise InputError(f"{path}: holds a {embeddings.dtype} array of shape "
                         f"{embeddings.shape}, not (N, C) float32 embeddings")
    if channels is not None and embeddings.shape[1] != channels:
        raise InputError(f"{path}: its embeddings have {embeddings.shape[1]} values, this model "
                         f"gives {channels} (embed with the same model, or a new file)")
    paths, errors = _read_sidecar(sidecar)
    if len(paths) != len(embeddings):
        raise InputError(f"{path} has {len(embeddings)} rows but {sidecar} lists {len(paths)} "
                         f"images: they are not one pair (use --force to start anew)")
    return paths, (embeddings if mmap else np.array(embeddings)), errors


def _read_sidecar(sidecar):
    """(paths, errors) from the sidecar's lines; InputError naming the line otherwise."""
    paths, errors = [], []
    try:
        with open(sidecar, encoding="utf-8") as file:
            for number, line in enumerate(file, start=1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(f"{sidecar}:{number}: not a JSON line ({error})") from None
                if not (isinstance(row, dict) and list(row) == ["path", "error"]
                        and isinstance(row["path"], str)
                        and (row["error"] is None or isinstance(row["error"], str))):
                    raise InputError(f"{sidecar}:{number}: expected {{\"path\": string, "
                                     f"\"error\": null or string}}")
                paths.append(row["path"])
                errors.append(row["error"])
    except UnicodeDecodeError as error:
        raise InputError(f"{sidecar}: not UTF-8 text ({error})") from None
    return paths, errors
