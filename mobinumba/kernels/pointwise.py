"""Pointwise (1x1) convolution in NHWC: a GEMM of (pixels, Cin) by (Cin, Cout).

The activations of a layer, viewed as a (M = N*H*W, K = Cin) row-major matrix, multiply the
packed weights. The output is computed in MR x NR register tiles (_tile.py): each step over K
is MR broadcasts, NR / vector-width loads and MR * NR / vector-width FMAs. Accumulators start
at the bias; the epilogue clamps and stores a whole NR-wide row with vector instructions when
the panel is full.

The kernel is built per Tile by pwconv_nhwc_clamp_kernel; the module-level
pwconv_nhwc_clamp and pack_pointwise_weights use TILE, the compile target's pointwise tile
(targets.py: 6x64 with AVX-512).
"""
import functools

from numba import njit, prange

from ._common import CACHE, FASTMATH, stack_buffer_f32, stack_matrix_f32
from ._tile import checked_kernel, pack_gemm_weights, tile_start, tile_store_clamped, tile_update
from .targets import target_tiles

# The compile target's tile (targets.TILES): with AVX-512, 24 zmm accumulators + 4 for a
# weight row of the 32 registers (measured in _tile.py).
TILE = target_tiles().pointwise

# Panel widths from which a 1 x NR row tile is vectorised. LLVM fully unrolls a shorter
# constant-count tile loop into scalar code before its loop vectoriser sees it (Numba leaves
# the SLP vectoriser off): one leftover row through a 1 x 32 tile built for haswell cost
# 13 rows' time (49 x 1024 -> 1024: median 1.09 ms vs 0.86 for 48 rows), while 1 x 48 (SSE) and
# 1 x 64 (AVX-512) rows run at vector speed. Narrower panels take their leftover rows in
# one shifted MR-row tile instead (docs/performance.md, "Tiles per target").
VECTOR_ROW_NR = 48


def pack_pointwise_weights(weight, bias, nr=TILE.nr):
    """OIHW (Cout, Cin, 1, 1) and (Cout,) -> GEMM panels (P, Cin, nr), (P, nr)."""
    c_out, c_in = weight.shape[:2]
    return pack_gemm_weights(weight.reshape(c_out, c_in).T, bias, nr)


@functools.cache
def pwconv_nhwc_clamp_kernel(tile):
    """pwconv_nhwc_clamp compiled for `tile` (a Tile), once per tile shape.

    Its weights must come from pack_pointwise_weights(weight, bias, tile.nr); other panel
    widths are refused with a ValueError before the kernel runs.
    """
    mr, nr = tile.mr, tile.nr  # closure constants: Numba's cache key includes them
    shift_leftover = nr < VECTOR_ROW_NR

    @njit(parallel=True, fastmath=FASTMATH, cache=CACHE)
    def pwconv_nhwc_clamp(x, packed, packed_bias, act_max, out, slope=None):
        """out = clamp(x @ W + bias, 0, act_max), or LeakyReLU of `slope` capped at act_max
        when a slope is given (_common.activate).

        x (M, Cin) = NHWC activations flattened over pixels; packed (P, Cin, NR) and
        packed_bias (P, NR) from pack_pointwise_weights; out (M, Cout).
        """
        rows = x.shape[0]
        c_out = out.shape[1]
        panels = packed.shape[0]
        # Row blocks of MR rows; the rows past the last full block either go one at a time
        # through a 1 x NR tile, or (shift_leftover) in one more MR-row tile ending at the
        # last row, done by the last block's task: it recomputes a few of that block's rows
        # (identical values, same task, so no other thread writes them).
        full_blocks = rows // mr
        leftover = rows - full_blocks * mr
        shifted = shift_leftover and full_blocks > 0 and leftover > 0
        row_blocks = full_blocks if shifted else (rows + mr - 1) // mr  # tasks per panel
        # Tasks enumerate (panel, row block) with the row block fastest, so a thread's
        # contiguous share of tasks walks down the rows reusing one weight panel from cache.
        for task in prange(panels * row_blocks):
            p = task // row_blocks
            block = task - p * row_blocks
            i0 = block * mr
            j0 = p * nr
            width = min(nr, c_out - j0)
            panel = packed[p]  # (Cin, NR)
            bias = packed_bias[p]  # (NR,)
            if i0 + mr > rows:
                # Fewer than MR rows left: one row at a time, as a 1 x NR tile.
                for i in range(i0, rows):
                    row_acc = stack_matrix_f32(1, nr)
                    _gemm_tile(row_acc, stack_buffer_f32(1), x, i, panel, bias)
                    tile_store_clamped(row_acc, out, i, j0, width, act_max, slope)
                continue
            tiles = 2 if shifted and block == full_blocks - 1 else 1
            for t in range(tiles):
                start = i0 if t == 0 else rows - mr
                acc = stack_matrix_f32(mr, nr)
                _gemm_tile(acc, stack_buffer_f32(mr), x, start, panel, bias)
                tile_store_clamped(acc, out, start, j0, width, act_max, slope)

    return checked_kernel(pwconv_nhwc_clamp, tile, "pack_pointwise_weights")


@njit(inline="always", fastmath=FASTMATH)
def _gemm_tile(acc, a, x, i0, panel, bias):
    """acc (R, NR) = bias + x[i0:i0 + R] @ panel, with a (R,) as the A column buffer.

    x (M, Cin); panel (Cin, NR); bias (NR,).
    """
    tile_start(acc, bias)
    for k in range(x.shape[1]):
        for r in range(acc.shape[0]):
            a[r] = x[i0 + r, k]
        tile_update(acc, a, panel[k])


pwconv_nhwc_clamp = pwconv_nhwc_clamp_kernel(TILE)
