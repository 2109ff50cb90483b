"""The fresh process of the cold-start measurement (run by latency.cold_start).

    python path/to/coldstart.py WEIGHTS --size S --batch N --threads T [--memory-batch B]

Times `import mobinumba`, load() and the first inference (which compiles the kernels, or
loads them from NUMBA_CACHE_DIR), then a second inference, and records the peak resident
memory after a batch-N and optionally a batch-B inference. Prints one JSON object.

It runs as a script file, not with `python -m mobinumba.bench.coldstart`: -m would import
the mobinumba package (numpy, numba, h5py) before the first line here, hiding the import
time this measures.
"""
import time

START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def peak_rss_bytes():
    """This process's peak resident set size in bytes (ru_maxrss), or -1 where unavailable."""
    try:
        import resource
    except ImportError:  # Windows
        return -1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; Linux: KiB


def main(argv=None):
    """Measure and print the JSON result."""
    parser = argparse.ArgumentParser(prog="coldstart.py")
    parser.add_argument("weights")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--memory-batch", type=int, default=0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import numpy as np
    import mobinumba
    imported = time.perf_counter()
    mobinumba.set_threads(args.threads)
    model = mobinumba.load(args.weights)
    loaded = time.perf_counter()
    x = np.random.default_rng(0).standard_normal(
        (args.batch, 3, args.size, args.size)).astype(np.float32)  # (N, 3, H, W)
    model(x)
    first = time.perf_counter()
    model(x)
    second = time.perf_counter()
    result = {"import_s": imported - started, "load_s": loaded - imported,
              "first_inference_s": first - loaded, "second_inference_s": second - first,
              "total_s": first - START, "peak_rss_bytes": peak_rss_bytes()}
    if args.memory_batch:
        big = np.random.default_rng(1).standard_normal(
            (args.memory_batch, 3, args.size, args.size)).astype(np.float32)
        model(big)
        result["memory_batch"] = args.memory_batch
        result["memory_batch_peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
