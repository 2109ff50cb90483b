"""Time candidate register tiles for the pointwise GEMM and the stem on the current target.

    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= NUMBA_CACHE_DIR=$(mktemp -d) \
    PYTHONPATH=<checkout> python bench/tile_candidates.py --pointwise 6x16 4x24 --stem 6x16 3x32

Run it once per target, each in a fresh NUMBA_CACHE_DIR (LLVM compiles for NUMBA_CPU_NAME and
this machine runs the code). One thread, batch 1: pointwise 14x14x512->512 and
56x56x128->128 (MobileNetV1's layers 12 and 4), stem at 224x224 stride 2. Prints one JSON line
{"target": ..., "<kernel> <tile>": [median ms, min ms]}; on a shared machine the minimum is
the steadier number.
"""
import argparse
import json

import numpy as np

import mobinumba
from mobinumba.kernels._common import aligned_copy, aligned_zeros
from mobinumba.kernels._tile import Tile
from mobinumba.kernels.conv import conv3x3_nchw_to_nhwc_clamp_kernel, pack_conv3x3_weights
from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp_kernel
from mobinumba.kernels.targets import compile_target
from mobinumba.threads import kernel_section
from time_gemm_kernels import median_and_min_ms  # bench/, beside this script


def parse_tile(text):
    """'6x16' -> Tile(6, 16)."""
    mr, nr = text.split("x")
    return Tile(int(mr), int(nr))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pointwise", nargs="*", type=parse_tile, default=[])
    parser.add_argument("--stem", nargs="*", type=parse_tile, default=[])
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    mobinumba.set_threads(1)
    rng = np.random.default_rng(0)
    act_max = np.float32(6.0)
    results = {"target": str(compile_target())}
    with kernel_section():
        for tile in args.pointwise:
            kernel = pwconv_nhwc_clamp_kernel(tile)
            for side, channels in ((14, 512), (56, 128)):
                x = aligned_copy(rng.standard_normal((side * side, channels)).astype(np.float32))
                weight = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32)
                bias = rng.standard_normal(channels).astype(np.float32)
                packed, packed_bias = pack_pointwise_weights(weight, bias, tile.nr)
                out = aligned_zeros((side * side, channels))
                results[f"pw {side}x{channels} {tile}"] = median_and_min_ms(
                    lambda: kernel(x, packed, packed_bias, act_max, out), args.runs)
        image = aligned_zeros((1, 3, 225, 225))  # padded as the runner pads (torch rule)
        image[:, :, 1:224 + 1, 1:224 + 1] = rng.standard_normal((1, 3, 224, 224))
        weight = rng.standard_normal((32, 3, 3, 3)).astype(np.float32)
        bias = rng.standard_normal(32).astype(np.float32)
        out = aligned_zeros((1, 112, 112, 32))
        for tile in args.stem:
            kernel = conv3x3_nchw_to_nhwc_clamp_kernel(tile)
            packed, packed_bias = pack_conv3x3_weights(weight, bias, tile.nr)
            results[f"stem {tile}"] = median_and_min_ms(
                lambda: kernel(image, packed, packed_bias, 2, act_max, out), args.runs)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
