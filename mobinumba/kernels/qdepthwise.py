"""int8 depthwise 3x3 convolution in NHWC, TFLite's DEPTHWISE_CONV_2D int8 arithmetic.

Per output pixel and channel: bias + sum over the taps inside the image of
(x - input_zero_point) * w, in int32 (taps in the padding are skipped, as TFLite does, so the
zero point cannot be folded into the bias here), then the fused requantize + clamp + store.
The inner loops run over contiguous channels, so LLVM vectorises them.
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE
from .qcommon import aligned_array, requantize


def pack_qdwconv3x3_weights(weight):
    """OIHW int8 (C, 1, 3, 3) -> (3, 3, C) int16: contiguous channels per tap."""
    return aligned_array(weight[:, 0].transpose(1, 2, 0), np.int16)


@njit(parallel=True, cache=CACHE)
def qdwconv3x3_nhwc(x, weight, bias, multiplier, shift, stride, pad_top, pad_left,
                    in_zero_point, out_zero_point, low, high, out):
    """out = requantize(depthwise3x3(x - zp_in, W) + bias).

    x (N, H, W, C) int8; weight (3, 3, C) int16 from pack_qdwconv3x3_weights; bias,
    multiplier, shift (C,) int32; out (N, Ho, Wo, C) int8.
    """
    n_batch, height, width, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    for task in prange(n_batch * out_h):
        n = task // out_h
        oh = task - n * out_h
        ih0 = oh * stride - pad_top
        acc = np.empty(channels, np.int32)  # (C,)
        for ow in range(out_w):
            iw0 = ow * stride - pad_left
            for c in range(channels):
                acc[c] = bias[c]
            for kh in range(max(0, -ih0), min(3, height - ih0)):
                for kw in range(max(0, -iw0), min(3, width - iw0)):
                    pixel = x[n, ih0 + kh, iw0 + kw]  # (C,)
                    tap = weight[kh, kw]  # (C,)
                    for c in range(channels):
                        acc[c] += (np.int32(pixel[c]) - in_zero_point) * np.int32(tap[c])
            dst = out[n, oh, ow]  # (C,)
            for c in range(channels):
                dst[c] = requantize(acc[c], multiplier[c], shift[c], out_zero_point, low, high)
