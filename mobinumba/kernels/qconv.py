"""int8 standard 3x3 convolution (the stem), TFLite's CONV_2D int8 arithmetic.

NCHW int8 in (the runner's padded input buffer, its border filled with the input zero point,
so a padded tap contributes (zp - zp) * w = 0 as TFLite's skipped taps do), NHWC int8 out.
The input zero point is folded into the bias once at load time (ops/base.py
fold_input_zero_point): sum (x - zp) w = sum x w - zp sum w, so the inner loop is a plain
integer dot product. Requantize, clamp and store are fused in the epilogue (qcommon.py).
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE
from .qcommon import aligned_array, requantize


def pack_qconv3x3_weights(weight):
    """OIHW int8 (Cout, Cin, 3, 3) -> (Cin*9, Cout) int16 over k = (ci * 3 + kh) * 3 + kw:
    the inner loop runs over contiguous output channels (int16: LLVM multiplies it without
    the sign-extending int8 loads; the products still accumulate in int32)."""
    return aligned_array(weight.reshape(weight.shape[0], -1).T, np.int16)


@njit(parallel=True, cache=CACHE)
def qconv3x3_nchw_to_nhwc(x, weight, bias, multiplier, shift, stride, out_zero_point, low,
                          high, out):
    """out = requantize(conv3x3(x - zp_in, W) + bias), NCHW int8 in, NHWC int8 out.

    x (N, Cin, Hp, Wp) int8, padded (out[n, oh, ow] reads x[n, :, oh*s : oh*s+3,
    ow*s : ow*s+3]); weight (Cin*9, Cout) int16 from pack_qconv3x3_weights; bias (Cout,)
    int32 with the input zero point folded in; multiplier, shift (Cout,) int32; out
    (N, Ho, Wo, Cout) int8.
    """
    n_batch, c_in = x.shape[0], x.shape[1]
    _, out_h, out_w, c_out = out.shape
    for task in prange(n_batch * out_h):
        n = task // out_h
        oh = task - n * out_h
        acc = np.empty(c_out, np.int32)  # (Cout,)
        for ow in range(out_w):
            for c in range(c_out):
                acc[c] = bias[c]
            k = 0
            for ci in range(c_in):
                for kh in range(3):
                    row = x[n, ci, oh * stride + kh]  # (Wp,)
                    for kw in range(3):
                        value = np.int32(row[ow * stride + kw])
                        taps = weight[k]  # (Cout,)
                        for c in range(c_out):
                            acc[c] += value * np.int32(taps[c])
                        k += 1
            dst = out[n, oh, ow]  # (Cout,)
            for c in range(c_out):
                dst[c] = requantize(acc[c], multiplier[c], shift[c], out_zero_point, low, high)
