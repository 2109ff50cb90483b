"""`mobinumba predict --out FILE` and `mobinumba embed --out FILE`: stream many images into a
results file, here or on Dask.

    paths (expanded by inputs.py) ─ minus the paths already in FILE with --resume
      ├─ here:  predict_files / embed_files (decode threads + model), written batch by batch
      └─ Dask:  mobinumba.dask.iter_results / iter_embeddings (one task per partition),
                written partition by partition: predict's as they finish (completion order),
                embed's in path order
    ──> results.py / results_npy.py writer (whole rows, or temp file + rename) ──> progress
        bar on stderr

Unreadable images become rows with an error, a line on stderr, and exit status 1 at the end.
"""
import contextlib
import sys

import numba

from .errors import InputError, MobinumbaError
from .model import PREDICT_BATCH
from .progress import Progress
from .results import FORMATS, check_results_path, open_embeddings, open_results
from .stream import DEFAULT_PARTITION_SIZE, default_decode_threads, embed_files, predict_files
from .threads import available_cores, get_threads, set_threads

EXIT_FAILED_IMAGES = 1


def check_file_options(out, resume=False, force=False, decode_threads=None, dask_scheduler=None,
                       dask_local=None, partition_size=None, formats=FORMATS):
    """Raise InputError unless predict_to_file() (or embed_to_file(), with
    formats=EMBEDDING_FORMATS) can take these options (before any model is loaded or cluster
    started): a writable results path, Dask options only with Dask."""
    check_results_path(out, resume, force, formats)
    on_dask = dask_scheduler or dask_local
    if on_dask:
        _require_dask()
    if partition_size is not None and not on_dask:
        raise InputError("--partition-size needs --dask-scheduler or --dask-local")
    if decode_threads is not None and on_dask:
        raise InputError("--decode-threads is for runs on this machine; on Dask each task "
                         "decodes in its own thread")


def predict_to_file(paths, out, model, topk=5, batch_size=PREDICT_BATCH, resume=False,
                    force=False, threads=None, decode_threads=None, dask_scheduler=None,
                    dask_local=None, partition_size=None):
    """Classify `paths` with a loaded `model` into the results file `out`; returns the exit
    status (1 if any image failed).

    Options as on the command line (check them first with check_file_options(); topk must be
    <= model.num_classes): threads: kernel threads (None: the cores the decode threads leave
    on this machine; each worker's share on Dask); decode_threads: None for
    default_decode_threads(); dask_scheduler (an address) or dask_local (a worker count) run
    it on Dask in partitions of partition_size (None: DEFAULT_PARTITION_SIZE).
    """
    def here(todo, workers):
        return predict_files(todo, batch_size, topk, weights=model, workers=workers)

    def on_dask(client, todo):
        from .dask import iter_results
        return iter_results(client, todo, model, batch_size=batch_size, topk=topk,
                            partition_size=partition_size or DEFAULT_PARTITION_SIZE,
                            threads=threads)

    return _stream_to_file(paths, out, lambda: open_results(out, topk, resume, force), here,
                           on_dask, "mobinumba predict", f"the error column of {out}",
                           batch_size, threads, decode_threads, dask_scheduler, dask_local)


def embed_to_file(paths, out, model, batch_size=PREDICT_BATCH, l2_normalize=False,
                  resume=False, force=False, threads=None, decode_threads=None,
                  dask_scheduler=None, dask_local=None, partition_size=None):
    """Embed `paths` with a loaded `model` into `out` (.parquet, or .npy with its sidecar, in
    input order, also on Dask); returns the exit status (1 if any image failed). Options as
    for predict_to_file(); l2_normalize scales each embedding to unit length."""
    from .results_npy import sidecar_path

    channels = model.feature_channels

    def here(todo, workers):
        return embed_files(todo, batch_size, weights=model, workers=workers,
                           l2_normalize=l2_normalize)

    def on_dask(client, todo):
        from .dask import iter_embeddings
        return iter_embeddings(client, todo, model, batch_size=batch_size,
                               l2_normalize=l2_normalize,
                               partition_size=partition_size or DEFAULT_PARTITION_SIZE,
                               threads=threads)

    where = (f"the errors in {sidecar_path(out)}" if str(out).lower().endswith(".npy")
             else f"the error column of {out}")
    return _stream_to_file(paths, out, lambda: open_embeddings(out, channels, resume, force),
                           here, on_dask, "mobinumba embed", where, batch_size, threads,
                           decode_threads, dask_scheduler, dask_local)


def _stream_to_file(paths, out, open_output, here, on_dask, description, errors_where,
                    batch_size, threads, decode_threads, dask_scheduler, dask_local):
    """The run behind predict_to_file() and embed_to_file(): open_output() gives the writer,
    here(paths, workers) the results on this machine, on_dask(client, paths) lists of them
    per partition on Dask; returns the exit status."""
    engine = (_on_dask(on_dask, dask_scheduler, dask_local) if dask_scheduler or dask_local
              else _here(here, batch_size, threads, decode_threads))
    with engine as compute, open_output() as results:
        todo = [path for path in paths if path not in results.done]
        skipped = len(paths) - len(todo)
        if not todo:
            print(f"nothing to do: all {len(paths)} images are already in {out}")
            return 0
        if skipped:
            print(f"resuming {out}: {skipped} of {len(paths)} images are already there",
                  file=sys.stderr)
        failures = 0
        with Progress(len(todo), description) as progress:
            for rows in compute(todo):
                results.write(rows)
                for row in rows:
                    if row.error is not None:
                        failures += 1
                        progress.write(f"mobinumba: error: {row.error}")
                progress.update(len(rows))
            rate = progress.rate()
    print(f"wrote {len(todo)} rows to {out} ({rate:.1f} images/s)"
          + (f"; {skipped} were already there" if skipped else ""))
    if failures:
        print(f"mobinumba: error: {failures} of {len(todo)} images could not be read; see "
              f"{errors_where}", file=sys.stderr)
        return EXIT_FAILED_IMAGES
    return 0


@contextlib.contextmanager
def _here(run, batch_size, threads, decode_threads):
    """A function paths -> iterator of result lists, a batch at a time, on this machine, from
    run(paths, decode threads).

    Threads: `decode_threads` decode (default: a third of the cores) and, unless `threads`
    was given, the kernels get the other cores for the run, so that the process runs one
    thread per core (docs/scale.md)."""
    decode = default_decode_threads() if decode_threads is None else decode_threads
    previous = get_threads()
    if threads is None:  # one thread per core: the kernels get the cores left
        set_threads(max(1, min(available_cores() - decode, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield lambda paths: _batched(run(paths, decode), batch_size)
    finally:
        set_threads(previous)


@contextlib.contextmanager
def _on_dask(run, dask_scheduler, dask_local):
    """A function paths -> iterator of result lists, a partition at a time, from
    run(client, paths) on Dask (with the client connected, or the local cluster started, for
    the run)."""
    with _dask_client(dask_scheduler, dask_local) as client:
        yield lambda paths: _dask_batches(run(client, paths))


def _dask_batches(partitions):
    """The partitions' result lists, with Dask giving up on a task turned into a one-line
    error."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    try:
        yield from partitions
    except (KilledWorker, CancelledError) as error:
        raise MobinumbaError(f"the Dask cluster gave up ({type(error).__name__}: "
                             f"{' '.join(str(error).split())}); the rows written so far are "
                             f"kept and --resume continues from them") from None


def _batched(items, size):
    """Lists of `size` consecutive items (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _require_dask():
    """Raise InputError naming the missing package unless everything a Dask run imports
    (distributed, and pandas for mobinumba.dask's rows) is installed."""
    try:
        import distributed  # noqa: F401
        import pandas  # noqa: F401
        from . import dask  # noqa: F401
    except ImportError as error:
        missing = error.name or "a package"
        raise InputError(f"--dask-scheduler / --dask-local need Dask: pip install "
                         f"'mobinumba[dask]' ({missing} is not installed)") from None


def _dask_client(scheduler, local_workers):
    """A distributed.Client on `scheduler`, or on a new LocalCluster of `local_workers`."""
    _require_dask()
    from distributed import Client

    if local_workers:
        cluster = local_cluster(local_workers)
        return _ClusterClient(Client(cluster), cluster)
    try:
        return _ClusterClient(Client(scheduler, timeout="10s"), None)
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(f"cannot connect to the Dask scheduler at {scheduler}: "
                         f"{' '.join(str(error).split())}") from None


def local_cluster(workers):
    """A LocalCluster of `workers` processes on 127.0.0.1 that never runs more threads than
    cores: each worker runs one task at a time, its kernels with cores / workers threads."""
    from distributed import LocalCluster

    from .dask import THREADS_RESOURCE

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address=":0",
                        resources={THREADS_RESOURCE: max(1, available_cores() // workers)})


class _ClusterClient:
    """A Client (and the LocalCluster it owns, if any), closed together."""

    def __init__(self, client, cluster):
        self.client = client
        self.cluster = cluster

    def __enter__(self):
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
