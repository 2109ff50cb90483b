"""Pointwise (1x1) convolution in NHWC: a GEMM of (pixels, Cin) by (Cin, Cout).

The activations of a layer, viewed as a (M = N*H*W, K = Cin) row-major matrix, multiply the
packed weights. The output is computed in MR x NR tiles whose accumulators are MR stack
buffers of NR floats: once LLVM unrolls the NR loop they become vector registers, so each
step over K is MR broadcasts, NR / vector-width loads and MR * NR / vector-width FMAs.
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE, FASTMATH, ZERO, stack_buffer_f32

MR = 6   # rows (pixels) per tile
NR = 32  # output channels per tile = the width of one packed weight panel


def pack_pointwise_weights(weight):
    """OIHW (Cout, Cin, 1, 1) -> panels (ceil(Cout / NR), Cin, NR), zero-padded past Cout.

    Panel p holds output channels [p*NR, p*NR + NR) for every input channel, so the tile loop
    reads one contiguous NR-float row per step over Cin.
    """
    c_out, c_in = weight.shape[:2]
    matrix = weight.reshape(c_out, c_in).T  # (Cin, Cout)
    panels = (c_out + NR - 1) // NR
    packed = np.zeros((panels, c_in, NR), dtype=np.float32)
    for p in range(panels):
        block = matrix[:, p * NR:(p + 1) * NR]
        packed[p, :, :block.shape[1]] = block
    return packed


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def pwconv_nhwc_clamp(x, packed, bias, act_max, out):
    """out = clamp(x @ W + bias, 0, act_max).

    x (M, Cin) = NHWC activations flattened over pixels; packed (P, Cin, NR) from
    pack_pointwise_weights; bias (Cout,); out (M, Cout).
    """
    rows, depth = x.shape
    c_out = out.shape[1]
    panels = packed.shape[0]
    row_blocks = (rows + MR - 1) // MR
    # Tasks enumerate (panel, row block) with the row block fastest, so a thread's contiguous
    # share of tasks walks down the rows reusing one weight panel from cache.
    for task in prange(panels * row_blocks):
        p = task // row_blocks
        i0 = (task - p * row_blocks) * MR
        j0 = p * NR
        width = min(NR, c_out - j0)
        panel = packed[p]  # (Cin, NR)
        if i0 + MR <= rows:
            acc0 = stack_buffer_f32(32)
            acc1 = stack_buffer_f32(32)
            acc2 = stack_buffer_f32(32)
            acc3 = stack_buffer_f32(32)
            acc4 = stack_buffer_f32(32)
            acc5 = stack_buffer_f32(32)
            for v in range(NR):
                acc0[v] = ZERO
                acc1[v] = ZERO
                acc2[v] = ZERO
                acc3[v] = ZERO
                acc4[v] = ZERO
                acc5[v] = ZERO
            for k in range(depth):
                w = panel[k]  # (NR,)
                a0 = x[i0, k]
                a1 = x[i0 + 1, k]
                a2 = x[i0 + 2, k]
                a3 = x[i0 + 3, k]
                a4 = x[i0 + 4, k]
                a5 = x[i0 + 5, k]
                for v in range(NR):
                    acc0[v] += a0 * w[v]
                    acc1[v] += a1 * w[v]
                    acc2[v] += a2 * w[v]
                    acc3[v] += a3 * w[v]
                    acc4[v] += a4 * w[v]
                    acc5[v] += a5 * w[v]
            for v in range(width):
                b = bias[j0 + v]
                out[i0, j0 + v] = min(max(acc0[v] + b, ZERO), act_max)
                out[i0 + 1, j0 + v] = min(max(acc1[v] + b, ZERO), act_max)
                out[i0 + 2, j0 + v] = min(max(acc2[v] + b, ZERO), act_max)
                out[i0 + 3, j0 + v] = min(max(acc3[v] + b, ZERO), act_max)
                out[i0 + 4, j0 + v] = min(max(acc4[v] + b, ZERO), act_max)
                out[i0 + 5, j0 + v] = min(max(acc5[v] + b, ZERO), act_max)
        else:
            # Fewer than MR rows left: one row at a time.
            for i in range(i0, rows):
                acc = stack_buffer_f32(32)
                for v in range(NR):
                    acc[v] = ZERO
                for k in range(depth):
                    a = x[i, k]
                    w = panel[k]
                    for v in range(NR):
                        acc[v] += a * w[v]
                for v in range(width):
                    out[i, j0 + v] = min(max(acc[v] + bias[j0 + v], ZERO), act_max)
