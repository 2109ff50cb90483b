"""Standard 3x3 convolution: the network's stem, and the benchmark's standard-conv baselines.

The stem is a small GEMM per output row: each output pixel's 27 inputs (3 channels x 3x3
taps) times a (27, Cout) weight panel. It uses the pointwise kernel's register tile
(_tile.py: MR pixels x NR channels of stack accumulators) with the A operand gathered straight
from the image. The input arrives already padded (the runner keeps a zero-bordered input
buffer), so no tap needs a bounds test.

The kernel is built per Tile by conv3x3_nchw_to_nhwc_clamp_kernel; the module-level
conv3x3_nchw_to_nhwc_clamp and pack_conv3x3_weights use TILE, the compile target's stem tile
(targets.py: 6x32 with AVX-512).
"""
import functools

import numpy as np
from numba import njit, prange

from ._common import CACHE, FASTMATH, ZERO, activate, stack_buffer_f32, stack_matrix_f32
from ._tile import checked_kernel, pack_gemm_weights, tile_start, tile_store_clamped, tile_update
from .pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
from .targets import target_tiles

# The compile target's tile (targets.TILES). The stem has 32 output channels at width 1.0:
# with AVX-512 one 32-wide panel (2 zmm per row).
TILE = target_tiles().stem


def pack_conv3x3_weights(weight, bias, nr=TILE.nr):
    """OIHW (Cout, Cin, 3, 3) and (Cout,) -> GEMM panels (P, Cin*9, nr), (P, nr) over
    k = (ci * 3 + kh) * 3 + kw."""
    c_out = weight.shape[0]
    return pack_gemm_weights(weight.reshape(c_out, -1).T, bias, nr)


@functools.cache
def conv3x3_nchw_to_nhwc_clamp_kernel(tile):
    """conv3x3_nchw_to_nhwc_clamp compiled for `tile` (a Tile), once per tile shape.

    Its weights must come from pack_conv3x3_weights(weight, bias, tile.nr); other panel
    widths are refused with a ValueError before the kernel runs.
    """
    mr, nr = tile.mr, tile.nr  # closure constants: Numba's cache key includes them

    @njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
    def conv3x3_nchw_to_nhwc_clamp(x, packed, packed_bias, stride, act_max, out, slope=None):
        """out = clamp(conv3x3(x, W) + bias, 0, act_max), NCHW in, NHWC out, no implicit padding.
        With a `slope`: LeakyReLU capped at act_max (_common.activate).

        x (N, Cin, Hp, Wp) padded input: out[n, oh, ow] reads x[n, :, oh*s : oh*s+3,
        ow*s : ow*s+3], so Hp >= (Ho - 1) * s + 3 and Wp >= (Wo - 1) * s + 3; packed
        (P, Cin*9, NR), packed_bias (P, NR) from pack_conv3x3_weights; out (N, Ho, Wo, Cout).
        """
        n_batch = x.shape[0]
        _, out_h, out_w, c_out = out.shape
        panels = packed.shape[0]
        # One task per (image, output row, panel): 112 rows per image at 224x224.
        for task in prange(n_batch * out_h * panels):
            row = task // panels
            p = task - row * panels
            n = row // out_h
            oh = row - n * out_h
            j0 = p * nr
            width = min(nr, c_out - j0)
            panel = packed[p]  # (Cin*9, NR)
            bias = packed_bias[p]  # (NR,)
            image = x[n]  # (Cin, Hp, Wp)
            dst = out[n, oh]  # (Wo, Cout)
            # Blocks of MR pixels; when MR does not divide Wo the last block is shifted left
            # to end at Wo, recomputing a few pixels of its neighbour (identical values, same
            # task). A one-pixel tail loop instead cost 4x a block's time per pixel (measured).
            blocks = (out_w + mr - 1) // mr if out_w >= mr else 0
            for block in range(blocks):
                ow0 = min(block * mr, out_w - mr)
                acc = stack_matrix_f32(mr, nr)
                _conv_tile(acc, stack_buffer_f32(mr), image, oh * stride, ow0 * stride, stride,
                           panel, bias)
                tile_store_clamped(acc, dst, ow0, j0, width, act_max, slope)
            # A row narrower than MR pixels (a tiny input): one pixel at a time, a 1 x NR tile.
            for ow in range(blocks * mr, out_w):
                pixel_acc = stack_matrix_f32(1, nr)
                _conv_tile(pixel_acc, stack_buffer_f32(1), image, oh * stride, ow * stride,
                           stride, panel, bias)
                tile_store_clamped(pixel_acc, dst, ow, j0, width, act_max, slope)

    return checked_kernel(conv3x3_nchw_to_nhwc_clamp, tile, "pack_conv3x3_weights")


@njit(inline="always", fastmath=FASTMATH)
def _conv_tile(acc, a, image, ih, iw, stride, panel, bias):
    """acc (R, NR) = bias + the 3x3 conv of R pixels in a row, with a (R,) as the A buffer.

    image (Cin, Hp, Wp) padded; pixel r reads image[:, ih:ih+3, iw + r*stride : +3];
    panel (Cin*9, NR); bias (NR,).
    """
    tile_start(acc, bias)
    for ci in range(image.shape[0]):
        for kh in range(3):
            src = image[ci, ih + kh]  # (Wp,) one padded input row
            for kw in range(3):
                for r in range(acc.shape[0]):
                    a[r] = src[iw + r * stride + kw]
                tile_update(acc, a, panel[(ci * 3 + kh) * 3 + kw])


conv3x3_nchw_to_nhwc_clamp = conv3x3_nchw_to_nhwc_clamp_kernel(TILE)


# ------------------------------------------------------------------------------------------
# Standard 3x3 convolution inside the network (NHWC -> NHWC): benchmark baselines for the
# paper's "Conv MobileNet", where each depthwise-separable block is one standard 3x3 conv.


def pack_conv3x3_direct_weights(weight):
    """OIHW (Cout, Cin, 3, 3) -> OHWI (Cout, 3, 3, Cin): one tap's Cin weights are contiguous."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1), dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def conv3x3_nhwc_direct_clamp(x, weight, bias, stride, pad_top, pad_left, act_max, out,
                              slope=None):
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
                out[n, oh, ow, co] = activate(acc, act_max, slope)


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
                              columns, out, *slope):
    """out = clamp(conv3x3(x) + bias, 0, act_max) as im2col followed by the pointwise GEMM.

    x (N, H, W, Cin); packed, packed_bias from pack_conv3x3_im2col_weights;
    columns (N, Ho, Wo, 9 * Cin) scratch; out (N, Ho, Wo, Cout). The standard convolution
    "done as well as we can" with this project's kernels: a (N*Ho*Wo, 9*Cin) x (9*Cin, Cout)
    GEMM on the register-blocked pointwise kernel.
    """
    im2col3x3_nhwc(x, stride, pad_top, pad_left, columns)
    rows = columns.shape[0] * columns.shape[1] * columns.shape[2]
    pwconv_nhwc_clamp(columns.reshape(rows, columns.shape[3]), packed, packed_bias, act_max,
                      out.reshape(rows, out.shape[3]), *slope)
