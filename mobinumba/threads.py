"""Thread count for the kernels, and the lock that serialises entry into them.

Numba's default `workqueue` threading layer aborts the process if two Python threads run
parallel code at once, and numba.set_num_threads() only affects the calling thread. Every
forward pass therefore runs inside `kernel_section()`, which takes a process-wide lock and
applies the thread count chosen with set_threads() to whichever thread is calling.

It also sets how long GNU OpenMP's idle threads spin before they sleep (start_threading_layer,
called once when mobinumba is imported).
"""
import contextlib
import os
import threading

import numba

from .errors import check_integer

# Spins (PAUSE loops, ~20 ns each on the EPYC) an idle OpenMP thread makes before it sleeps.
# Why: every prange is a parallel region ending in a barrier, 29 of them per forward pass.
# libgomp's default (300000 spins, some milliseconds) keeps a waiting thread on its core; when
# other processes compete for the cores, that spinning takes the time slice the descheduled
# thread (or the Python thread between kernels) needs, and calls stall for whole slices.
# bench/busy_machine.py, 2-core EPYC, 2 threads, batch 1, machine shared (load ~3.3),
# p50 / p90 ms, 0 and 2 busy loops (see docs/performance.md):
#   default 300000: 4.47 / 220.0 and 13.2 / 232.1    30000: 4.07 / 55.3 and 12.0 / 66.5
#   3000: 4.16 / 12.2 and 12.2 / 31.8                 1000: 4.31 / 9.2 and 13.0 / 24.0
#   OMP_WAIT_POLICY=PASSIVE (0 spins): 6.77 / 7.6 and 11.4 / 16.0 (each region wakes a sleeper)
# 1000 spins (~20-40 us here) bridged the gap between two kernel calls, but not the waits
# of a worker that finishes its share first: after 0.3 s idle, calls 3 to ~15 slept and woke
# around every region, 4.7-5.1 ms instead of 1.7 (int8) and 8.4-9.9 instead of 4.1
# (float32), until (a guess) the hypervisor's halt polling adapted (bench/after_idle.py).
# 2000 spins: no such calls, and the same tail under load (2026-12-02, p50 / p90 ms, 0 and
# 2 busy loops, float32: 1000 4.15 / 8.23 and 12.84 / 18.25; 2000 4.01 / 4.24 and
# 11.59 / 18.23; int8: 1000 1.63 / 1.91 and 3.91 / 9.38; 2000 1.48 / 1.70 and 3.92 / 9.75;
# 10000 and 30000 spins doubled the busy p90 again).
# On an Intel Xeon VM (2 cores, KVM; 2026-12-02) 2000 spins were too few: after an idle
# pause int8 calls 2-12 took 3.9-4.4 ms (steady 1.3), the busy int8 p90 9.29 ms and float32
# 10.10 quiet / 24.42 busy; with 10000 spins 1.2-1.7 ms after the pause, busy int8 p90 5.34,
# float32 7.85 / 20.50 (bench/after_idle.py, bench/busy_machine.py; docs/performance.md). So
# the default depends on the CPU's vendor: 10000 on Intel, 2000 elsewhere (AMD measured).
_SPINS_BY_VENDOR = {"GenuineIntel": "10000"}


def _cpu_vendor():
    """/proc/cpuinfo's vendor_id ('GenuineIntel', 'AuthenticAMD'), or '' where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


GOMP_SPINCOUNT = _SPINS_BY_VENDOR.get(_cpu_vendor(), "2000")

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


def start_threading_layer():
    """Load Numba's threading layer now, with GOMP_SPINCOUNT set to GOMP_SPINCOUNT while
    libgomp reads its environment, unless the user set OMP_WAIT_POLICY or GOMP_SPINCOUNT
    (theirs wins). os.environ is restored afterwards, so child processes (other OpenMP
    programs, PyTorch in the bench) see the user's environment, not ours.

    Has no effect when libgomp was loaded before (it reads its environment once) or when the
    layer is not `omp`.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        numba.get_num_threads()  # loads the layer; the same moment for every environment
        return
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    try:
        numba.get_num_threads()  # loads the threading layer, and libgomp with it
    finally:
        del os.environ["GOMP_SPINCOUNT"]


@contextlib.contextmanager
def kernel_section():
    """Hold the kernel lock with the chosen thread count applied to this thread."""
    with _lock:
        numba.set_num_threads(get_threads())
        yield
