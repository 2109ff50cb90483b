"""`mobinumba predict --out FILE`: stream many images into a results file, here or on Dask.

    paths (expanded by inputs.py) ─ minus the paths already in FILE with --resume
      ├─ here:  predict_files (decode threads + model), written batch by batch
      └─ Dask:  mobinumba.dask.iter_results (one task per partition), written partition by
                partition as they finish (so rows are in completion order, not path order)
    ──> results.py writer (whole rows, or temp file + rename) ──> progress bar on stderr

Unreadable images become rows with an error, a line on stderr, and exit status 1 at the end.
"""
import contextlib
import sys

import numba

from .errors import InputError, MobinumbaError
from .model import load
from .progress import Progress
from .results import check_results_path, open_results
from .stream import DEFAULT_PARTITION_SIZE, default_decode_threads, predict_files
from .threads import available_cores, get_threads, set_threads

EXIT_FAILED_IMAGES = 1


def predict_to_file(args, paths):
    """Classify `paths` into args.out; returns the exit status (1 if any image failed)."""
    check_results_path(args.out, args.resume, args.force)
    on_dask = args.dask_scheduler or args.dask_local
    if args.partition_size is not None and not on_dask:
        raise InputError("--partition-size needs --dask-scheduler or --dask-local")
    if args.decode_threads is not None and on_dask:
        raise InputError("--decode-threads is for runs on this machine; on Dask each task "
                         "decodes in its own thread")
    model = load(args.weights)
    if args.topk > model.num_classes:
        raise InputError(f"--topk {args.topk} exceeds the model's {model.num_classes} classes")
    with _engine(args, model) as classify, \
            open_results(args.out, args.topk, resume=args.resume, force=args.force) as out:
        todo = [path for path in paths if path not in out.done]
        skipped = len(paths) - len(todo)
        if not todo:
            print(f"nothing to do: all {len(paths)} images are already in {args.out}")
            return 0
        if skipped:
            print(f"resuming {args.out}: {skipped} of {len(paths)} images are already there",
                  file=sys.stderr)
        failures = 0
        with Progress(len(todo)) as progress:
            for results in classify(todo):
                out.write(results)
                for result in results:
                    if result.error is not None:
                        failures += 1
                        progress.write(f"mobinumba: error: {result.error}")
                progress.update(len(results))
            rate = progress.rate()
    print(f"wrote {len(todo)} rows to {args.out} ({rate:.1f} images/s)"
          + (f"; {skipped} were already there" if skipped else ""))
    if failures:
        print(f"mobinumba: error: {failures} of {len(todo)} images could not be read; see the "
              f"error column of {args.out}", file=sys.stderr)
        return EXIT_FAILED_IMAGES
    return 0


@contextlib.contextmanager
def _engine(args, model):
    """A function paths -> iterator of FileResult lists: a batch at a time here, a partition at
    a time on Dask (with the client connected, or the local cluster started, for the run)."""
    if args.dask_scheduler or args.dask_local:
        with _dask_client(args) as client:
            yield lambda paths: _dask_batches(client, paths, model, args)
    else:
        decode = (default_decode_threads() if args.decode_threads is None
                  else args.decode_threads)
        previous = get_threads()
        if args.threads is None:  # one thread per core: the kernels get the cores left
            set_threads(max(1, min(available_cores() - decode, numba.config.NUMBA_NUM_THREADS)))
        try:
            yield lambda paths: _batched(predict_files(paths, args.batch_size, args.topk,
                                                       weights=model, workers=decode),
                                         args.batch_size)
        finally:
            set_threads(previous)


def _dask_batches(client, paths, model, args):
    """iter_results(), with Dask giving up on a task turned into a one-line error."""
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    from .dask import iter_results

    try:
        yield from iter_results(client, paths, model, batch_size=args.batch_size,
                                topk=args.topk,
                                partition_size=args.partition_size or DEFAULT_PARTITION_SIZE,
                                threads=args.threads)
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


def _dask_client(args):
    """A distributed.Client on args.dask_scheduler, or on a new LocalCluster of N workers."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--dask-scheduler / --dask-local need Dask: pip install "
                         "'mobinumba[dask]'") from None
    if args.dask_local:
        cluster = local_cluster(args.dask_local)
        return _ClusterClient(Client(cluster), cluster)
    try:
        return _ClusterClient(Client(args.dask_scheduler, timeout="10s"), None)
    except (OSError, TimeoutError, ValueError) as error:
        raise InputError(f"cannot connect to the Dask scheduler at {args.dask_scheduler}: "
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
