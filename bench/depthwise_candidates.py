"""Time the stride-1 depthwise kernel's interior variants on the current target.

    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= NUMBA_CACHE_DIR=$(mktemp -d) \
    PYTHONPATH=<checkout> python bench/depthwise_candidates.py [--blocks 256 512 1024]

Run it once per target, each in a fresh NUMBA_CACHE_DIR. One thread: every interior row of
MobileNetV1's stride-1 depthwise shapes through `_interior_row` (one output row per pass)
and through `_interior_two_rows` (two rows sharing their input rows and weight loads, what
dwconv3x3s1_nhwc_clamp runs), with the weights tiled to each block length (BLOCK_FLOATS
in depthwise.py, 512). Prints one JSON line {"target": ..., "<shape> <variant> b<block>":
min ms}; on a shared machine the minimum is the steadier number.
"""
import argparse
import json

import numpy as np
from numba import njit

from mobinumba.kernels import depthwise
from mobinumba.kernels._common import aligned_copy, aligned_zeros
from mobinumba.kernels.targets import compile_target
from time_gemm_kernels import median_and_min_ms  # bench/, beside this script

# (side, channels) of MobileNetV1's stride-1 depthwise layers at 224x224.
SHAPES = ((112, 32), (56, 128), (28, 256), (14, 512), (7, 1024))


@njit
def one_row_per_pass(rows_in, weight_tile, bias_tile, channels, act_max, rows_out, height):
    for row in range(1, height - 1):
        depthwise._interior_row(rows_in, row, weight_tile, bias_tile, channels, act_max,
                                rows_out)


@njit
def two_rows_per_pass(rows_in, weight_tile, bias_tile, channels, act_max, rows_out, height):
    for row in range(1, height - 2, 2):
        depthwise._interior_two_rows(rows_in, row, weight_tile, bias_tile, channels, act_max,
                                     rows_out)
    if (height - 2) % 2:
        depthwise._interior_row(rows_in, height - 2, weight_tile, bias_tile, channels,
                                act_max, rows_out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", nargs="+", type=int, default=[256, 512, 1024])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    act_max = np.float32(6.0)
    results = {"target": str(compile_target())}
    for side, channels in SHAPES:
        x = aligned_copy(rng.standard_normal((side, side * channels)).astype(np.float32))
        weight = rng.standard_normal((3, 3, channels)).astype(np.float32)
        bias = rng.standard_normal(channels).astype(np.float32)
        out = aligned_zeros((side, side * channels))
        for block in args.blocks:
            repeats = max(1, block // channels)
            weight_tile = aligned_copy(np.tile(weight, (1, 1, repeats)))
            bias_tile = aligned_copy(np.tile(bias, repeats))
            for name, variant in (("one", one_row_per_pass), ("two", two_rows_per_pass)):
                results[f"{side}x{side}x{channels} {name} b{block}"] = median_and_min_ms(
                    lambda: variant(x, weight_tile, bias_tile, channels, act_max, out, side),
                    args.runs)[1]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
