"""Time the stem and pointwise kernels alone at their default tiles, in milliseconds.

    PYTHONPATH=<checkout> python bench/time_gemm_kernels.py [--threads 2] [--runs 200]

Pointwise 14x14x512->512 and 56x56x128->128 (MobileNetV1's layers 12 and 4), stem at 224x224
(stride 2), batch 1. Prints one JSON line {kernel: [median, min]}; run it once per checkout
(it uses only the default-tile API, so any revision can be timed) and alternate checkouts to
spread machine drift. The minimum is the steadier number on a shared machine.
"""
import argparse
import json

import numpy as np

import mobinumba
from mobinumba.bench.timing import time_calls
from mobinumba.kernels._common import aligned_copy, aligned_zeros
from mobinumba.kernels.conv import conv3x3_nchw_to_nhwc_clamp, pack_conv3x3_weights
from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
from mobinumba.threads import kernel_section


def median_and_min_ms(call, runs):
    """[median, min] of `runs` timed calls in ms, after 5 warm-up calls."""
    seconds = time_calls(call, runs, warmup=5)
    return [round(float(np.median(seconds)) * 1e3, 4), round(float(np.min(seconds)) * 1e3, 4)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    mobinumba.set_threads(args.threads)
    rng = np.random.default_rng(0)
    act_max = np.float32(6.0)
    results = {}
    with kernel_section():
        for side, channels in ((14, 512), (56, 128)):
            x = aligned_copy(rng.standard_normal((side * side, channels)).astype(np.float32))
            weight = rng.standard_normal((channels, channels, 1, 1)).astype(np.float32)
            bias = rng.standard_normal(channels).astype(np.float32)
            packed, packed_bias = pack_pointwise_weights(weight, bias)
            out = aligned_zeros((side * side, channels))
            results[f"pw {side}x{side}x{channels}->{channels}"] = median_and_min_ms(
                lambda: pwconv_nhwc_clamp(x, packed, packed_bias, act_max, out), args.runs)
        image = aligned_zeros((1, 3, 225, 225))  # padded as the runner pads (torch rule)
        image[:, :, 1:224 + 1, 1:224 + 1] = rng.standard_normal((1, 3, 224, 224))
        weight = rng.standard_normal((32, 3, 3, 3)).astype(np.float32)
        bias = rng.standard_normal(32).astype(np.float32)
        packed, packed_bias = pack_conv3x3_weights(weight, bias)
        out = aligned_zeros((1, 112, 112, 32))
        results["stem 224"] = median_and_min_ms(
            lambda: conv3x3_nchw_to_nhwc_clamp(image, packed, packed_bias, 2, act_max, out),
            args.runs)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
