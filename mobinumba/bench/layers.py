"""Section 5: per-layer profile, and our pointwise GEMM against numpy's BLAS per layer shape."""
import contextlib
import functools
import time

import numpy as np

from ..kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
from ..ops.pointwise import KIND as POINTWISE
from ..threads import kernel_section
from .timing import gflops, median, time_calls

RELU = np.float32(np.inf)


def layer_profile(model, x, runs, warmup):
    """One row per op (28 weight layers and the pooling) with its median and fastest time over
    `runs` profiled forward passes, share of the summed medians, mult-adds and (except
    pooling) GFLOP/s at the median."""
    for _ in range(warmup):
        model.profile(x)
    samples = [model.profile(x) for _ in range(runs)]  # [[(name, seconds)] per run]
    batch, _, height, width = x.shape
    counts = model.layer_counts(height, width)
    per_op = [[sample[index][1] for sample in samples] for index in range(len(counts))]
    medians = [median(seconds) for seconds in per_op]
    total = sum(medians)
    rows = []
    for (spec, out_h, out_w, _, macs), seconds, runs_of_op, (name, _) in zip(
            counts, medians, per_op, samples[0]):
        row = {"layer": name, "kind": spec.kind,
               "output": f"{out_h}x{out_w}x{spec.out_channels}", "ms": seconds * 1e3,
               "min_ms": min(runs_of_op) * 1e3,
               "share_percent": 100.0 * seconds / total, "macs": macs * batch}
        if macs:  # pooling has no multiply-adds
            row["gflops"] = gflops(macs * batch, seconds)
        rows.append(row)
    return {"runs": runs, "batch": batch, "sum_ms": total * 1e3, "layers": rows}


def pointwise_shapes(model, height, width, batch):
    """Distinct (M = N*H*W, K = Cin, N = Cout) GEMM shapes of the model's pointwise layers,
    in network order, with the layers that have each shape."""
    shapes = {}
    for spec, out_h, out_w, _, _ in model.layer_counts(height, width):
        if spec.op is POINTWISE:
            key = (batch * out_h * out_w, spec.in_channels, spec.out_channels)
            shapes.setdefault(key, []).append(spec.name)
    return shapes


def pointwise_vs_blas(model, height, width, batch, threads, runs, rounds=2, pause_s=0.2,
                      seed=0):
    """Per pointwise shape: our GEMM kernel (with its bias + clamp epilogue) and numpy's
    matmul (plain GEMM) on the same float32 operands and thread count.

    Numba's and the BLAS's worker threads keep spinning for a while after a call, so calling
    the two in turn would make each wait for the other's threads: each engine instead runs
    over all shapes in its own block after a pause, and the blocks alternate `rounds` times.
    """
    rng = np.random.default_rng(seed)
    problems = []
    for (m, k, n), layers in pointwise_shapes(model, height, width, batch).items():
        x = rng.random((m, k), dtype=np.float32)  # (M, K) activations
        weight = rng.standard_normal((n, k, 1, 1)).astype(np.float32)  # OIHW
        packed, packed_bias = pack_pointwise_weights(weight, np.zeros(n, dtype=np.float32))
        out = np.empty((m, n), dtype=np.float32)
        matrix = np.ascontiguousarray(weight[:, :, 0, 0].T)  # (K, N)
        blas_out = np.empty((m, n), dtype=np.float32)
        problems.append(((m, k, n), layers, {
            "ours": functools.partial(pwconv_nhwc_clamp, x, packed, packed_bias, RELU, out),
            "blas": functools.partial(np.matmul, x, matrix, out=blas_out)}))
    seconds = [{"ours": [], "blas": []} for _ in problems]
    per_round = max(1, -(-runs // rounds))
    with _blas_threads(threads) as blas_threads_limited, kernel_section():
        for _ in range(rounds):
            for engine in ("ours", "blas"):
                time.sleep(pause_s)
                for (_, _, calls), samples in zip(problems, seconds):
                    samples[engine] += time_calls(calls[engine], per_round, warmup=2)
    rows = []
    for ((m, k, n), layers, _), samples in zip(problems, seconds):
        ours, blas = median(samples["ours"]), median(samples["blas"])
        macs = m * k * n
        rows.append({"m": m, "k": k, "n": n, "layers": layers, "macs": macs,
                     "ours_ms": ours * 1e3, "blas_ms": blas * 1e3,
                     "ours_gflops": gflops(macs, ours), "blas_gflops": gflops(macs, blas),
                     "ours_vs_blas": blas / ours})
    largest = max(row["macs"] for row in rows)
    return {"runs": per_round * rounds, "rounds": rounds, "pause_s": pause_s,
            "blas_threads_limited": blas_threads_limited, "shapes": rows,
            "largest_shapes": [row for row in rows if row["macs"] == largest]}


@contextlib.contextmanager
def _blas_threads(threads):
    """Limit numpy's BLAS to `threads` with threadpoolctl; yields whether it could."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield False
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield True
