"""The register tile shared by the pointwise GEMM and the stem conv.

A tile is MR output rows (pixels) by NR output channels. Weights are packed once into panels
of NR output channels so the tile's inner loop reads one contiguous NR-float row per step
over the reduction; the bias is packed the same way and seeds the accumulators.
"""
import numpy as np
from numba import njit

from ._common import FASTMATH, ZERO

MR = 6   # rows (pixels) per tile: 6 x 2 zmm accumulators leave registers for the weights
NR = 32  # output channels per tile = the width of one packed weight panel


def pack_gemm_weights(matrix, bias):
    """(K, Cout) weights and (Cout,) bias -> panels (ceil(Cout/NR), K, NR), (ceil(Cout/NR), NR).

    Panel p holds output channels [p*NR, p*NR + NR) for every reduction index, zero-padded
    past Cout, so the tile loop reads one contiguous NR-float row per step over K.
    """
    depth, c_out = matrix.shape
    panels = (c_out + NR - 1) // NR
    packed = np.zeros((panels, depth, NR), dtype=np.float32)
    packed_bias = np.zeros((panels, NR), dtype=np.float32)
    for p in range(panels):
        columns = slice(p * NR, min((p + 1) * NR, c_out))
        packed[p, :, :columns.stop - columns.start] = matrix[:, columns]
        packed_bias[p, :columns.stop - columns.start] = bias[columns]
    return packed, packed_bias


@njit(inline="always", fastmath=FASTMATH)
def store_clamped(acc, dst, act_max):
    """dst[:NR] = clamp(acc, 0, act_max): a fixed-length loop LLVM turns into vector stores."""
    for v in range(NR):
        dst[v] = min(max(acc[v], ZERO), act_max)


@njit(inline="always", fastmath=FASTMATH)
def store_clamped_partial(acc, dst, width, act_max):
    """dst[:width] = clamp(acc[:width], 0, act_max), for the last, partial panel."""
    for v in range(width):
        dst[v] = min(max(acc[v], ZERO), act_max)
