"""What every int8 kernel shares: TFLite's requantization, an int32 stack tile, int8 buffers.

requantize() is TFLite's MultiplyByQuantizedMultiplier with its default (double) rounding
(kernels/internal/common.h: SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT),
plus the output zero point and the activation clamp: the fused epilogue of every int8 kernel.
It is written in int64 so that C's int32 arithmetic (and its truncating division) is
reproduced exactly; tests/qreference.py checks it against an independent NumPy version.

Only imported when an int8 model is used: float32 models never compile these kernels.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import ALIGNMENT

_ONE_30 = np.int64(1 << 30)


# Written without branches (selects, arithmetic shifts), so that LLVM vectorises an epilogue
# loop over channels: with branches the scalar requantize took ~8 ns per output (6 ms of the
# stem's 112x112x32 outputs at 224x224).


@njit(inline="always")
def rounding_doubling_high_mul(a, b):
    """SaturatingRoundingDoublingHighMul(int32 a, int32 b): the high 32 bits of 2ab,
    rounded to nearest, as int64. b >= 0 here, so the saturating case (a = b = INT32_MIN)
    never arises.

    gemmlowp adds a nudge (2^30, or 1 - 2^30 when ab < 0) and divides by 2^31 truncating
    toward zero. For ab < 0 that is ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31),
    the same expression as for ab >= 0: one add and one arithmetic shift (halves of a
    negative ab round toward zero, as gemmlowp's do). 3 vector operations instead of 9:
    the epilogue bounds the early layers (docs/performance.md).
    """
    return (np.int64(a) * np.int64(b) + _ONE_30) >> 31


@njit(inline="always")
def rounding_divide_by_pot(x, exponent):
    """RoundingDivideByPOT: x / 2^exponent rounded to nearest, halves away from zero, for
    x within int32 (held in int64) and 0 <= exponent <= 31.

    TFLite rounds up when the remainder exceeds (2^exponent - 1) >> 1, plus one when x < 0:
    that is (x + half - [x < 0 and exponent > 0]) >> exponent with half = 2^exponent >> 1.
    """
    half = (np.int64(1) << exponent) >> 1
    negative = (x >> 63) & np.int64(half > 0)  # 1 when x < 0 and exponent > 0, else 0
    return (x + half - negative) >> exponent


@njit(inline="always")
def multiply_by_quantized_multiplier(acc, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier(int32 acc, multiplier, shift): acc * real
    multiplier, for (multiplier, shift) from quantization.quantize_multiplier."""
    shift = np.int64(shift)
    left = max(shift, np.int64(0))
    right = max(-shift, np.int64(0))
    shifted = np.int64(np.int32(np.int64(acc) << left))  # C's int32 product wraps
    return rounding_divide_by_pot(rounding_doubling_high_mul(shifted, multiplier), right)


@njit(inline="always")
def requantize(acc, multiplier, shift, zero_point, low, high):
    """The int8 epilogue: clamp(MultiplyByQuantizedMultiplier(acc) + zero_point, low, high)."""
    value = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.int8(min(max(value, low), high))


# Outputs per requantize_vector call: one zmm of int32 (two ymm on AVX2 targets).
REQUANTIZE_LANES = 16


def _high_mul_lanes(builder, a, b, lanes):
    """IR: the int32 vector floor((a * b + 2^30) / 2^31) of int32 vectors a, b (the result of
    rounding_doubling_high_mul, which fits int32). The even and odd int32 lanes are
    multiplied as int64 halves sign-extended in place, which x86 selects as two vpmuldq, and
    the odd results are shifted into the high halves, so no widening or narrowing shuffles
    are needed (14 instructions of the sext / mul / trunc form -> 9)."""
    i64 = ir.IntType(64)
    half = ir.VectorType(i64, lanes // 2)
    bits32 = ir.Constant(half, [32] * (lanes // 2))
    nudge = ir.Constant(half, [1 << 30] * (lanes // 2))
    a64, b64 = builder.bitcast(a, half), builder.bitcast(b, half)
    even = builder.mul(builder.ashr(builder.shl(a64, bits32), bits32),
                       builder.ashr(builder.shl(b64, bits32), bits32))
    odd = builder.mul(builder.ashr(a64, bits32), builder.ashr(b64, bits32))
    # Bits 31..62 of each nudged product: in the low half (even lanes), the high half (odd).
    even = builder.lshr(builder.add(even, nudge), ir.Constant(half, [31] * (lanes // 2)))
    odd = builder.shl(builder.add(odd, nudge), ir.Constant(half, [1] * (lanes // 2)))
    v32 = a.type
    order = [index if index % 2 == 0 else lanes + index for index in range(lanes)]
    return builder.shuffle_vector(builder.bitcast(even, v32), builder.bitcast(odd, v32),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), order))


@intrinsic
def requantize_vector(typingctx, acc, multiplier, shift, zero_point, low, high, dst, offset):
    """dst[offset:offset + 16] = requantize(acc[...], multiplier[...], shift[...], zero_point,
    low, high) on 16 lanes at once, written in LLVM vector IR: every step but the 32 x 32 -> 64
    bit product stays in int32 lanes (the Numba version widens everything to int64 and does 8
    lanes per instruction: 0.24 ns per output, the largest single cost of the early layers).

    The same arithmetic as requantize(), step by step: C's wrapping int32 left shift; the
    high mul as floor((a * b + 2^30) / 2^31) in int64 (rounding_doubling_high_mul), its result
    within int32; RoundingDivideByPOT in int32 exactly as TFLite writes it (remainder > (mask
    >> 1) + [x < 0]), which cannot overflow; + zero point, clamp, int8.
    acc, multiplier, shift: int32 arrays, dst: an int8 array, each contiguous from `offset`
    for 16 elements (the caller checks the bounds)."""
    arrays_ok = (all(isinstance(a, types.Array) and a.dtype == types.int32 and a.ndim == 1
                     for a in (acc, multiplier, shift))
                 and isinstance(dst, types.Array) and dst.dtype == types.int8 and dst.ndim == 1)
    if not arrays_ok:
        return None
    lanes = REQUANTIZE_LANES

    def codegen(context, builder, signature, args):
        acc_value, multiplier_value, shift_value, zp_value, low_value, high_value, \
            dst_value, offset_value = args
        i8, i32 = ir.IntType(8), ir.IntType(32)
        v32, v8 = ir.VectorType(i32, lanes), ir.VectorType(i8, lanes)
        offset_value = context.cast(builder, offset_value, signature.args[7], types.intp)

        def vector_at(index, element, vector):
            array = context.make_array(signature.args[index])(context, builder, args[index])
            data = builder.bitcast(array.data, element.as_pointer())
            return builder.bitcast(builder.gep(data, [offset_value]), vector.as_pointer())

        def splat(value, index, vector, element):
            scalar = context.cast(builder, value, signature.args[index], types.int32)
            if element != i32:
                scalar = builder.trunc(scalar, element)
            single = builder.insert_element(ir.Constant(vector, None), scalar,
                                            ir.Constant(i32, 0))
            return builder.shuffle_vector(single, ir.Constant(vector, None),
                                          ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))

        def const32(value):
            return ir.Constant(v32, [value] * lanes)

        acc32 = builder.load(vector_at(0, i32, v32), align=4)
        mult32 = builder.load(vector_at(1, i32, v32), align=4)
        shift32 = builder.load(vector_at(2, i32, v32), align=4)
        zero = const32(0)
        positive = builder.icmp_signed(">", shift32, zero)
        left = builder.select(positive, shift32, zero)
        right = builder.select(positive, zero, builder.sub(zero, shift32))
        shifted = builder.shl(acc32, left)  # C's int32 wrap
        high = _high_mul_lanes(builder, shifted, mult32, lanes)
        mask = builder.sub(builder.shl(const32(1), right), const32(1))
        remainder = builder.and_(high, mask)
        negative = builder.zext(builder.icmp_signed("<", high, zero), v32)
        threshold = builder.add(builder.ashr(mask, const32(1)), negative)
        rounded = builder.add(builder.ashr(high, right),
                              builder.zext(builder.icmp_signed(">", remainder, threshold), v32))
        value = builder.add(rounded, splat(zp_value, 3, v32, i32))
        low32, high32 = splat(low_value, 4, v32, i32), splat(high_value, 5, v32, i32)
        value = builder.select(builder.icmp_signed("<", value, low32), low32, value)
        value = builder.select(builder.icmp_signed(">", value, high32), high32, value)
        builder.store(builder.trunc(value, v8), vector_at(6, i8, v8), align=1)
        return context.get_dummy_value()

    return types.none(acc, multiplier, shift, zero_point, low, high, dst, offset), codegen


@njit(inline="always")
def requantize_row(acc, multiplier, shift, zero_point, low, high, width, dst):
    """dst[:width] = requantize(acc[:width]) with per-channel multiplier[:width] and
    shift[:width]: one tile row's epilogue. Whole groups of 16 go through requantize_vector,
    the rest through the scalar requantize. The 1-D arguments must be contiguous."""
    full = width - width % REQUANTIZE_LANES
    for v in range(0, full, REQUANTIZE_LANES):
        requantize_vector(acc, multiplier, shift, zero_point, low, high, dst, v)
    for v in range(full, width):
        dst[v] = requantize(acc[v], multiplier[v], shift[v], zero_point, low, high)


def aligned_empty(shape, dtype, alignment=ALIGNMENT):
    """An uninitialised C-contiguous array of `shape` and `dtype` starting on an
    `alignment`-byte boundary (kernels/_common.aligned_zeros for any dtype)."""
    dtype = np.dtype(dtype)
    count = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    raw = np.empty(count * dtype.itemsize + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def aligned_array(array, dtype, alignment=ALIGNMENT):
    """`array` as an aligned C-contiguous copy of `dtype`."""
    copy = aligned_empty(np.shape(array), dtype, alignment)
    copy[...] = array
    return copy


@intrinsic
def stack_matrix_i32(typingctx, rows, cols):
    """A C-contiguous int32 (rows, cols) array in a stack slot (an LLVM alloca), for
    register-resident int32 accumulators: kernels/_common.stack_matrix_f32 for int32.
    `rows` and `cols` must be integer literals; the contents start uninitialised."""
    if not all(isinstance(size, types.IntegerLiteral) for size in (rows, cols)):
        return None
    lengths = [rows.literal_value, cols.literal_value]
    array_type = types.Array(types.int32, 2, "C")

    def codegen(context, builder, signature, args):
        element = context.get_value_type(types.int32)
        data = cgutils.alloca_once(builder, element, size=math.prod(lengths))
        array = context.make_array(array_type)(context, builder)
        intp = lambda value: context.get_constant(types.intp, value)  # noqa: E731
        context.populate_array(
            array, data=data, shape=[intp(length) for length in lengths],
            strides=[intp(4 * lengths[1]), intp(4)], itemsize=intp(4), meminfo=None)
        return array._getvalue()

    return array_type(rows, cols), codegen
