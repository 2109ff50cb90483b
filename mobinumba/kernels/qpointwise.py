"""int8 pointwise (1x1) convolution in NHWC: a GEMM of (pixels, Cin) int8 by (Cin, Cout)
int8, TFLite's CONV_2D int8 arithmetic, with requantize + clamp + store fused per tile.

Two variants, chosen by the compile target (ops/pointwise.py asks kernels/targets.py):
- qpwconv_nhwc (here): plain Numba, for every CPU. Weights are widened to int16 and the
  input zero point is folded into the bias (sum (x - zp) w = sum x w - zp sum w), so the tile
  loop is acc[r, :] += x[r, k] * w[k, :] in int32, which LLVM vectorises for the target.
- kernels/vnni.py: AVX-512 VNNI `vpdpbusd`, 64 u8 x s8 products per instruction.
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE
from .qcommon import aligned_array, requantize_row, stack_matrix_i32

# The portable tile: 4 pixels x 32 channels of int32 accumulators (8 zmm / 16 ymm).
QPW_MR, QPW_NR = 4, 32


def pack_qpointwise_weights(weight):
    """OIHW int8 (Cout, Cin, 1, 1) -> panels (P, Cin, NR) int16, zero-padded past Cout."""
    c_out, c_in = weight.shape[:2]
    panels = (c_out + QPW_NR - 1) // QPW_NR
    packed = np.zeros((panels, c_in, QPW_NR), np.int16)
    matrix = weight.reshape(c_out, c_in).T  # (Cin, Cout)
    for p in range(panels):
        columns = matrix[:, p * QPW_NR:(p + 1) * QPW_NR]
        packed[p, :, :columns.shape[1]] = columns
    return aligned_array(packed, np.int16)


@njit(parallel=True, cache=CACHE)
def qpwconv_nhwc(x, packed, bias, table, out_zero_point, low, high, out):
    """out = requantize(x @ W + bias) for x (M, Cin) int8, packed (P, Cin, NR) int16 from
    pack_qpointwise_weights, bias (Cout,) int32 with the input zero point folded in,
    table (5, Cout) int32 from qcommon.requantize_table; out (M, Cout) int8."""
    rows, depth = x.shape
    c_out = out.shape[1]
    panels = packed.shape[0]
    row_blocks = (rows + QPW_MR - 1) // QPW_MR
    for task in prange(panels * row_blocks):
        p = task // row_blocks
        i0 = (task - p * row_blocks) * QPW_MR
        j0 = p * QPW_NR
        width = min(QPW_NR, c_out - j0)
        count = min(QPW_MR, rows - i0)
        panel = packed[p]  # (Cin, NR)
        acc = stack_matrix_i32(QPW_MR, QPW_NR)
        for r in range(QPW_MR):
            for v in range(QPW_NR):
                acc[r, v] = bias[j0 + v] if v < width else 0
        values = stack_matrix_i32(1, QPW_MR)  # the tile's A column at one k
        for k in range(depth):
            for r in range(QPW_MR):
                # Rows past the end repeat the block's first row (results not stored).
                values[0, r] = x[i0 + r if r < count else i0, k]
            w = panel[k]  # (NR,)
            for v in range(QPW_NR):
                for r in range(QPW_MR):
                    acc[r, v] += values[0, r] * np.int32(w[v])
        for r in range(count):
            requantize_row(acc[r], table, j0, out_zero_point, low, high,
                           width, out[i0 + r, j0:])
