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


@njit(inline="always")
def requantize_row(acc, multiplier, shift, zero_point, low, high, width, dst):
    """dst[:width] = requantize(acc[:width]) with per-channel multiplier[:width] and
    shift[:width]: one tile row's epilogue, on 1-D slices so that LLVM vectorises it."""
    for v in range(width):
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
