"""The int8 model's input step: TFLite's QUANTIZE of the float (N, 3, H, W) batch, written
straight into the stem's zero-point-bordered int8 input buffer.

Why a kernel: the NumPy version (quantization.Quantization.quantize, then a strided copy)
took 0.30 ms per 224x224 image, more than any layer after the stem (docs/performance.md);
this loop does both in one pass over the 150,528 values.
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE

# |x / scale| beyond this saturates to -128 or 127 whatever the zero point ([-128, 127]):
# clamping first keeps the float -> int conversion in range.
_SATURATED = np.float32(512.0)


@njit(parallel=True, cache=CACHE)
def quantize_nchw(x, scale, zero_point, flip, out):
    """out[...] = clamp(round_half_away(float32(x) / scale) + zero_point, -128, 127) ^ flip.

    x (N, 3, H, W) float32 or float64 (finite: the caller checks); scale float32; flip 0, or
    128 to store q + 128 as u8 bits (what the vpdpbusd stem reads, ops/stem.py); out
    (N, 3, H, W) int8, any strides (the interior of the padded input buffer).
    Matches quantization.Quantization.quantize bit for bit: float32 division, then the
    rounding of quantization.round_half_away (floor of |v|, + 1 when the exact remainder is
    >= 0.5, the sign put back).

    Returns the number of NaN and Inf values of x (their bytes in `out` are meaningless):
    the caller's finiteness check, without a pass of its own.
    """
    n_batch, channels, height, width = x.shape
    nonfinite = 0
    for task in prange(n_batch * channels * height):
        n = task // (channels * height)
        c = (task // height) % channels
        h = task % height
        source = x[n, c, h]  # (W,)
        target = out[n, c, h]  # (W,)
        bad = 0
        for w in range(width):
            bad += not np.isfinite(source[w])
            value = np.float32(source[w]) / scale
            value = min(max(value, -_SATURATED), _SATURATED)
            magnitude = abs(value)
            whole = np.floor(magnitude)
            rounded = np.int32(whole) + np.int32(magnitude - whole >= np.float32(0.5))
            signed = -rounded if value < 0 else rounded
            target[w] = np.int8(min(max(signed + zero_point, -128), 127) ^ flip)
        nonfinite += bad
    return nonfinite
