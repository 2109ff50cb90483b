"""predict_files: classify any number of image files with bounded memory.

Every prediction goes through it: Model.predict (inline decoding, raising on a bad image),
`mobinumba predict` (inline decoding, printed), `predict --out` (decode threads, into a
results file, see batch.py) and each task of a Dask run (mobinumba.dask).

The pipeline is a small pool of decoding threads feeding the model through a bounded window of
futures, in input order:

    paths ──> decode pool (`workers` threads: open, resize, normalise) ──> window of at most
    2 * batch_size decoded images ──> batches of batch_size ──> Model (Numba, all its threads)
    ──> FileResult per path, yielded in input order

Threads, not processes: Pillow releases the GIL while it decodes and resizes, and NumPy while
it normalises, so decoding threads run beside the forward pass, which holds no GIL either
(Numba kernels), and a decoded (3, S, S) float32 image is handed over without pickling it
between processes. The window holds futures rather than a queue so that results come out in
input order without a reordering buffer; memory stays at about 2 * batch_size decoded images
plus one batch, however many paths are given (they are read lazily from any iterable).
"""
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import List, NamedTuple, Optional

import numpy as np

from .errors import InputError, MobinumbaError, check_integer
from .model import PREDICT_BATCH, Model, Prediction, load, no_classifier_message
from .threads import available_cores

# Upper bound of --batch-size / batch_size: the workspace of a 224x224 batch of 1024 is ~6 GiB.
MAX_BATCH_SIZE = 1024
MAX_DECODE_WORKERS = 64
# Paths per task of a distributed run (mobinumba.dask): large enough that a task outlasts
# Dask's per-task overhead (~1 ms) many times over, small enough that a lost worker costs
# little recomputation.
DEFAULT_PARTITION_SIZE = 256
MAX_PARTITION_SIZE = 10 ** 6


class FileResult(NamedTuple):
    """The outcome for one image file: its top-k predictions, or why it could not be read."""

    path: str
    predictions: Optional[List[Prediction]]  # most probable first; None when error is set
    error: Optional[str]                       # one line naming the file; None on success


def predict_files(paths, batch_size=PREDICT_BATCH, topk=5, weights=None, workers=None):
    """Yield a FileResult for each path, in order, lazily and with bounded memory.

    paths: any iterable of image paths (consumed as results are needed), or of PIL images
    (their FileResult.path is the image itself).
    batch_size: images per forward pass. topk: predictions per image.
    weights: None (the shipped model), a path to a mobinumba .h5 file, or a loaded Model.
    workers: decoding threads (default: default_decode_threads(); 0 decodes in the calling
    thread, between forward passes). They run beside the kernels' threads: for one thread per
    core, mobinumba.set_threads(cores - workers) (what `predict --out` does).
    An image that cannot be read gives a FileResult with `error` set and the run goes on;
    bad arguments raise InputError before anything is read.
    """
    workers = default_decode_threads() if workers is None else workers
    model = weights if isinstance(weights, Model) else load(weights)
    model.require_classifier()
    check_options(model.num_classes, batch_size, topk, workers)
    batch_size = model.images_per_batch(batch_size)  # fewer when one image is very large
    if workers == 0:
        return _predict_inline(model, iter(paths), batch_size, topk)
    return _predict_pipelined(model, iter(paths), batch_size, topk, workers)


def default_decode_threads():
    """A third of the cores, at least one: decoding and resizing a 500x375 JPEG took about
    4 ms here and a forward pass about 7 ms of one core, so a third of the cores decoding
    keeps the other two thirds busy with the model (docs/scale.md)."""
    return max(1, available_cores() // 3)


def check_options(num_classes, batch_size, topk, workers=0):
    """Raise InputError unless batch_size, topk and workers are usable (topk <= num_classes)
    and the model has a classifier (num_classes > 0)."""
    if num_classes == 0:
        raise InputError(no_classifier_message("the model"))
    check_integer("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    check_integer("topk", topk, 1, num_classes)
    check_integer("workers", workers, 0, MAX_DECODE_WORKERS)


def _decode(model, path):
    """(path, (3, S, S) float32 image, None) or (path, None, error message); `path` may also
    be a PIL image."""
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
    try:
        return path, model.preprocess(path), None
    except MobinumbaError as error:
        return path, None, str(error)


def _predict_inline(model, paths, batch_size, topk):
    """The pipeline without threads: decode a batch, run it, repeat."""
    while True:
        decoded = [_decode(model, path) for _, path in zip(range(batch_size), paths)]
        if not decoded:
            return
        yield from _run_batch(model, decoded, topk)


def _predict_pipelined(model, paths, batch_size, topk, workers):
    """Decode in `workers` threads at most 2 * batch_size images ahead of the model."""
    window = deque()  # futures of _decode results, in input order
    with ThreadPoolExecutor(workers, thread_name_prefix="mobinumba-decode") as pool:
        try:
            while True:
                for path in paths:  # top up the window; stops early once it is full
                    window.append(pool.submit(_decode, model, path))
                    if len(window) >= 2 * batch_size:
                        break
                if not window:
                    return
                count = min(batch_size, len(window))
                decoded = [window.popleft().result() for _ in range(count)]
                yield from _run_batch(model, decoded, topk)
        finally:  # the consumer stopped early or something raised: drop what is queued
            for future in window:
                future.cancel()


def _run_batch(model, decoded, topk):
    """FileResults for decoded (path, image or None, error or None) triples, in order."""
    images = [image for _, image, _ in decoded if image is not None]
    ranked = iter(model.top_k(model(np.stack(images)), topk) if images else [])  # (N, topk)
    for path, image, error in decoded:
        if image is None:
            yield FileResult(path, None, error)
        else:
            yield FileResult(path, next(ranked), None)
