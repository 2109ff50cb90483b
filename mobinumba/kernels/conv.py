"""Standard 3x3 convolution: the network's stem, reading the user's NCHW image batch."""
import numpy as np
from numba import njit, prange

from ._common import FASTMATH, ZERO
from .pointwise import pack_pointwise_weights, pwconv_nhwc_clamp


def pack_conv3x3_weights(weight):
    """OIHW (Cout, Cin, 3, 3) -> (3, 3, Cin, Cout): one tap's Cout weights are contiguous."""
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0), dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
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


# ------------------------------------------------------------------------------------------
# Standard 3x3 convolution inside the network (NHWC -> NHWC): benchmark baselines for the
# paper's "Conv MobileNet", where each depthwise-separable block is one standard 3x3 conv.


def pack_conv3x3_direct_weights(weight):
    """OIHW (Cout, Cin, 3, 3) -> OHWI (Cout, 3, 3, Cin): one tap's Cin weights are contiguous."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1), dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def conv3x3_nhwc_direct_clamp(x, weight, bias, stride, pad_top, pad_left, act_max, out):
    """out = clamp(conv3x3(x, weight) + bias, 0, act_max) by the textbook direct loop.

    x (N, H, W, Cin); weight (Cout, 3, 3, Cin) from pack_conv3x3_direct_weights; bias (Cout,);
    out (N, Ho, Wo, Cout). Each output element is one dot product over its taps: no tiling and
    no reuse of loaded inputs across output channels. This is the naive baseline the
    benchmark report compares against; the network never runs it.
    """
    n_batch, height, width, c_in = x.shape
    _, out_h, out_w, c_out = out.shape
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row - n * out_h
        for ow in range(out_w):
            for co in range(c_out):
                acc = bias[co]
                for kh in range(3):
                    ih = oh * stride - pad_top + kh
                    if ih < 0 or ih >= height:
                        continue
                    for kw in range(3):
                        iw = ow * stride - pad_left + kw
                        if iw < 0 or iw >= width:
                            continue
                        pixel = x[n, ih, iw]  # (Cin,)
                        tap = weight[co, kh, kw]  # (Cin,)
                        for ci in range(c_in):
                            acc += pixel[ci] * tap[ci]
                out[n, oh, ow, co] = min(max(acc, ZERO), act_max)


def pack_conv3x3_im2col_weights(weight):
    """OIHW (Cout, Cin, 3, 3) -> pointwise panels for a GEMM over im2col columns.

    The weight becomes a (Cout, 9 * Cin) matrix in (kh, kw, ci) order, the order in which
    im2col3x3_nhwc lays out a column, and is packed like a 1x1 conv's weight.
    """
    c_out, c_in = weight.shape[:2]
    matrix = np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(c_out, 9 * c_in, 1, 1)
    return pack_pointwise_weights(matrix)


@njit(parallel=True, cache=True)
def im2col3x3_nhwc(x, stride, pad_top, pad_left, columns):
    """columns[n, oh, ow] = the 3x3 input patch of output pixel (oh, ow), zeros in the padding.

    x (N, H, W, Cin); columns (N, Ho, Wo, 9 * Cin), each patch in (kh, kw, ci) order, so the
    Cin values of one tap are a contiguous copy of one input pixel.
    """
    n_batch, height, width, c_in = x.shape
    _, out_h, out_w, _ = columns.shape
    for row in prange(n_batch * out_h):
        n = row // out_h
        oh = row - n * out_h
        for ow in range(out_w):
            patch = columns[n, oh, ow]  # (9 * Cin,)
            for kh in range(3):
                ih = oh * stride - pad_top + kh
                for kw in range(3):
                    iw = ow * stride - pad_left + kw
                    start = (kh * 3 + kw) * c_in
                    if ih < 0 or ih >= height or iw < 0 or iw >= width:
                        for ci in range(c_in):
                            patch[start + ci] = ZERO
                    else:
                        pixel = x[n, ih, iw]  # (Cin,)
                        for ci in range(c_in):
                            patch[start + ci] = pixel[ci]


def conv3x3_nhwc_im2col_clamp(x, packed, bias, stride, pad_top, pad_left, act_max, columns,
                              out):
    """out = clamp(conv3x3(x) + bias, 0, act_max) as im2col followed by the pointwise GEMM.

    x (N, H, W, Cin); packed from pack_conv3x3_im2col_weights; bias (Cout,);
    columns (N, Ho, Wo, 9 * Cin) scratch; out (N, Ho, Wo, Cout). The standard convolution
    "done as well as we can" with this project's kernels: a (N*Ho*Wo, 9*Cin) x (9*Cin, Cout)
    GEMM on the register-blocked pointwise kernel.
    """
    im2col3x3_nhwc(x, stride, pad_top, pad_left, columns)
    rows = columns.shape[0] * columns.shape[1] * columns.shape[2]
    pwconv_nhwc_clamp(columns.reshape(rows, columns.shape[3]), packed, bias, act_max,
                      out.reshape(rows, out.shape[3]))
