"""The register tile shared by the pointwise GEMM and the stem conv.

A tile is MR output rows (pixels) by NR output channels. Weights are packed once into panels
of NR output channels so the tile's inner loop reads one contiguous NR-float row per step
over the reduction; the bias is packed the same way and seeds the accumulators.

Tile shapes measured on the pointwise layers of MobileNetV1 (AVX-512, one thread, GFLOP/s
on the 14x14x512 layer): 6x32 155, 8x32 159, 4x64 234, 6x64 231, 8x48 152, 12x32 73 (spills).
6x64 keeps 24 zmm accumulators plus 4 for the weights in the 32 registers. The stem has only
32 output channels at width 1.0, so it uses 32-wide panels.
"""
from numba import njit

from ._common import FASTMATH, ZERO, aligned_zeros

MR = 6  # rows (pixels) per tile


def pack_gemm_weights(matrix, bias, panel_width):
    """(K, Cout) weights, (Cout,) bias -> panels (P, K, panel_width), (P, panel_width).

    P = ceil(Cout / panel_width). Panel p holds output channels [p*w, p*w + w) for every
    reduction index, zero-padded past Cout, so the tile loop reads one contiguous row of
    panel_width floats per step over K.
    """
    depth, c_out = matrix.shape
    panels = (c_out + panel_width - 1) // panel_width
    packed = aligned_zeros((panels, depth, panel_width))
    packed_bias = aligned_zeros((panels, panel_width))
    for p in range(panels):
        columns = slice(p * panel_width, min((p + 1) * panel_width, c_out))
        packed[p, :, :columns.stop - columns.start] = matrix[:, columns]
        packed_bias[p, :columns.stop - columns.start] = bias[columns]
    return packed, packed_bias


@njit(inline="always", fastmath=FASTMATH)
def store_clamped(acc, dst, act_max):
    """dst[:len(acc)] = clamp(acc, 0, act_max).

    acc is a stack buffer of compile-time length, so LLVM sees a constant trip count and
    emits whole-vector max/min/stores.
    """
    for v in range(acc.shape[0]):
        dst[v] = min(max(acc[v], ZERO), act_max)


@njit(inline="always", fastmath=FASTMATH)
def store_clamped_partial(acc, dst, width, act_max):
    """dst[:width] = clamp(acc[:width], 0, act_max), for the last, partial panel."""
    for v in range(width):
        dst[v] = min(max(acc[v], ZERO), act_max)
