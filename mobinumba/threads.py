"""Thread count for the kernels, and the lock that serialises entry into them.

Numba's default `workqueue` threading layer aborts the process if two Python threads run
parallel code at once, and numba.set_num_threads() only affects the calling thread. Every
forward pass therefore runs inside `kernel_section()`, which takes a process-wide lock and
applies the thread count chosen with set_threads() to whichever thread is calling.
"""
import contextlib
import os
import threading

import numba

from .errors import check_integer

_lock = threading.RLock()
_threads = None  # None: Numba's default (NUMBA_NUM_THREADS, all cores)


def set_threads(n):
    """Use `n` threads in every kernel from now on (1 <= n <= NUMBA_NUM_THREADS)."""
    global _threads
    check_integer("threads", n, 1, numba.config.NUMBA_NUM_THREADS, error=ValueError,
                  high_name="NUMBA_NUM_THREADS")
    with _lock:
        _threads = n


def available_cores():
    """The number of cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def get_threads():
    """The number of threads kernels use."""
    return numba.config.NUMBA_NUM_THREADS if _threads is None else _threads


@contextlib.contextmanager
def kernel_section():
    """Hold the kernel lock with the chosen thread count applied to this thread."""
    with _lock:
        numba.set_num_threads(get_threads())
        yield
