"""Timers and summary statistics shared by the report's sections.

Every measurement is wall time from time.perf_counter() around one call, after warm-up calls
that are not recorded (the first of which pays any JIT compilation).
"""
import time

import numpy as np


def time_calls(function, runs, warmup=0):
    """Seconds of `runs` calls of function() after `warmup` unrecorded calls; a list."""
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_interleaved(functions, runs, warmup=1):
    """{name: [seconds]}: each of `functions` ({name: callable}) timed `runs` times, one call
    of each in turn per round, so that slow drift of the machine affects all of them alike."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    seconds = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median(seconds):
    """The median of a list of seconds."""
    return float(np.median(seconds))


def latency_stats(seconds):
    """{runs, min, p50, p90, p99, max, mean} of a list of seconds, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"runs": int(ms.size), "min_ms": float(ms.min()), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(ms.max()),
            "mean_ms": float(ms.mean())}


def gflops(macs, seconds):
    """Achieved GFLOP/s of `macs` multiply-adds (2 flops each) done in `seconds`."""
    return 2.0 * macs / seconds / 1e9
