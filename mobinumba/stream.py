"""predict_files and embed_files: classify or embed any number of image files with bounded
memory.

Both are stream_files() with a different per-batch computation (TopK: the top-k classes;
Features: the pooled features). Every prediction and embedding goes through it:
Model.predict and Model.embed (inline decoding, raising on a bad image), `mobinumba predict`
(inline decoding, printed), `predict --out` and `embed` (decode threads, into a results file,
see batch.py) and each task of a Dask run (mobinumba.dask).

The pipeline is a small pool of decoding threads feeding the model through a bounded window of
futures, in input order:

    paths ──> decode pool (`workers` threads: open, resize, normalise) ──> window of at most
    2 * batch_size decoded images ──> batches of batch_size ──> Model (Numba, all its threads)
    ──> a result per path (FileResult, FileEmbedding), yielded in input order

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


class FileEmbedding(NamedTuple):
    """The outcome for one image file: its pooled features, or why it could not be read."""

    path: str
    embedding: Optional[np.ndarray]  # (C,) float32; None when error is set
    error: Optional[str]             # one line naming the file; None on success


class TopK:
    """What predict computes per batch: the top-k classes of each image (FileResults)."""

    result_type = FileResult
    task_name = "predict"  # in Dask task keys

    def __init__(self, topk=5):
        self.topk = topk

    def check(self, num_classes):
        """Raise InputError unless the model has a classifier (num_classes > 0) and topk is
        in 1..num_classes."""
        if num_classes == 0:
            raise InputError(no_classifier_message("the model"))
        check_integer("topk", self.topk, 1, num_classes)

    def __call__(self, model, images):
        """Per image of images (N, 3, S, S): its list of topk Predictions."""
        return model.top_k(model(images), self.topk)

    def __repr__(self):  # part of a Dask task's key (mobinumba.dask)
        return f"TopK({self.topk})"


class Features:
    """What embed computes per batch: each image's pooled features (FileEmbeddings), scaled to
    unit L2 norm with l2_normalize (an all-zero vector, possible after ReLU, stays zero)."""

    result_type = FileEmbedding
    task_name = "embed"  # in Dask task keys

    def __init__(self, l2_normalize=False):
        self.l2_normalize = l2_normalize

    def check(self, num_classes):
        """Nothing to check: every model has pooled features."""

    def __call__(self, model, images):
        """Per image of images (N, 3, S, S): its (C,) float32 features."""
        features = model.features(images)  # (N, C)
        if self.l2_normalize:
            norms = np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)
            features = (features / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return list(features)

    def __repr__(self):  # part of a Dask task's key (mobinumba.dask)
        return f"Features(l2_normalize={self.l2_normalize})"


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
    return stream_files(paths, TopK(topk), batch_size, weights, workers)


def embed_files(paths, batch_size=PREDICT_BATCH, weights=None, workers=None,
                l2_normalize=False):
    """Yield a FileEmbedding for each path, in order, lazily and with bounded memory: the
    image's pooled features (C,) float32, Model.features of its preprocessed image, scaled to
    unit length with l2_normalize. Arguments and errors as for predict_files()."""
    return stream_files(paths, Features(l2_normalize), batch_size, weights, workers)


def stream_files(paths, compute, batch_size=PREDICT_BATCH, weights=None, workers=None):
    """Yield compute.result_type(path, value, error) for each path, in order, where `compute`
    (TopK or Features) turns a batch of preprocessed images into one value per image.
    Other arguments as for predict_files()."""
    workers = default_decode_threads() if workers is None else workers
    model = weights if isinstance(weights, Model) else load(weights)
    check_options(batch_size, workers)
    compute.check(model.num_classes)
    batch_size = model.images_per_batch(batch_size)  # fewer when one image is very large
    if workers == 0:
        batches = _decode_inline(model, iter(paths), batch_size)
    else:
        batches = _decode_pipelined(model, iter(paths), batch_size, workers)
    return _run_batches(model, batches, compute)


def default_decode_threads():
    """A third of the cores, at least one: decoding and resizing a 500x375 JPEG took about
    4 ms here and a forward pass about 7 ms of one core, so a third of the cores decoding
    keeps the other two thirds busy with the model (docs/scale.md)."""
    return max(1, available_cores() // 3)


def check_options(batch_size, workers=0):
    """Raise InputError unless batch_size and workers are usable."""
    check_integer("batch_size", batch_size, 1, MAX_BATCH_SIZE)
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


def _decode_inline(model, paths, batch_size):
    """Lists of decoded triples, batch_size at a time, without threads: decode a batch, let
    the consumer run it, repeat."""
    while True:
        decoded = [_decode(model, path) for _, path in zip(range(batch_size), paths)]
        if not decoded:
            return
        yield decoded


def _decode_pipelined(model, paths, batch_size, workers):
    """Lists of decoded triples, decoded in `workers` threads at most 2 * batch_size images
    ahead of the consumer."""
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
                yield [window.popleft().result() for _ in range(count)]
        finally:  # the consumer stopped early or something raised: drop what is queued
            for future in window:
                future.cancel()


def _run_batches(model, batches, compute):
    """compute's results for lists of decoded (path, image or None, error or None) triples,
    in order."""
    try:
        for decoded in batches:
            images = [image for _, image, _ in decoded if image is not None]
            values = iter(compute(model, np.stack(images)) if images else [])
            for path, image, error in decoded:
                if image is None:
                    yield compute.result_type(path, None, error)
                else:
                    yield compute.result_type(path, next(values), None)
    finally:  # the consumer stopped early: stop the decode threads now, not when collected
        batches.close()
