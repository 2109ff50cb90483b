"""Standard 3x3 convolution: the network's stem, reading the user's NCHW image batch."""
import numpy as np
from numba import njit, prange

from ._common import CACHE, FASTMATH, ZERO


def pack_conv3x3_weights(weight):
    """OIHW (Cout, Cin, 3, 3) -> (3, 3, Cin, Cout): one tap's Cout weights are contiguous."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0), dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def conv3x3_nchw_to_nhwc_clamp(x, weight, bias, stride, pad_top, pad_left, act_max, out):
    """out = clamp(conv3x3(x, weight) + bias, 0, act_max), NCHW in, NHWC out.

    x (N, Cin, H, W); weight (3, 3, Cin, Cout) packed; bias (Cout,); out (N, Ho, Wo, Cout).
    Taps that fall into the padding are skipped, so any pad_top/pad_left (PyTorch's symmetric
    or TF's asymmetric "SAME") works: the caller sizes `out` accordingly.
    """
    n_batch, c_in, height, width = x.shape
    _, out_h, out_w, c_out = out.shape
    # One output row per task: enough rows (112 at 224x224) to keep every thread busy.
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row - n * out_h
        for ow in range(out_w):
            acc = out[n, oh, ow]  # (Cout,) accumulates in place, stays in L1
            for co in range(c_out):
                acc[co] = bias[co]
            for kh in range(3):
                ih = oh * stride - pad_top + kh
                if ih < 0 or ih >= height:
                    continue
                for kw in range(3):
                    iw = ow * stride - pad_left + kw
                    if iw < 0 or iw >= width:
                        continue
                    for ci in range(c_in):
                        pixel = x[n, ci, ih, iw]
                        tap = weight[kh, kw, ci]  # (Cout,)
                        for co in range(c_out):
                            acc[co] += pixel * tap[co]
            for co in range(c_out):
                acc[co] = min(max(acc[co], ZERO), act_max)
