"""Pointwise (1x1) convolution in NHWC: a GEMM of (pixels, Cin) by (Cin, Cout).

The activations of a layer, viewed as a (M = N*H*W, K = Cin) row-major matrix, multiply the
packed weights. The output is computed in MR x NR tiles whose accumulators are MR stack
buffers of NR floats: once LLVM unrolls the NR loop they become vector registers (four zmm
each with AVX-512), so each step over K is MR broadcasts, NR / vector-width loads and
MR * NR / vector-width FMAs. Accumulators start at the bias; the epilogue clamps and stores
a whole NR-wide row with vector instructions when the panel is full.
"""
from numba import njit, prange

from ._common import CACHE, FASTMATH, stack_buffer_f32
from ._tile import MR, pack_gemm_weights, store_clamped, store_clamped_partial

NR = 64  # output channels per tile = the width of one packed weight panel (4 zmm)


def pack_pointwise_weights(weight, bias):
    """OIHW (Cout, Cin, 1, 1) and (Cout,) -> GEMM panels (P, Cin, NR), (P, NR)."""
    c_out, c_in = weight.shape[:2]
    return pack_gemm_weights(weight.reshape(c_out, c_in).T, bias, NR)


@njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
def pwconv_nhwc_clamp(x, packed, packed_bias, act_max, out):
    """out = clamp(x @ W + bias, 0, act_max).

    x (M, Cin) = NHWC activations flattened over pixels; packed (P, Cin, NR) and
    packed_bias (P, NR) from pack_pointwise_weights; out (M, Cout).
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
        bias = packed_bias[p]  # (NR,)
        if i0 + MR <= rows:
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
            if width == NR:
                store_clamped(acc0, out[i0, j0:j0 + NR], act_max)
                store_clamped(acc1, out[i0 + 1, j0:j0 + NR], act_max)
                store_clamped(acc2, out[i0 + 2, j0:j0 + NR], act_max)
                store_clamped(acc3, out[i0 + 3, j0:j0 + NR], act_max)
                store_clamped(acc4, out[i0 + 4, j0:j0 + NR], act_max)
                store_clamped(acc5, out[i0 + 5, j0:j0 + NR], act_max)
            else:
                store_clamped_partial(acc0, out[i0, j0:], width, act_max)
                store_clamped_partial(acc1, out[i0 + 1, j0:], width, act_max)
                store_clamped_partial(acc2, out[i0 + 2, j0:], width, act_max)
                store_clamped_partial(acc3, out[i0 + 3, j0:], width, act_max)
                store_clamped_partial(acc4, out[i0 + 4, j0:], width, act_max)
                store_clamped_partial(acc5, out[i0 + 5, j0:], width, act_max)
        else:
            # Fewer than MR rows left: one row at a time.
            for i in range(i0, rows):
                acc = stack_buffer_f32(NR)
                for v in range(NR):
                    acc[v] = bias[v]
                for k in range(depth):
                    a = x[i, k]
                    w = panel[k]
                    for v in range(NR):
                        acc[v] += a * w[v]
                store_clamped_partial(acc, out[i, j0:], width, act_max)
