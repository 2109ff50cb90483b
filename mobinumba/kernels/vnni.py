"""int8 pointwise GEMM on AVX-512 VNNI: `vpdpbusd`, 64 u8 x s8 multiply-adds per instruction.

Only imported when the compile target has AVX-512 VNNI (qtargets.int8_dot_product): the LLVM
intrinsic `llvm.x86.avx512.vpdpbusd.512` cannot be selected for other CPUs.

vpdpbusd(acc, a, b) adds to each of the 16 int32 lanes of acc the dot product of 4 unsigned
bytes of a with 4 signed bytes of b. The tile is MR pixels x NR = 16 * NV output channels:
per step over 4 input channels it broadcasts each pixel's 4 activation bytes to all lanes and
multiplies them with NV 64-byte weight vectors (16 channels x 4 input channels each).

Activations are int8; vpdpbusd wants them unsigned, so each broadcast is XORed with 0x80
(x + 128 as u8) and the bias absorbs the difference once, at load time:
    sum (x - zp) w = sum (x + 128) w - (128 + zp) sum w.
The accumulators are one (MR, NR) int32 stack matrix (qcommon.stack_matrix_i32) with
constant shape: after unrolling, LLVM keeps them in zmm registers across the K loop.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import CACHE
from .qcommon import aligned_array, requantize, stack_matrix_i32

# 6 pixels x 64 channels: 24 zmm accumulators + 4 weight vectors + 1 broadcast of the 32.
VNNI_MR, VNNI_NV = 6, 4
VNNI_NR = 16 * VNNI_NV
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
def dpbusd_update(typingctx, acc, index, a, weights, byte_offset):
    """acc.flat[index:index + 16] = vpdpbusd(those 16 int32, broadcast(a), the 64 bytes of
    `weights` at `byte_offset`): 16 lanes += u8x4(a) . s8x4(weight lane)."""
    if not (isinstance(acc, types.Array) and acc.dtype == types.int32
            and isinstance(weights, types.Array) and weights.dtype == types.int8):
        return None

    def codegen(context, builder, signature, args):
        acc_value, index_value, a_value, weights_value, offset_value = args
        a_value = context.cast(builder, a_value, signature.args[2], types.int32)  # low 32 bits
        i32, vector = ir.IntType(32), ir.VectorType(ir.IntType(32), 16)
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
                                           ir.Constant(vector, [0] * 16))
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector, vector, vector]),
            "llvm.x86.avx512.vpdpbusd.512")
        result = builder.call(function, [builder.load(acc_address, align=4), broadcast,
                                         builder.load(weight_address, align=1)])
        builder.store(result, acc_address, align=4)
        return context.get_dummy_value()

    return types.none(acc, index, a, weights, byte_offset), codegen


def pack_vnni_weights(weight, bias):
    """OIHW int8 (Cout, Cin, 1, 1), int32 (Cout,) -> (P, ceil(Cin / 4), NR * 4) int8 panels
    and (P, NR) int32 bias: in panel p, row g, bytes [v*64 + c*4 + j] hold
    w[p*NR + v*16 + c, 4*g + j] (0 past Cout and Cin)."""
    c_out, c_in = weight.shape[:2]
    panels = (c_out + VNNI_NR - 1) // VNNI_NR
    groups = (c_in + 3) // 4
    matrix = np.zeros((panels * VNNI_NR, groups * 4), np.int8)  # (Cout padded, Cin padded)
    matrix[:c_out, :c_in] = weight.reshape(c_out, c_in)
    # (P, NR, G, 4) -> (P, G, NR, 4): each group's NR channels x 4 inputs contiguous.
    packed = matrix.reshape(panels, VNNI_NR, groups, 4).transpose(0, 2, 1, 3)
    packed_bias = np.zeros(panels * VNNI_NR, np.int32)
    packed_bias[:c_out] = bias
    return (aligned_array(packed.reshape(panels, groups, VNNI_NR * 4), np.int8),
            aligned_array(packed_bias.reshape(panels, VNNI_NR), np.int32))


@njit(parallel=True, cache=CACHE)
def qpwconv_nhwc_vnni(x, packed, packed_bias, multiplier, shift, out_zero_point, low, high,
                      out):
    """out = requantize(x @ W + bias) with vpdpbusd.

    x (M, Cin) int8; packed (P, ceil(Cin/4), NR*4) int8 and packed_bias (P, NR) int32 from
    pack_vnni_weights (the bias with (128 + input zero point) * sum_k w folded in,
    ops/pointwise.py); multiplier, shift (Cout,) int32; out (M, Cout) int8.
    """
    rows, depth = x.shape
    c_out = out.shape[1]
    panels = packed.shape[0]
    full_groups = depth // 4
    tail = depth - 4 * full_groups
    row_blocks = (rows + VNNI_MR - 1) // VNNI_MR
    for task in prange(panels * row_blocks):
        p = task // row_blocks
        i0 = (task - p * row_blocks) * VNNI_MR
        j0 = p * VNNI_NR
        width = min(VNNI_NR, c_out - j0)
        count = min(VNNI_MR, rows - i0)
        panel = packed[p]  # (G, NR*4)
        acc = stack_matrix_i32(VNNI_MR, VNNI_NR)
        start = packed_bias[p]  # (NR,)
        # A runtime trip count: the loop vectoriser copies it in zmm stores (a constant one
        # is unrolled into 384 scalar stores, which cost more than the K=32 layer's GEMM).
        for v in range(min(VNNI_NR, start.shape[0])):
            for r in range(VNNI_MR):
                acc[r, v] = start[v]
        for g in range(full_groups):
            w = panel[g]  # (NR*4,)
            for r in range(VNNI_MR):
                # Rows past the end repeat the block's first row (results not stored).
                a = load_i32_unaligned(x[i0 + r if r < count else i0], 4 * g) ^ _U8_SHIFT
                for v in range(VNNI_NV):
                    dpbusd_update(acc, r * VNNI_NR + v * 16, a, w, v * 64)
        if tail:
            w = panel[full_groups]
            for r in range(VNNI_MR):
                source = x[i0 + r if r < count else i0]
                a = np.int32(0)
                for j in range(tail):
                    a |= ((np.int32(source[4 * full_groups + j]) + 128) & 255) << (8 * j)
                for v in range(VNNI_NV):
                    dpbusd_update(acc, r * VNNI_NR + v * 16, a, w, v * 64)
        for r in range(count):
            dst = out[i0 + r, j0:]
            for v in range(width):
                c = j0 + v
                dst[v] = requantize(acc[r, v], multiplier[c], shift[c], out_zero_point, low,
                                    high)
