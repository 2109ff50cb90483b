"""Section 1: the machine and the software the measurements ran on."""
import datetime
import os
import platform
import sys
from importlib import metadata

import numba
import numpy as np

from .. import __version__
from ..kernels.targets import compile_target, tiles_for

# CPU flags that decide which vector instructions the kernels and the peers can use.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16")
PACKAGES = ("numpy", "numba", "llvmlite", "h5py", "torch", "onnxruntime", "onnx")


def load_average():
    """The 1-minute system load average, or -1.0 where the OS does not report one: on a
    shared machine it tells the reader how busy the cores were while we measured."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return -1.0


def collect_environment(threads, load_at_start):
    """A dict describing CPU, threads, Numba's threading layer, BLAS, package versions and
    the system load at the start (`load_at_start`, from load_average()) and end of the run.

    Call it after a parallel Numba kernel has run: the threading layer is chosen on the first
    parallel call.
    """
    cpu_model, flags = _cpu_info()
    target = compile_target()
    tiles = tiles_for(target)
    return {
        "load_average_start": load_at_start,
        "load_average_end": load_average(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "llvm_cpu_name": target.cpu,
        # What the kernels were compiled for and the register tiles chosen for it
        # (kernels/targets.py), e.g. "znver4 (x86_64, AVX-512: 512-bit x 32)", "6x64".
        "kernel_target": str(target),
        "kernel_target_note": target.note,
        "kernel_tiles": {"pointwise": str(tiles.pointwise), "stem": str(tiles.stem)},
        "logical_cpus": os.cpu_count() or 0,
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else (os.cpu_count() or 0),
        "threads_used": threads,
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": _threading_layer(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "mobinumba": __version__,
        "versions": {name: _version(name) for name in PACKAGES},
        "blas": _blas_info(),
        "environment_variables": {name: os.environ[name] for name in sorted(os.environ)
                                  if name.startswith(("NUMBA_", "OPENBLAS_", "OMP_", "MKL_"))},
        "executable": sys.executable,
    }


def _cpu_info():
    """(model name, set of flags) from /proc/cpuinfo, or platform's guesses elsewhere."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                if model and flags and key == "":
                    break
    except OSError:
        pass
    return model, flags


def _threading_layer():
    return numba.threading_layer()  # loaded when mobinumba is imported (threads.py)


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _blas_info():
    """numpy's BLAS: library, version, threads and the CPU kernel it runs (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return {"library": config.get("name", "unknown"), "version": config.get("version", ""),
                "kernel": "unknown (threadpoolctl not installed)", "threads": "default"}
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return {"library": pool.get("internal_api", "unknown"),
                    "version": pool.get("version") or "",
                    "kernel": pool.get("architecture") or "unknown",
                    "threads": pool.get("num_threads", 0)}
    return {"library": "none found", "version": "", "kernel": "unknown", "threads": 0}
