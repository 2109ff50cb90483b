"""The MR x NR register tile shared by the pointwise GEMM and the stem conv, written once.

A tile is MR output rows (pixels) by NR output channels. Weights are packed once into panels
of NR output channels so the tile's inner loop reads one contiguous NR-float row per step
over the reduction; the bias is packed the same way and seeds the accumulators.

The accumulators are one (MR, NR) stack matrix (stack_matrix_f32) whose shape is an LLVM
constant. tile_update's loops therefore have constant trip counts: LLVM unrolls them and keeps
the accumulators in vector registers across the reduction loop (MR * NR / 16 zmm with
AVX-512). A kernel is built for one Tile by a memoised factory whose kernel closes over MR and
NR (pointwise.pwconv_nhwc_clamp_kernel, conv.conv3x3_nchw_to_nhwc_clamp_kernel): Numba's
on-disk cache keys a closure by its cell values, so each tile has its own cache entry
(tests/test_tile_shapes.py checks this across processes). The tile code here is the same for
every tile shape; what a kernel adds is how it gathers the MR values of its A operand.
With the default tiles the reduction loops compile to the same machine code as the
hand-unrolled acc0..acc5 tiles this replaced (pointwise 6x64: 44 instructions, 24 zmm FMAs,
no stack access; stem 6x32: 36 FMAs per input row), and the logits are bit-identical.

Tile shapes measured on the pointwise layers of MobileNetV1 (AVX-512, one thread, GFLOP/s
on the 14x14x512 layer): 6x32 155, 8x32 159, 4x64 234, 6x64 231, 8x48 152, 12x32 73 (spills).
6x64 keeps 24 zmm accumulators plus 4 for the weights in the 32 registers. The stem has only
32 output channels at width 1.0, so it uses 32-wide panels.
"""
from dataclasses import dataclass

from numba import njit

from ._common import FASTMATH, activate, aligned_zeros

# Accumulator floats per tile: 32 zmm registers hold 512; twice that is already all spills,
# and it bounds the stack a tile takes per thread (4 KiB).
MAX_TILE_FLOATS = 1024


@dataclass(frozen=True)
class Tile:
    """A register tile shape: `mr` rows (pixels) by `nr` output channels (the panel width)."""

    mr: int
    nr: int

    def __post_init__(self):
        for name in ("mr", "nr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Tile.{name} must be a positive integer, got {value!r}")
        if self.mr * self.nr > MAX_TILE_FLOATS:
            raise ValueError(f"tile {self} has {self.mr * self.nr} accumulators, more than "
                             f"{MAX_TILE_FLOATS}; choose a smaller mr or nr")

    def __str__(self):
        return f"{self.mr}x{self.nr}"


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


def checked_kernel(compiled, tile, packer):
    """`compiled(x, packed, packed_bias, ...)` behind a Python check that the packed panels
    are `tile.nr` wide: a kernel indexes panel rows by its compile-time NR without bounds
    checks, so a mismatched packing would read and write past the arrays."""

    name = compiled.__name__

    def kernel(x, packed, packed_bias, *args):
        width, bias_width = packed.shape[-1], packed_bias.shape[-1]
        if width != tile.nr or bias_width != tile.nr:
            raise ValueError(f"{name} for tile {tile} got weights packed in panels of {width} "
                             f"(bias {bias_width}) channels, expected {tile.nr}; pack them "
                             f"with {packer}(..., nr={tile.nr})")
        compiled(x, packed, packed_bias, *args)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = compiled.__doc__
    kernel.compiled = compiled  # the Numba dispatcher: signatures, inspect_asm
    kernel.tile = tile
    return kernel


# Tile operations. `acc` is an (R, NR) stack matrix (R = MR for a full tile, 1 for a tail
# row), so R and NR are LLVM constants. tile_update's loops have constant trip counts: LLVM
# unrolls them and keeps the accumulators in registers across the reduction loop. tile_start
# and tile_store_clamped instead loop over a runtime count (the panel's width): Numba leaves
# LLVM's SLP vectoriser off, so a constant-count copy that small is fully unrolled into scalar
# loads and stores, while a runtime-count loop goes to the loop vectoriser. Stem at 224x224,
# 6x32 tile, one thread, best of 400: constant-count bias copy and stores (192 scalar stores)
# 0.31 ms; runtime counts (vector copies and stores) 0.17 ms; the hand-unrolled tile it
# replaces (vector bias copy, 6 x 32 scalar clamped stores) 0.25 ms. Pointwise (64-wide
# panels, long reductions) measured the same as the hand-unrolled tile.


@njit(inline="always", fastmath=FASTMATH)
def tile_start(acc, bias):
    """acc[r, :] = bias for every row r: the accumulators start at the bias.

    bias (NR,) one packed panel's bias (its length is checked against NR in Python).
    """
    rows, nr = acc.shape
    for v in range(min(nr, bias.shape[0])):
        for r in range(rows):
            acc[r, v] = bias[v]


@njit(inline="always", fastmath=FASTMATH)
def tile_update(acc, a, w):
    """acc += outer(a, w): one step over the reduction.

    a (R,) the A operand's values for the tile's rows (a stack buffer); w (>= NR,) one panel
    row. Each element gets one FMA, so its sum runs in reduction order. NR outermost with the
    rows inside, as the hand-unrolled tile was written: each weight vector is loaded once per
    step and used by R FMAs.
    """
    rows, nr = acc.shape
    for v in range(nr):
        for r in range(rows):
            acc[r, v] += a[r] * w[v]


@njit(inline="always", fastmath=FASTMATH)
def tile_store_clamped(acc, out, i0, j0, width, act_max, slope):
    """out[i0 + r, j0:j0 + width] = activate(acc[r, :width]) for every tile row r: clamp to
    [0, act_max], or LeakyReLU of `slope` (see _common.activate).

    out (rows, Cout); width = the panel's valid channels (NR except in the last panel).
    """
    for r in range(acc.shape[0]):
        store_clamped_partial(acc[r], out[i0 + r, j0:], width, act_max, slope)


@njit(inline="always", fastmath=FASTMATH)
def store_clamped_partial(acc, dst, width, act_max, slope):
    """dst[:width] = activate(acc[:width], act_max, slope)."""
    for v in range(width):
        dst[v] = activate(acc[v], act_max, slope)
