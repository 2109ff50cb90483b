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
from .qcommon import aligned_array, requantize_row, stack_matrix_i32


# The tile: 4 output pixels x 32 channels of int32 accumulators in a stack matrix of constant
# shape, which LLVM keeps in vector registers over the 27-long reduction (a heap accumulator
# row, loaded and stored at every tap, took 3.4 ms at 224x224; the tile 0.X ms, see below).
QSTEM_MR, QSTEM_NR = 4, 32


def pack_qconv3x3_weights(weight):
    """OIHW int8 (Cout, Cin, 3, 3) -> panels (P, Cin*9, NR) int16 over k = (ci * 3 + kh) * 3
    + kw, zero-padded past Cout (int16: LLVM multiplies them without sign-extending loads;
    the products accumulate in int32)."""
    c_out = weight.shape[0]
    panels = (c_out + QSTEM_NR - 1) // QSTEM_NR
    matrix = weight.reshape(c_out, -1).T  # (Cin*9, Cout)
    packed = np.zeros((panels, matrix.shape[0], QSTEM_NR), np.int16)
    for p in range(panels):
        columns = matrix[:, p * QSTEM_NR:(p + 1) * QSTEM_NR]
        packed[p, :, :columns.shape[1]] = columns
    return aligned_array(packed, np.int16)


@njit(parallel=True, cache=CACHE)
def qconv3x3_nchw_to_nhwc(x, packed, bias, table, stride, out_zero_point, low,
                          high, out):
    """out = requantize(conv3x3(x - zp_in, W) + bias), NCHW int8 in, NHWC int8 out.

    x (N, Cin, Hp, Wp) int8, padded (out[n, oh, ow] reads x[n, :, oh*s : oh*s+3,
    ow*s : ow*s+3]); packed (P, Cin*9, NR) int16 from pack_qconv3x3_weights; bias (Cout,)
    int32 with the input zero point folded in; table (5, Cout) int32 from
    qcommon.requantize_table; out (N, Ho, Wo, Cout) int8.
    """
    n_batch, c_in = x.shape[0], x.shape[1]
    _, out_h, out_w, c_out = out.shape
    panels = packed.shape[0]
    blocks = (out_w + QSTEM_MR - 1) // QSTEM_MR
    for task in prange(n_batch * out_h * panels):
        row = task // panels
        p = task - row * panels
        n = row // out_h
        oh = row - n * out_h
        j0 = p * QSTEM_NR
        width = min(QSTEM_NR, c_out - j0)
        panel = packed[p]  # (Cin*9, NR)
        for block in range(blocks):
            ow0 = block * QSTEM_MR
            count = min(QSTEM_MR, out_w - ow0)
            acc = stack_matrix_i32(QSTEM_MR, QSTEM_NR)
            for r in range(QSTEM_MR):
                for v in range(QSTEM_NR):
                    acc[r, v] = bias[j0 + v] if v < width else 0
            values = stack_matrix_i32(1, QSTEM_MR)  # the tile's A column at one tap
            k = 0
            for ci in range(c_in):
                for kh in range(3):
                    line = x[n, ci, oh * stride + kh]  # (Wp,)
                    for kw in range(3):
                        for r in range(QSTEM_MR):
                            # Pixels past the row's end repeat its last one (not stored).
                            values[0, r] = line[(ow0 + min(r, count - 1)) * stride + kw]
                        taps = panel[k]  # (NR,)
                        for v in range(QSTEM_NR):
                            for r in range(QSTEM_MR):
                                acc[r, v] += values[0, r] * np.int32(taps[v])
                        k += 1
            for r in range(count):
                requantize_row(acc[r], table, j0, out_zero_point, low,
                               high, width, out[n, oh, ow0 + r, j0:])
