"""int8 pointwise GEMM on VNNI: `vpdpbusd`, 64 u8 x s8 multiply-adds per zmm instruction.

Only imported when the compile target has AVX-512 VNNI or AVX-VNNI
(qtargets.int8_dot_product): LLVM cannot select the intrinsic `llvm.x86.avx512.vpdpbusd.512`
(zmm) or `.256` (ymm; VEX-encoded AVX-VNNI when AVX-512 VL is absent) for other CPUs.

vpdpbusd(acc, a, b) adds to each int32 lane of acc the dot product of 4 unsigned bytes of a
with 4 signed bytes of b. The tile (VnniTile) is MR pixels x NR = vectors * lanes output
channels: per step over 4 input channels it broadcasts each pixel's 4 activation bytes to all
lanes and multiplies them with `vectors` weight vectors (lanes channels x 4 inputs each).

Activations are int8; vpdpbusd wants them unsigned, so each broadcast is XORed with 0x80
(x + 128 as u8) and the bias absorbs the difference once, at load time:
    sum (x - zp) w = sum (x + 128) w - (128 + zp) sum w.
The accumulators are one (MR, NR) int32 stack matrix (qcommon.stack_matrix_i32) with
constant shape: after unrolling, LLVM keeps them in vector registers across the K loop
(checked in the assembly: 24 vpdpbusd, 4 weight loads, 6 broadcasts, no stack access).
"""
import functools
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import CACHE
from .qcommon import aligned_array, requantize_tile, stack_matrix_i32

_U8_SHIFT = np.int32(-2139062144)  # 0x80808080 as int32: +128 on each of 4 bytes, as XOR


def _data_pointer(context, builder, array_type, array_value, element_type):
    array = context.make_array(array_type)(context, builder, array_value)
    return builder.bitcast(array.data, element_type.as_pointer())


@intrinsic
def load_i32_unaligned(typingctx, array, byte_offset):
    """The 4 bytes of an int8 array at `byte_offset` as one int32 (an unaligned load)."""
    if not (isinstance(array, types.Array) and array.dtype == types.int8):
        return None

    def codegen(context, builder, signature, args):
        data = _data_pointer(context, builder, signature.args[0], args[0], ir.IntType(8))
        address = builder.gep(data, [args[1]])
        return builder.load(builder.bitcast(address, ir.IntType(32).as_pointer()), align=1)

    return types.int32(array, byte_offset), codegen


@intrinsic
def dpbusd_update(typingctx, acc, index, a, weights, byte_offset, lanes):
    """acc.flat[index:index + lanes] = vpdpbusd(those int32 lanes, broadcast(a), the
    4 * lanes bytes of `weights` at `byte_offset`): each lane += u8x4(a) . s8x4(its 4 weight
    bytes). `lanes` must be a literal: 16 (zmm, AVX-512 VNNI) or 8 (ymm, which LLVM encodes
    with AVX-VNNI where AVX-512 VL is absent). One module-level intrinsic, not one per
    width: a kernel closing over an intrinsic object never hit Numba's disk cache (a new
    object in every process, so a new cache key: 8 s of compilation at every start)."""
    if not (isinstance(acc, types.Array) and acc.dtype == types.int32
            and isinstance(weights, types.Array) and weights.dtype == types.int8
            and isinstance(lanes, types.IntegerLiteral) and lanes.literal_value in (8, 16)):
        return None
    width = lanes.literal_value
    name = f"llvm.x86.avx512.vpdpbusd.{32 * width}"

    def codegen(context, builder, signature, args):
        acc_value, index_value, a_value, weights_value, offset_value, _ = args
        a_value = context.cast(builder, a_value, signature.args[2], types.int32)  # low 32 bits
        i32, vector = ir.IntType(32), ir.VectorType(ir.IntType(32), width)
        acc_data = _data_pointer(context, builder, signature.args[0], acc_value, i32)
        acc_address = builder.bitcast(builder.gep(acc_data, [index_value]),
                                      vector.as_pointer())
        weight_data = _data_pointer(context, builder, signature.args[3], weights_value,
                                    ir.IntType(8))
        weight_address = builder.bitcast(builder.gep(weight_data, [offset_value]),
                                         vector.as_pointer())
        single = builder.insert_element(ir.Constant(vector, None), a_value,
                                        ir.Constant(i32, 0))
        broadcast = builder.shuffle_vector(single, ir.Constant(vector, None),
                                           ir.Constant(vector, [0] * width))
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector, vector, vector]), name)
        result = builder.call(function, [builder.load(acc_address, align=4), broadcast,
                                         builder.load(weight_address, align=1)])
        builder.store(result, acc_address, align=4)
        return context.get_dummy_value()

    return types.none(acc, index, a, weights, byte_offset, lanes), codegen


def pack_vnni_weights(weight, bias, nr):
    """OIHW int8 (Cout, Cin, 1, 1), int32 (Cout,) -> (P, ceil(Cin / 4), nr * 4) int8 panels
    and (P, nr) int32 bias: in panel p, row g, bytes [c*4 + j] hold w[p*nr + c, 4*g + j]
    (0 past Cout and Cin), so a vector of L lanes at byte v*4L holds channels v*L .. v*L+L-1."""
    c_out, c_in = weight.shape[:2]
    panels = (c_out + nr - 1) // nr
    groups = (c_in + 3) // 4
    matrix = np.zeros((panels * nr, groups * 4), np.int8)  # (Cout padded, Cin padded)
    matrix[:c_out, :c_in] = weight.reshape(c_out, c_in)
    # (P, NR, G, 4) -> (P, G, NR, 4): each group's NR channels x 4 inputs contiguous.
    packed = matrix.reshape(panels, nr, groups, 4).transpose(0, 2, 1, 3)
    packed_bias = np.zeros(panels * nr, np.int32)
    packed_bias[:c_out] = bias
    return (aligned_array(packed.reshape(panels, groups, nr * 4), np.int8),
            aligned_array(packed_bias.reshape(panels, nr), np.int32))


@dataclass(frozen=True)
class VnniTile:
    """The vpdpbusd tile: `mr` pixels x `vectors` accumulator vectors of `lanes` int32."""

    mr: int
    vectors: int
    lanes: int

    @property
    def nr(self):
        """Output channels per panel."""
        return self.vectors * self.lanes


# AVX-512 VNNI (Zen 4/5, Ice Lake and later Xeons): 32 zmm, 6 x 4 = 24 accumulators + 4
# weight vectors + 1 broadcast. AVX-VNNI without AVX-512 (Alder Lake and later cores): 16 ymm,
# 6 x 2 = 12 accumulators + 2 weight vectors + 1 broadcast.
TILES = {"avx512vnni": VnniTile(6, 4, 16), "avxvnni": VnniTile(6, 2, 8)}


@njit(inline="always")
def vnni_tile(x, i0, count, panel, start, table, j0, width, out_zero_point, low, high, out,
              mr, vectors, lanes, nr):
    """out[i0:i0 + count, j0:j0 + width] = requantize(x[i0:i0 + count] @ panel + start): one
    register tile of the vpdpbusd GEMM (shared by qpwconv_nhwc_vnni and the fused block of
    kernels/vnni_block.py). x (M, Cin) int8; panel (G, NR*4) int8 and start (NR,) int32, one
    panel of pack_vnni_weights; table (5, Cout) int32 (qcommon.requantize_table); out
    (M, Cout) int8; mr, vectors, lanes, nr: the VnniTile's, as literals."""
    depth = x.shape[1]
    full_groups = depth // 4
    tail = depth - 4 * full_groups
    acc = stack_matrix_i32(mr, nr)
    # A runtime trip count: the loop vectoriser copies it with vector stores (a constant one
    # is unrolled into 384 scalar stores, which cost more than the K=32 layer's GEMM).
    for v in range(min(nr, start.shape[0])):
        for r in range(mr):
            acc[r, v] = start[v]
    for g in range(full_groups):
        w = panel[g]  # (NR*4,)
        for r in range(mr):
            # Rows past the end repeat the block's first row (results not stored).
            a = load_i32_unaligned(x[i0 + r if r < count else i0], 4 * g) ^ _U8_SHIFT
            for v in range(vectors):
                dpbusd_update(acc, r * nr + v * lanes, a, w, v * 4 * lanes, lanes)
    if tail:
        w = panel[full_groups]
        for r in range(mr):
            source = x[i0 + r if r < count else i0]
            a = np.int32(0)
            for j in range(tail):
                a |= ((np.int32(source[4 * full_groups + j]) + 128) & 255) << (8 * j)
            for v in range(vectors):
                dpbusd_update(acc, r * nr + v * lanes, a, w, v * 4 * lanes, lanes)
    requantize_tile(acc, table, j0, out_zero_point, low, high, width, out, i0, count, mr, nr)


@functools.cache
def qpwconv_nhwc_vnni_kernel(tile):
    """qpwconv_nhwc_vnni compiled for `tile` (a VnniTile), once per tile; its weights come
    from pack_vnni_weights(weight, bias, tile.nr)."""
    mr, vectors, lanes, nr = tile.mr, tile.vectors, tile.lanes, tile.nr  # closure constants

    @njit(parallel=True, cache=CACHE)
    def qpwconv_nhwc_vnni(x, packed, packed_bias, table, out_zero_point, low, high, out):
        """out = requantize(x @ W + bias) with vpdpbusd.

        x (M, Cin) int8; packed (P, ceil(Cin/4), NR*4) int8 and packed_bias (P, NR) int32
        from pack_vnni_weights (the bias with (128 + input zero point) * sum_k w folded in,
        ops/pointwise.py); table (5, Cout) int32 from qcommon.requantize_table;
        out (M, Cout) int8.
        """
        rows = x.shape[0]
        c_out = out.shape[1]
        panels = packed.shape[0]
        row_blocks = (rows + mr - 1) // mr
        for task in prange(panels * row_blocks):
            p = task // row_blocks
            i0 = (task - p * row_blocks) * mr
            j0 = p * nr
            vnni_tile(x, i0, min(mr, rows - i0), packed[p], packed_bias[p], table, j0,
                      min(nr, c_out - j0), out_zero_point, low, high, out, mr, vectors, lanes,
                      nr)

    return qpwconv_nhwc_vnni
