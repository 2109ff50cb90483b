"""Standard 3x3 convolution: the network's stem, and the benchmark's standard-conv baselines.

The stem is a small GEMM per output row: each output pixel's 27 inputs (3 channels x 3x3
taps) times a (27, Cout) weight panel. It uses the pointwise kernel's register tile (MR
pixels x NR channels in stack buffers) with the A operand gathered straight from the image.
The input arrives already padded (the runner keeps a zero-bordered input buffer), so no tap
needs a bounds test.
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE, FASTMATH, ZERO, stack_buffer_f32
from ._tile import MR, pack_gemm_weights, store_clamped, store_clamped_partial
from .pointwise import pack_pointwise_weights, pwconv_nhwc_clamp

NR = 32  # output channels per tile: the stem has 32 at width 1.0


def pack_conv3x3_weights(weight, bias):
    """OIHW (Cout, Cin, 3, 3) and (Cout,) -> GEMM panels over k = (ci * 3 + kh) * 3 + kw."""
    c_out = weight.shape[0]
    return pack_gemm_weights(weight.reshape(c_out, -1).T, bias, NR)


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def conv3x3_nchw_to_nhwc_clamp(x, packed, packed_bias, stride, act_max, out):
    """out = clamp(conv3x3(x, W) + bias, 0, act_max), NCHW in, NHWC out, no implicit padding.

    x (N, Cin, Hp, Wp) padded input: out[n, oh, ow] reads x[n, :, oh*s : oh*s+3,
    ow*s : ow*s+3], so Hp >= (Ho - 1) * s + 3 and Wp >= (Wo - 1) * s + 3;
    packed (P, Cin*9, NR), packed_bias (P, NR) from pack_conv3x3_weights; out (N, Ho, Wo, Cout).
    """
    n_batch, c_in = x.shape[:2]
    _, out_h, out_w, c_out = out.shape
    panels = packed.shape[0]
    # One task per (image, output row, panel): 112 rows per image at 224x224.
    for task in prange(n_batch * out_h * panels):
        row = task // panels
        p = task - row * panels
        n = row // out_h
        oh = row - n * out_h
        j0 = p * NR
        width = min(NR, c_out - j0)
        panel = packed[p]  # (Cin*9, NR)
        bias = packed_bias[p]  # (NR,)
        dst = out[n, oh]  # (Wo, Cout)
        # Blocks of MR pixels; when MR does not divide Wo the last block is shifted left to
        # end at Wo, recomputing a few pixels of its neighbour (identical values, same task).
        # A one-pixel tail loop instead cost 4x a block's time per pixel (measured).
        blocks = (out_w + MR - 1) // MR if out_w >= MR else 0
        for block in range(blocks):
            ow0 = min(block * MR, out_w - MR)
            acc0 = stack_buffer_f32(NR)
            acc1 = stack_buffer_f32(NR)
            acc2 = stack_buffer_f32(NR)
            acc3 = stack_buffer_f32(NR)
            acc4 = stack_buffer_f32(NR)
            acc5 = stack_buffer_f32(NR)
            for v in range(NR):
                acc0[v] = bias[v]
                acc1[v] = bias[v]
                acc2[v] = bias[v]
                acc3[v] = bias[v]
                acc4[v] = bias[v]
                acc5[v] = bias[v]
            iw = ow0 * stride
            for ci in range(c_in):
                for kh in range(3):
                    src = x[n, ci, oh * stride + kh]  # (Wp,) one padded input row
                    for kw in range(3):
                        w = panel[(ci * 3 + kh) * 3 + kw]  # (NR,)
                        a0 = src[iw + kw]
                        a1 = src[iw + stride + kw]
                        a2 = src[iw + 2 * stride + kw]
                        a3 = src[iw + 3 * stride + kw]
                        a4 = src[iw + 4 * stride + kw]
                        a5 = src[iw + 5 * stride + kw]
                        for v in range(NR):
                            acc0[v] += a0 * w[v]
                            acc1[v] += a1 * w[v]
                            acc2[v] += a2 * w[v]
                            acc3[v] += a3 * w[v]
                            acc4[v] += a4 * w[v]
                            acc5[v] += a5 * w[v]
            if width == NR:
                store_clamped(acc0, dst[ow0, j0:j0 + NR], act_max)
                store_clamped(acc1, dst[ow0 + 1, j0:j0 + NR], act_max)
                store_clamped(acc2, dst[ow0 + 2, j0:j0 + NR], act_max)
                store_clamped(acc3, dst[ow0 + 3, j0:j0 + NR], act_max)
                store_clamped(acc4, dst[ow0 + 4, j0:j0 + NR], act_max)
                store_clamped(acc5, dst[ow0 + 5, j0:j0 + NR], act_max)
            else:
                store_clamped_partial(acc0, dst[ow0, j0:], width, act_max)
                store_clamped_partial(acc1, dst[ow0 + 1, j0:], width, act_max)
                store_clamped_partial(acc2, dst[ow0 + 2, j0:], width, act_max)
                store_clamped_partial(acc3, dst[ow0 + 3, j0:], width, act_max)
                store_clamped_partial(acc4, dst[ow0 + 4, j0:], width, act_max)
                store_clamped_partial(acc5, dst[ow0 + 5, j0:], width, act_max)
        # A row narrower than MR pixels (a tiny input): one pixel at a time.
        for ow in range(blocks * MR, out_w):
            acc = stack_buffer_f32(NR)
            for v in range(NR):
                acc[v] = bias[v]
            for ci in range(c_in):
                for kh in range(3):
                    src = x[n, ci, oh * stride + kh]
                    for kw in range(3):
                        a = src[ow * stride + kw]
                        w = panel[(ci * 3 + kh) * 3 + kw]
                        for v in range(NR):
                            acc[v] += a * w[v]
            store_clamped_partial(acc, dst[ow, j0:], width, act_max)


# ------------------------------------------------------------------------------------------
# Standard 3x3 convolution inside the network (NHWC -> NHWC): benchmark baselines for the
# paper's "Conv MobileNet", where each depthwise-separable block is one standard 3x3 conv.


def pack_conv3x3_direct_weights(weight):
    """OIHW (Cout, Cin, 3, 3) -> OHWI (Cout, 3, 3, Cin): one tap's Cin weights are contiguous."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1), dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
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


def pack_conv3x3_im2col_weights(weight, bias):
    """OIHW (Cout, Cin, 3, 3), (Cout,) -> pointwise panels for a GEMM over im2col columns.

    The weight becomes a (Cout, 9 * Cin) matrix in (kh, kw, ci) order, the order in which
    im2col3x3_nhwc lays out a column, and is packed like a 1x1 conv's weight and bias.
    """
    c_out, c_in = weight.shape[:2]
    matrix = np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(c_out, 9 * c_in, 1, 1)
    return pack_pointwise_weights(matrix, bias)


@njit(parallel=True, cache=CACHE)
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


def conv3x3_nhwc_im2col_clamp(x, packed, packed_bias, stride, pad_top, pad_left, act_max,
                              columns, out):
    """out = clamp(conv3x3(x) + bias, 0, act_max) as im2col followed by the pointwise GEMM.

    x (N, H, W, Cin); packed, packed_bias from pack_conv3x3_im2col_weights;
    columns (N, Ho, Wo, 9 * Cin) scratch; out (N, Ho, Wo, Cout). The standard convolution
    "done as well as we can" with this project's kernels: a (N*Ho*Wo, 9*Cin) x (9*Cin, Cout)
    GEMM on the register-blocked pointwise kernel.
    """
    im2col3x3_nhwc(x, stride, pad_top, pad_left, columns)
    rows = columns.shape[0] * columns.shape[1] * columns.shape[2]
    pwconv_nhwc_clamp(columns.reshape(rows, columns.shape[3]), packed, packed_bias, act_max,
                      out.reshape(rows, out.shape[3]))
