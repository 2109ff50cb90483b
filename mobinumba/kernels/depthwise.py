"""Depthwise 3x3 convolution in NHWC: one filter per channel."""
import numpy as np
from numba import njit, prange

from ._common import CACHE, FASTMATH, ZERO


def pack_dwconv3x3_weights(weight):
    """OIHW (C, 1, 3, 3) -> (3, 3, C): the inner loop runs over contiguous channels."""
    return np.ascontiguousarray(weight[:, 0].transpose(1, 2, 0), dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def dwconv3x3_nhwc_clamp(x, weight, bias, stride, pad_top, pad_left, act_max, out):
    """out = clamp(depthwise_conv3x3(x, weight) + bias, 0, act_max), all NHWC.

    x (N, H, W, C); weight (3, 3, C) packed; bias (C,); out (N, Ho, Wo, C).
    Taps in the padding are skipped; the caller sizes `out` for its padding rule.
    """
    n_batch, height, width, channels = x.shape
    _, out_h, out_w, _ = out.shape
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row - n * out_h
        for ow in range(out_w):
            acc = out[n, oh, ow]  # (C,) accumulates in place
            for c in range(channels):
                acc[c] = bias[c]
            for kh in range(3):
                ih = oh * stride - pad_top + kh
                if ih < 0 or ih >= height:
                    continue
                for kw in range(3):
                    iw = ow * stride - pad_left + kw
                    if iw < 0 or iw >= width:
                        continue
                    pixel = x[n, ih, iw]  # (C,)
                    tap = weight[kh, kw]  # (C,)
                    for c in range(channels):
                        acc[c] += pixel[c] * tap[c]
            for c in range(channels):
                acc[c] = min(max(acc[c], ZERO), act_max)
