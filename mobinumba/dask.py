"""predict_files and embed_files on a dask.distributed cluster (the `[dask]` extra).

    from distributed import Client
    from mobinumba.dask import predict_dataframe, iter_results

    client = Client("tcp://scheduler:8786")
    frame = predict_dataframe(client, paths, weights="model.h5")   # a lazy Dask DataFrame
    frame.to_parquet("results/")                                     # one file per partition

The paths are cut into partitions of `partition_size`; one task classifies one partition with
predict_files() (or embeds it with embed_files(): iter_embeddings) and returns its rows. Nothing else travels with a task: the model reaches each
worker once, through ModelPlugin, a worker plugin that carries the weight file's bytes, writes
them into the worker's local directory, loads the model and runs one warm-up pass (which
compiles or loads the Numba kernels) before the worker's first task; it also undoes a malloc
setting of Dask's that made decoding 3x slower (serve_large_arrays_from_the_heap). Dask
re-runs the plugin on a worker that replaces a dead one.

Threads: a worker's kernels use the plugin's `threads` if given, else the worker's
`mobinumba-threads` resource if it declares one (`dask worker --nthreads 1 --resources
"mobinumba-threads=4"`), else its `nthreads`. Forward passes within a process take turns
(threads.kernel_section) while the worker's other task threads decode, so a worker with one
task thread and kernel threads = its share of the cores never runs more threads than cores
(what `predict --dask-local N` starts: N workers x 1 task thread x cores / N kernel threads).
Within a task, images are decoded in the task's own thread.

A task is a pure function of its paths (its key is a hash of them), so when a worker dies Dask
recomputes the partitions it was running or holding, and every path still gives exactly one
row: iter_results() yields each partition once, predict_dataframe() has one partition per
slice of paths.

This module is named like the `dask` package; it imports it absolutely, which Python 3 always
does.
"""
import asyncio
import ctypes
import hashlib
import os
import threading
from collections import deque
from itertools import islice

import numpy as np

try:
    import pandas as pd
    from distributed import as_completed, get_worker
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as error:
    raise ImportError(f"mobinumba.dask needs {error.name or 'Dask and pandas'}: pip install "
                      f"'mobinumba[dask]'", name=error.name) from error

from .atomic import write_atomically
from .errors import InputError, check_integer
from .model import PREDICT_BATCH, Model, load
from .results import columns, result_row
from .stream import (DEFAULT_PARTITION_SIZE, MAX_PARTITION_SIZE, Features, TopK,
                     check_options, stream_files)
from .threads import set_threads

# iter_results() keeps at most this many partitions per worker thread submitted at once.
PARTITIONS_PER_THREAD = 4
# The worker resource that sets a worker's kernel threads (see above).
THREADS_RESOURCE = "mobinumba-threads"
# glibc's mallopt() parameter number for the mmap threshold, and the value set on workers.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2 ** 20


class ModelPlugin(WorkerPlugin):
    """A weight file shipped to every worker once and kept loaded there, one model per process.

    weights: a path to a mobinumba .h5 file (read here, on the client), a Model loaded from
    one, or None for the shipped model. threads: Numba threads on each worker (default: the
    worker's THREADS_RESOURCE, else its nthreads).
    """

    idempotent = True  # registering the same file again keeps the loaded model

    def __init__(self, weights=None, threads=None):
        model = weights if isinstance(weights, Model) else load(weights)  # validates the file
        with open(model.path, "rb") as file:
            self.data = file.read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.file_name = os.path.basename(model.path)
        self.threads = threads
        self.name = f"mobinumba-model-{self.sha256[:16]}"
        self.num_classes = model.num_classes
        self._model = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_model"], state["_lock"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    async def setup(self, worker):
        """Save the file under the worker's local directory, load it and warm the kernels up."""
        await asyncio.get_running_loop().run_in_executor(None, self.model, worker)

    def model(self, worker=None):
        """The Model on this worker (loaded at setup, or here by a task that came first)."""
        with self._lock:
            if self._model is None:
                self._model = self._load(worker or get_worker())
            return self._model

    def _load(self, worker):
        path = os.path.join(worker.local_directory, f"{self.sha256[:16]}-{self.file_name}")
        if not os.path.exists(path):  # overwrite: a racing worker writes the same bytes
            write_atomically(path, self.data, overwrite=True)
        self.data = None  # the worker keeps the model, not a second copy of the file
        serve_large_arrays_from_the_heap()
        set_threads(kernel_threads(worker, self.threads))
        model = load(path)
        size = model.info.input_size
        model(np.zeros((1, 3, size, size), np.float32))  # compile / load cached kernels now
        return model


def serve_large_arrays_from_the_heap():
    """Raise glibc's mmap threshold to 32 MiB in this process; False where there is no glibc.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_ set, and setting it freezes glibc's
    otherwise adaptive mmap threshold at 128 KiB: every array of a decoded image is then a
    fresh mmap, page faults and a munmap, and preprocessing a 500x375 JPEG took 12.5 ms
    instead of 3.9 ms here. 32 MiB is the ceiling glibc's own adaptive threshold would reach.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def kernel_threads(worker, threads=None):
    """Numba threads for a worker: `threads`, else its THREADS_RESOURCE, else its nthreads;
    at most NUMBA_NUM_THREADS."""
    import numba

    chosen = threads or worker.state.total_resources.get(THREADS_RESOURCE) or \
        worker.state.nthreads
    return max(1, min(int(chosen), numba.config.NUMBA_NUM_THREADS))


def predict_partition(paths, plugin_name, batch_size, topk, base_directory):
    """FileResults for one partition of paths, on a worker holding the named ModelPlugin.

    Relative paths are opened under base_directory; the results carry the paths as given.
    """
    return stream_partition(paths, plugin_name, TopK(topk), batch_size, base_directory)


def stream_partition(paths, plugin_name, compute, batch_size, base_directory):
    """stream_files() results (compute: stream.TopK or stream.Features) for one partition of
    paths, on a worker holding the named ModelPlugin; paths as for predict_partition()."""
    plugin = get_worker().plugins.get(plugin_name)
    if plugin is None:
        raise RuntimeError(f"worker has no {plugin_name} plugin; register ModelPlugin first")
    opened = [os.path.join(base_directory, path) for path in paths]
    results = stream_files(opened, compute, batch_size, weights=plugin.model(), workers=0)
    return [_as_given(result, path) for path, result in zip(paths, results)]


def _as_given(result, path):
    """A FileResult of a resolved path with the path as the caller gave it, in its error too."""
    error = result.error
    if error is not None and path != result.path:
        error = error.replace(result.path, path)
    return result._replace(path=path, error=error)


def _predict_partition_frame(paths, plugin_name, batch_size, topk, base_directory):
    return results_frame(predict_partition(paths, plugin_name, batch_size, topk,
                                           base_directory), topk)


def results_frame(results, topk):
    """A pandas DataFrame over columns(topk) from FileResults; typed, nullable columns."""
    rows = [result_row(result, topk) for result in results]
    frame = {}
    for name in columns(topk):
        dtype = ("Float64" if name.startswith("probability_") else
                 "Int64" if name.startswith("index_") else "string")
        frame[name] = pd.array([row[name] for row in rows], dtype=dtype)
    return pd.DataFrame(frame)


def register_model(client, weights=None, threads=None):
    """Send the model to every worker of `client` (now and later ones) and load it there;
    returns the plugin, which predict_dataframe() and iter_results() also take as `weights`.

    weights: None (the shipped model), a path to a .h5 file, or a Model loaded from one.
    """
    plugin = ModelPlugin(weights, threads)
    client.register_plugin(plugin, name=plugin.name)
    return plugin


def _registered(client, weights, threads):
    """(plugin, whether this call registered it) for a `weights` argument."""
    if isinstance(weights, ModelPlugin):
        return weights, False
    plugin = ModelPlugin(weights, threads)
    existed = client.run_on_scheduler(_has_worker_plugin, name=plugin.name)
    client.register_plugin(plugin, name=plugin.name)
    return plugin, not existed


def _has_worker_plugin(name, dask_scheduler):
    return name in dask_scheduler.worker_plugins


def predict_dataframe(client, paths, weights=None, batch_size=PREDICT_BATCH, topk=5,
                      partition_size=DEFAULT_PARTITION_SIZE, threads=None, base_directory=None):
    """A lazy Dask DataFrame of results (columns as in results.columns(topk)), one partition per
    `partition_size` paths, in path order.

    The workers must see the paths: absolute paths on a shared filesystem, or relative ones
    under base_directory (default: this process's working directory) as the workers see it.
    weights: None, a .h5 path or a Model (registered on the workers now, and left registered
    for when the frame is computed), or a plugin from register_model(). threads: Numba threads
    per worker (default: each worker's nthreads).
    """
    import dask.dataframe as dd

    plugin, _ = _registered(client, weights, threads)
    _check(plugin, TopK(topk), batch_size, partition_size)
    chunks = list(_chunks(paths, partition_size))
    if not chunks:
        raise InputError("no image paths given")
    base_directory = _base(base_directory)
    return dd.from_map(_predict_partition_frame, chunks,
                       args=[plugin.name, batch_size, topk, base_directory],
                       meta=results_frame([], topk), label="mobinumba-predict",
                       enforce_metadata=False)


def iter_results(client, paths, weights=None, batch_size=PREDICT_BATCH, topk=5,
                 partition_size=DEFAULT_PARTITION_SIZE, threads=None, base_directory=None):
    """Yield a list of FileResults per partition of paths, in the order partitions finish.

    Paths are read lazily; at most PARTITIONS_PER_THREAD partitions per worker thread are
    submitted at a time. A partition lost with a worker is recomputed by Dask and still
    yielded exactly once. Other arguments as for predict_dataframe(); a model that was not on
    the cluster before is removed from it when this finishes.
    """
    return _iter_partitions(client, paths, weights, TopK(topk), batch_size, partition_size,
                            threads, base_directory, in_order=False)


def iter_embeddings(client, paths, weights=None, batch_size=PREDICT_BATCH, l2_normalize=False,
                    partition_size=DEFAULT_PARTITION_SIZE, threads=None, base_directory=None):
    """Yield a list of FileEmbeddings (embed_files() on the workers) per partition of paths,
    in path order: a partition that finishes early waits, within the window of submitted
    partitions, for those before it. Otherwise as iter_results()."""
    return _iter_partitions(client, paths, weights, Features(l2_normalize), batch_size,
                            partition_size, threads, base_directory, in_order=True)


def _iter_partitions(client, paths, weights, compute, batch_size, partition_size, threads,
                     base_directory, in_order):
    """iter_results() and iter_embeddings(): stream_partition tasks in a bounded window,
    yielded as they finish or, in_order, in path order."""
    plugin, registered_here = _registered(client, weights, threads)
    _check(plugin, compute, batch_size, partition_size)
    chunks = _chunks(paths, partition_size)
    window = PARTITIONS_PER_THREAD * max(1, sum(client.nthreads().values()))
    base_directory = _base(base_directory)

    def submit(chunk):
        token = _token(chunk, plugin, compute, batch_size, base_directory)
        return client.submit(stream_partition, chunk, plugin.name, compute, batch_size,
                             base_directory, key=f"mobinumba-{compute.task_name}-{token}")

    try:
        submitted = [submit(chunk) for chunk in islice(chunks, window)]
        if in_order:
            running = deque(submitted)
            finished, add = _popped(running), running.append
        else:  # as_completed also yields the futures added while it is iterated
            running = as_completed(submitted)
            finished, add = running, running.add
        for future in finished:
            results = future.result()
            future.release()
            for chunk in islice(chunks, 1):
                add(submit(chunk))
            yield results
    finally:
        if registered_here:
            client.unregister_worker_plugin(plugin.name)


def _check(plugin, compute, batch_size, partition_size):
    check_integer("partition_size", partition_size, 1, MAX_PARTITION_SIZE)
    check_options(batch_size)
    compute.check(plugin.num_classes)


def _popped(queue):
    """The items of a deque, popped from the left until it is empty (it may grow meanwhile)."""
    while queue:
        yield queue.popleft()


def _chunks(paths, size):
    """Lists of at most `size` path strings from any iterable, lazily."""
    paths = (os.fspath(path) for path in paths)
    while chunk := list(islice(paths, size)):
        yield chunk


def _base(base_directory):
    return os.getcwd() if base_directory is None else os.fspath(base_directory)


def _token(chunk, plugin, compute, batch_size, base_directory):
    """A task key suffix that is a pure function of everything the task computes from."""
    digest = hashlib.sha256(f"{plugin.sha256}\0{batch_size}\0{compute!r}\0{base_directory}"
                            .encode("utf-8", "surrogateescape"))
    for path in chunk:
        digest.update(b"\0" + path.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]
