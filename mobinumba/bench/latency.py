"""Section 4: end-to-end cold start, steady-state latency, throughput and peak memory."""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .timing import latency_stats, median, time_calls

THROUGHPUT_BATCHES = (1, 8, 32)
MEMORY_BATCH = 32
COLDSTART_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coldstart.py")
RUN_SCRIPT = ("import runpy, sys; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")


def cold_start(weights_path, size, batch, threads, workdir):
    """{"empty_cache", "warm_cache"}: a fresh process's import, load and first inference with
    an empty Numba cache (the kernels compile) and again with the cache it left (they load).

    The kernels' machine code goes to a new NUMBA_CACHE_DIR under `workdir`, so neither run
    sees what earlier runs (or the package's own __pycache__) cached. The warm run also
    records peak memory at batch MEMORY_BATCH.
    """
    cache = tempfile.mkdtemp(prefix="numba-cache-", dir=workdir)
    empty = _run_fresh_process(weights_path, size, batch, threads, cache)
    warm = _run_fresh_process(weights_path, size, batch, threads, cache,
                              memory_batch=MEMORY_BATCH)
    return {"empty_cache": empty, "warm_cache": warm}


def _run_fresh_process(weights_path, size, batch, threads, cache, memory_batch=0):
    environment = dict(os.environ, NUMBA_CACHE_DIR=cache)
    # runpy.run_path executes the script without importing its package and without putting
    # its directory (which holds modules named like top-level ones) on sys.path.
    command = [sys.executable, "-c", RUN_SCRIPT, COLDSTART_SCRIPT, os.fspath(weights_path),
               "--size", str(size), "--batch", str(batch), "--threads", str(threads)]
    if memory_batch:
        command += ["--memory-batch", str(memory_batch)]
    start = time.perf_counter()
    finished = subprocess.run(command, env=environment, capture_output=True, text=True,
                              check=False)
    wall = time.perf_counter() - start
    if finished.returncode != 0:
        tail = finished.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the cold-start process failed (exit {finished.returncode}): "
                           f"{tail[0]}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


def steady_state(model, x, runs, warmup):
    """Latency statistics (ms) of model(x) over `runs` calls after `warmup` calls."""
    return latency_stats(time_calls(lambda: model(x), runs, warmup))


def throughput(model, size, runs, warmup, seed=0):
    """[{batch, median_ms, images_per_s}] for each of THROUGHPUT_BATCHES."""
    rng = np.random.default_rng(seed)
    rows = []
    for batch in THROUGHPUT_BATCHES:
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        seconds = median(time_calls(lambda: model(x), runs, warmup))
        rows.append({"batch": batch, "runs": runs, "median_ms": seconds * 1e3,
                     "images_per_s": batch / seconds})
    return rows
