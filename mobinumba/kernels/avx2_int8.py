"""int8 pointwise GEMM on plain AVX2: `vpmaddwd`, 16 int16 x int16 multiplies summed in
pairs into 8 int32 lanes per ymm instruction.

Only imported when the compile target has AVX2 but no VNNI (qtargets.int8_dot_product is
"avx2"): LLVM cannot select `llvm.x86.avx2.pmadd.wd` for a target without AVX2. On such a CPU
(Haswell .. Skylake client, Zen 1-3) the portable kernel (qpointwise.py) vectorises to
`vpmulld`, one 32-bit product per lane and instruction, 10 cycles of latency on Haswell;
`vpmaddwd` does two 16-bit products per lane and adds them, 5 cycles.

vpmaddwd(a, b) gives lane i = a[2i] * b[2i] + a[2i+1] * b[2i+1] (int16 in, int32 out). The
tile (Avx2Tile) is MR pixels x NR = vectors * 8 output channels: per step over 2 input
channels it broadcasts each pixel's 2 activations (sign-extended int8, one int32 holding
two int16) to all lanes and multiplies them with `vectors` weight vectors, each holding 8
channels x 2 inputs as int16 (pack_avx2_weights). |products| <= 128 * 127, so each pair sum
and every accumulator is exact (ops/base.int8_bias bounds the int32 sums). The input zero
point is folded into the bias as in the portable kernel: sum (x - zp) w = sum x w - zp sum w.
Requantize + clamp + store are the portable kernel's (qcommon.requantize_row): bit-exact
with it and with tests/qreference.py.
"""
import functools
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import CACHE
from .qcommon import aligned_array, requantize_row, stack_matrix_i32

_LANES = 8  # int32 lanes of a ymm register


@intrinsic
def pmaddwd_update(typingctx, acc, index, pair, weights, offset):
    """acc.flat[index:index + 8] += vpmaddwd(broadcast(pair), the 16 int16 of `weights` at
    element `offset`): lane i += lo16(pair) * w[2i] + hi16(pair) * w[2i + 1]. `pair` is an
    int32 holding two int16 (low half first)."""
    if not (isinstance(acc, types.Array) and acc.dtype == types.int32
            and isinstance(weights, types.Array) and weights.dtype == types.int16):
        return None

    def codegen(context, builder, signature, args):
        acc_value, index_value, pair_value, weights_value, offset_value = args
        pair_value = context.cast(builder, pair_value, signature.args[2], types.int32)
        i16, i32 = ir.IntType(16), ir.IntType(32)
        lanes32, lanes16 = ir.VectorType(i32, _LANES), ir.VectorType(i16, 2 * _LANES)
        acc_array = context.make_array(signature.args[0])(context, builder, acc_value)
        acc_address = builder.bitcast(builder.gep(acc_array.data, [index_value]),
                                      lanes32.as_pointer())
        weight_array = context.make_array(signature.args[3])(context, builder, weights_value)
        weight_address = builder.bitcast(builder.gep(weight_array.data, [offset_value]),
                                         lanes16.as_pointer())
        single = builder.insert_element(ir.Constant(lanes32, None), pair_value,
                                        ir.Constant(i32, 0))
        broadcast = builder.shuffle_vector(single, ir.Constant(lanes32, None),
                                           ir.Constant(lanes32, [0] * _LANES))
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(lanes32, [lanes16, lanes16]),
            "llvm.x86.avx2.pmadd.wd")
        products = builder.call(function, [builder.bitcast(broadcast, lanes16),
                                           builder.load(weight_address, align=2)])
        total = builder.add(builder.load(acc_address, align=4), products)
        builder.store(total, acc_address, align=4)
        return context.get_dummy_value()

    return types.none(acc, index, pair, weights, offset), codegen


def pack_avx2_weights(weight, nr):
    """OIHW int8 (Cout, Cin, 1, 1) -> (P, ceil(Cin / 2), nr * 2) int16 panels: in panel p,
    row g, element [c*2 + j] holds w[p*nr + c, 2*g + j] (0 past Cout and Cin), so the vector
    of 16 int16 at element v*16 holds channels v*8 .. v*8+7, two inputs each."""
    c_out, c_in = weight.shape[:2]
    panels = (c_out + nr - 1) // nr
    groups = (c_in + 1) // 2
    matrix = np.zeros((panels * nr, groups * 2), np.int16)  # (Cout padded, Cin padded)
    matrix[:c_out, :c_in] = weight.reshape(c_out, c_in)
    # (P, NR, G, 2) -> (P, G, NR, 2): each group's NR channels x 2 inputs contiguous.
    packed = matrix.reshape(panels, nr, groups, 2).transpose(0, 2, 1, 3)
    return aligned_array(packed.reshape(panels, groups, nr * 2), np.int16)


@dataclass(frozen=True)
class Avx2Tile:
    """The vpmaddwd tile: `mr` pixels x `vectors` accumulator ymm of 8 int32."""

    mr: int
    vectors: int

    @property
    def nr(self):
        """Output channels per panel."""
        return self.vectors * _LANES


# 16 ymm registers: 6 x 2 = 12 accumulators + 2 weight vectors + 1 broadcast.
AVX2_TILE = Avx2Tile(6, 2)


@functools.cache
def qpwconv_nhwc_avx2_kernel(tile=AVX2_TILE):
    """qpwconv_nhwc_avx2 compiled for `tile` (an Avx2Tile), once per tile; its weights come
    from pack_avx2_weights(weight, tile.nr)."""
    mr, vectors, nr = tile.mr, tile.vectors, tile.nr  # closure constants

    @njit(parallel=True, cache=CACHE)
    def qpwconv_nhwc_avx2(x, packed, bias, table, out_zero_point, low, high, out):
        """out = requantize(x @ W + bias) with vpmaddwd.

        x (M, Cin) int8; packed (P, ceil(Cin/2), NR*2) int16 from pack_avx2_weights; bias
        (Cout,) int32 with the input zero point folded in (as qpointwise.qpwconv_nhwc);
        table (5, Cout) int32 from qcommon.requantize_table; out (M, Cout) int8.
        """
        rows, depth = x.shape
        c_out = out.shape[1]
        panels, groups = packed.shape[0], packed.shape[1]
        # The broadcast operand, once per pixel rather than once per panel (built in the
        # tile loop it cost more than the multiplies: 0.85-1.0x the portable kernel on a
        # haswell build, 2.0-2.6x once hoisted): pairs[m, g] = x[m, 2g] | x[m, 2g+1] << 16,
        # each sign-extended to int16, 0 past Cin.
        pairs = np.empty((rows, groups), np.int32)  # (M, G)
        for m in prange(rows):
            for g in range(depth // 2):
                pairs[m, g] = ((np.int32(x[m, 2 * g]) & 0xFFFF)
                               | (np.int32(x[m, 2 * g + 1]) << 16))
            if depth % 2:
                pairs[m, groups - 1] = np.int32(x[m, depth - 1]) & 0xFFFF
        row_blocks = (rows + mr - 1) // mr
        for task in prange(panels * row_blocks):
            p = task // row_blocks
            i0 = (task - p * row_blocks) * mr
            j0 = p * nr
            width = min(nr, c_out - j0)
            count = min(mr, rows - i0)
            panel = packed[p]  # (G, NR*2)
            acc = stack_matrix_i32(mr, nr)
            for r in range(mr):
                for v in range(nr):
                    acc[r, v] = bias[j0 + v] if v < width else 0
            for g in range(groups):
                w = panel[g]  # (NR*2,)
                for r in range(mr):
                    # Rows past the end repeat the block's first row (results not stored).
                    pair = pairs[i0 + r if r < count else i0, g]
                    for v in range(vectors):
                        pmaddwd_update(acc, r * nr + v * _LANES, pair, w, v * 2 * _LANES)
            for r in range(count):
                requantize_row(acc[r], table, j0, out_zero_point, low, high,
                               width, out[i0 + r, j0:])

    return qpwconv_nhwc_avx2
