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

# The rows of a requantization table (requantize_table): per output channel, the multiplier,
# its left and right shifts, the rounding half of the right shift, and -1 where the right
# shift is positive (else 0).
MULTIPLIER, LEFT, RIGHT, HALF, NEGATIVE_FIX = range(5)


def requantize_table(multiplier, shift, halves_up=False):
    """(5, C) int32 from TFLite's per-channel (multiplier, shift) (C,): the rows MULTIPLIER,
    LEFT = max(shift, 0), RIGHT = max(-shift, 0), HALF = 2^RIGHT >> 1 and NEGATIVE_FIX =
    -[RIGHT > 0]. Every int8 kernel's epilogue reads them instead of deriving them from the
    shift in every vector (6 of its 28 instructions per 16 outputs).

    halves_up: NEGATIVE_FIX = 0, so that the right shift rounds halves up for negative
    values too: LiteRT's FULLY_CONNECTED rounding (vqrdmulh + vrshl; ops/dense.py), whose
    high multiply already rounds as rounding_doubling_high_mul does."""
    shift = np.asarray(shift, np.int64)
    right = np.maximum(-shift, 0)
    fix = np.zeros_like(right) if halves_up else -(right > 0).astype(np.int64)
    table = np.stack([np.asarray(multiplier, np.int64), np.maximum(shift, 0), right,
                      (np.int64(1) << right) >> 1, fix])
    return aligned_array(table, np.int32)


@njit(inline="always")
def requantize_with_table(acc, table, c, zero_point, low, high):
    """requantize() of one int32 with column c of a requantize_table, the scalar form of
    requantize_vector: (x + HALF + [x < 0] * NEGATIVE_FIX) >> RIGHT after the high mul, so
    that a halves_up table rounds as its vectors do."""
    shifted = np.int64(np.int32(np.int64(acc) << np.int64(table[LEFT, c])))  # int32 wrap
    scaled = rounding_doubling_high_mul(shifted, table[MULTIPLIER, c])
    fix = np.int64(table[NEGATIVE_FIX, c]) if scaled < 0 else np.int64(0)
    value = ((scaled + np.int64(table[HALF, c]) + fix) >> np.int64(table[RIGHT, c])) + zero_point
    return np.int8(min(max(value, low), high))


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


def splat_ir(context, builder, signature, args, index, lanes):
    """IR: intrinsic argument `index` (an integer) as int32, broadcast to a vector of
    `lanes`."""
    i32 = ir.IntType(32)
    v32 = ir.VectorType(i32, lanes)
    scalar = context.cast(builder, args[index], signature.args[index], types.int32)
    single = builder.insert_element(ir.Constant(v32, None), scalar, ir.Constant(i32, 0))
    return builder.shuffle_vector(single, ir.Constant(v32, None), ir.Constant(v32, [0] * lanes))


def table_rows_ir(context, builder, table_type, table_value, column, lanes):
    """IR: the five requantize_table rows at `column` (intp) as int32 vectors of `lanes`."""
    i32 = ir.IntType(32)
    table = context.make_array(table_type)(context, builder, table_value)
    columns = cgutils.unpack_tuple(builder, table.shape, 2)[1]
    data = builder.bitcast(table.data, i32.as_pointer())
    vector = ir.VectorType(i32, lanes).as_pointer()
    return [builder.load(builder.bitcast(builder.gep(data, [builder.add(
        builder.mul(columns, ir.Constant(columns.type, row)), column)]), vector), align=4)
        for row in range(5)]


# The epilogue's forms (requantize_ir): EXACT rounds negative values as TFLite does; CLAMPED
# is for clamps with low >= zero point (ReLU, ReLU6), where every negative value ends at
# `low` (so its high mul and right shift are one rounding shift: _rounding_shift_lanes);
# FULL_RANGE is CLAMPED with zero point = low = -128 and high = 127, the usual ReLU6
# output ([0, 6] on [-128, 127]; every layer of the shipped model): with constant bounds
# LLVM makes the clamp and the store one saturating vpmovsdb, 2 instructions (add, store)
# where runtime bounds take 4 (add, max, min, vpmovdb).
EXACT, CLAMPED, FULL_RANGE = "exact", "clamped", "full_range"


def mode_intrinsic(function, base, mode):
    """intrinsic(function) named `base` for the EXACT form, `base`_`mode` for the others
    (requantize_ir's forms)."""
    name = base if mode == EXACT else f"{base}_{mode}"
    function.__name__ = function.__qualname__ = name
    return intrinsic(function)


def _rounding_shift_lanes(builder, a, rows, lanes):
    """IR: the int32 vector floor((a * M + 2^30 + HALF * 2^31) / 2^(31 + RIGHT)) of the int32
    vector a with the table rows MULTIPLIER, HALF and RIGHT: the high mul and the right
    shift of the clamped forms in one rounding shift of the 64-bit product. For integers,
    floor((floor(P / 2^31) + h) / 2^r) = floor((P + h 2^31) / 2^(31 + r)), so this equals
    (high_mul + HALF) >> RIGHT; the sum stays below 2^63 (|P| < 2^62, HALF <= 2^30) and the
    result within int32. The per-lane constants (64-bit, even and odd channels apart) derive
    from the table rows, which the kernels load once per vector of channels, so LLVM
    computes them outside the loops: per 16 outputs 2 vpmuldq, 1 vpsraq, 2 vpaddq, 2
    vpsravq and one vpermt2d, where _high_mul_lanes and the separate shift took 2 more."""
    i64 = ir.IntType(64)
    half = ir.VectorType(i64, lanes // 2)

    def constant(value):
        return ir.Constant(half, [value] * (lanes // 2))

    def low(value):  # the even channel's int32, sign-extended
        return builder.ashr(builder.shl(value, constant(32)), constant(32))

    def even_and_odd(row):  # a table row's even and odd channels as unsigned 64-bit lanes
        value = builder.bitcast(row, half)
        return builder.and_(value, constant(0xFFFFFFFF)), builder.lshr(value, constant(32))

    a64, m64 = builder.bitcast(a, half), builder.bitcast(rows[MULTIPLIER], half)
    products = (builder.mul(low(a64), low(m64)),
                builder.mul(builder.ashr(a64, constant(32)), builder.ashr(m64, constant(32))))
    results = []
    for product, half_value, right in zip(products, even_and_odd(rows[HALF]),
                                          even_and_odd(rows[RIGHT])):
        rounding = builder.add(builder.shl(half_value, constant(31)), constant(1 << 30))
        results.append(builder.ashr(builder.add(product, rounding),
                                    builder.add(right, constant(31))))
    v32 = a.type
    order = [index if index % 2 == 0 else lanes + index - 1 for index in range(lanes)]
    return builder.shuffle_vector(builder.bitcast(results[0], v32),
                                  builder.bitcast(results[1], v32),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), order))


def requantize_ir(builder, acc32, rows, zero_point, low, high, mode):
    """IR: the int8 vector requantize(acc32) with the table `rows` (table_rows_ir) and the
    splat int32 vectors zero_point, low, high (FULL_RANGE uses its constants), in the form
    `mode` (see requantize_vector for the steps)."""
    lanes = acc32.type.count
    v8 = ir.VectorType(ir.IntType(8), lanes)
    shifted = builder.shl(acc32, rows[LEFT])  # C's int32 wrap
    zero = ir.Constant(acc32.type, [0] * lanes)
    if mode == EXACT:  # halves of negative values round away from zero
        high_mul = _high_mul_lanes(builder, shifted, rows[MULTIPLIER], lanes)
        # RoundingDivideByPOT: (x + half - [x < 0 and right > 0]) >> right. For x >= 0 the
        # sum can pass 2^31 - 1 (right 31 adds 2^30), but not 2^32: a logical shift of the
        # wrapped sum is still exact; negative sums shift arithmetically.
        bits31 = ir.Constant(acc32.type, [31] * lanes)
        fix = builder.and_(builder.ashr(high_mul, bits31), rows[NEGATIVE_FIX])
        total = builder.add(builder.add(high_mul, rows[HALF]), fix)
        value = builder.select(builder.icmp_signed("<", high_mul, zero),
                               builder.ashr(total, rows[RIGHT]),
                               builder.lshr(total, rows[RIGHT]))
    else:  # every negative value ends at `low` either way: max(x, 0) after the rounding
        value = _rounding_shift_lanes(builder, shifted, rows, lanes)
        value = builder.select(builder.icmp_signed(">", value, zero), value, zero)
    if mode == FULL_RANGE:  # the clamp with constant bounds: a saturating narrowing store
        zero_point = ir.Constant(acc32.type, [-128] * lanes)
        low = zero_point
        high = ir.Constant(acc32.type, [127] * lanes)
    value = builder.add(value, zero_point)
    value = builder.select(builder.icmp_signed("<", value, low), low, value)
    value = builder.select(builder.icmp_signed(">", value, high), high, value)
    return builder.trunc(value, v8)


def _requantize_vector_intrinsic(mode):
    """The requantize_vector intrinsic in the form `mode` (EXACT or CLAMPED; see
    requantize_row)."""

    def requantize_vector(typingctx, acc, table, channel, zero_point, low, high, dst, offset):
        arrays_ok = (isinstance(acc, types.Array) and acc.dtype == types.int32
                     and acc.ndim == 1
                     and isinstance(table, types.Array) and table.dtype == types.int32
                     and table.ndim == 2 and table.layout == "C"
                     and isinstance(dst, types.Array) and dst.dtype == types.int8
                     and dst.ndim == 1)
        if not arrays_ok:
            return None
        lanes = REQUANTIZE_LANES

        def codegen(context, builder, signature, args):
            acc_value, table_value, channel_value, zp_value, low_value, high_value, \
                dst_value, offset_value = args
            i8, i32 = ir.IntType(8), ir.IntType(32)
            v32, v8 = ir.VectorType(i32, lanes), ir.VectorType(i8, lanes)
            offset = context.cast(builder, offset_value, signature.args[7], types.intp)
            channel = builder.add(
                context.cast(builder, channel_value, signature.args[2], types.intp), offset)

            def vector_at(index, element, vector, position):
                array = context.make_array(signature.args[index])(context, builder,
                                                                  args[index])
                data = builder.bitcast(array.data, element.as_pointer())
                return builder.bitcast(builder.gep(data, [position]), vector.as_pointer())

            def splat(index):
                return splat_ir(context, builder, signature, args, index, lanes)

            rows = table_rows_ir(context, builder, signature.args[1], table_value, channel, lanes)
            acc32 = builder.load(vector_at(0, i32, v32, offset), align=4)
            result = requantize_ir(builder, acc32, rows, splat(3), splat(4), splat(5), mode)
            builder.store(result, vector_at(6, i8, v8, offset), align=1)
            return context.get_dummy_value()

        return (types.none(acc, table, channel, zero_point, low, high, dst, offset),
                codegen)

    return mode_intrinsic(requantize_vector, "requantize_vector", mode)


def _requantize_tile_vector_intrinsic(mode):
    """The requantize_tile_vector intrinsic (see its docstring below)."""

    def requantize_tile_vector(typingctx, acc, table, channel, zero_point, low, high, out,
                               row0, count, offset, mr):
        arrays_ok = (isinstance(acc, types.Array) and acc.dtype == types.int32
                     and acc.ndim == 2 and acc.layout == "C"
                     and isinstance(table, types.Array) and table.dtype == types.int32
                     and table.ndim == 2 and table.layout == "C"
                     and isinstance(out, types.Array) and out.dtype == types.int8
                     and out.ndim == 2 and isinstance(mr, types.IntegerLiteral))
        if not arrays_ok:
            return None
        lanes = REQUANTIZE_LANES
        tile_rows = mr.literal_value

        def codegen(context, builder, signature, args):
            i8, i32 = ir.IntType(8), ir.IntType(32)
            v32, v8 = ir.VectorType(i32, lanes), ir.VectorType(i8, lanes)
            intp = lambda index: context.cast(builder, args[index],  # noqa: E731
                                              signature.args[index], types.intp)
            offset, row0, count = intp(9), intp(7), intp(8)
            column = builder.add(intp(2), offset)  # the table's and out's column

            def splat(index):
                return splat_ir(context, builder, signature, args, index, lanes)

            # Once per vector of channels, not once per row: the table rows and the splats.
            rows = table_rows_ir(context, builder, signature.args[1], args[1], column, lanes)
            zero_point, low, high = splat(3), splat(4), splat(5)
            acc = context.make_array(signature.args[0])(context, builder, args[0])
            acc_cols = cgutils.unpack_tuple(builder, acc.shape, 2)[1]
            acc_data = builder.bitcast(acc.data, i32.as_pointer())
            out = context.make_array(signature.args[6])(context, builder, args[6])
            out_stride = cgutils.unpack_tuple(builder, out.strides, 2)[0]  # bytes per row
            out_data = builder.bitcast(out.data, i8.as_pointer())
            for r in range(tile_rows):
                r_value = ir.Constant(offset.type, r)
                with builder.if_then(builder.icmp_signed("<", r_value, count), likely=True):
                    source = builder.gep(acc_data, [builder.add(builder.mul(r_value, acc_cols),
                                                                offset)])
                    acc32 = builder.load(builder.bitcast(source, v32.as_pointer()), align=4)
                    result = requantize_ir(builder, acc32, rows, zero_point, low, high, mode)
                    target = builder.gep(out_data, [builder.add(
                        builder.mul(builder.add(row0, r_value), out_stride), column)])
                    builder.store(result, builder.bitcast(target, v8.as_pointer()), align=1)
            return context.get_dummy_value()

        return (types.none(acc, table, channel, zero_point, low, high, out, row0, count,
                           offset, mr), codegen)

    return mode_intrinsic(requantize_tile_vector, "requantize_tile_vector", mode)


requantize_vector = _requantize_vector_intrinsic(EXACT)
requantize_vector.__doc__ = """dst[offset:offset + 16] = requantize(acc[offset:...]) with the
per-channel constants of columns channel + offset .. of `table` (requantize_table), on 16
lanes at once in LLVM vector IR: every step but the 32 x 32 -> 64 bit product stays in
int32 lanes (the Numba version widens everything to int64 and does 8 lanes per instruction).

The same arithmetic as requantize(), step by step: C's wrapping int32 left shift; the high
mul as floor((a * b + 2^30) / 2^31) in int64 (rounding_doubling_high_mul), its result within
int32; RoundingDivideByPOT as (x + half - [x < 0 and right > 0]) >> right
(rounding_divide_by_pot), logical for x >= 0 (the sum may pass 2^31 - 1, never 2^32);
+ zero point, clamp, int8. acc: 1-D int32, table: (5, C)
int32, dst: 1-D int8, each holding 16 elements from there (the caller checks the bounds)."""
requantize_vector_clamped = _requantize_vector_intrinsic(CLAMPED)
requantize_vector_clamped.__doc__ = """requantize_vector for low >= zero_point (a ReLU or
ReLU6 clamp): every x < 0 rounds to <= 0 and ends at `low` either way, so the high mul
and the right shift are one rounding shift of the 64-bit product (_rounding_shift_lanes),
without the negative rounding fix, then max(x, 0)."""


requantize_tile_vector = _requantize_tile_vector_intrinsic(EXACT)
requantize_tile_vector.__doc__ = """out[row0 + r, channel + offset : ... + 16] =
requantize(acc[r, offset : offset + 16]) for r < count (count <= mr, a literal): a register
tile's epilogue for one vector of channels, the table rows and splats loaded once for its mr
rows. acc: (mr, NR) int32 C-contiguous; out: 2-D int8 whose rows are contiguous; table as
requantize_vector's. The caller checks the bounds."""
requantize_tile_vector_clamped = _requantize_tile_vector_intrinsic(CLAMPED)
requantize_tile_vector_clamped.__doc__ = """requantize_tile_vector for low >= zero_point,
as requantize_vector_clamped."""
requantize_tile_vector_full_range = _requantize_tile_vector_intrinsic(FULL_RANGE)
requantize_tile_vector_full_range.__doc__ = """requantize_tile_vector for zero_point = low =
-128 and high = 127 (the FULL_RANGE form)."""


@njit(inline="always")
def requantize_row(acc, table, channel, zero_point, low, high, width, dst):
    """dst[:width] = requantize(acc[:width]) with the per-channel constants of columns
    channel .. channel + width of `table` (requantize_table): one tile row's epilogue. Whole
    groups of 16 go through requantize_vector (its clamped form when low >= zero_point),
    the rest through requantize_with_table. acc and dst must be contiguous."""
    full = width - width % REQUANTIZE_LANES
    if low >= zero_point:
        for v in range(0, full, REQUANTIZE_LANES):
            requantize_vector_clamped(acc, table, channel, zero_point, low, high, dst, v)
    else:
        for v in range(0, full, REQUANTIZE_LANES):
            requantize_vector(acc, table, channel, zero_point, low, high, dst, v)
    for v in range(full, width):
        dst[v] = requantize_with_table(acc[v], table, channel + v, zero_point, low, high)


@njit(inline="always")
def requantize_tile(acc, table, channel, zero_point, low, high, width, out, row0, count, mr,
                    nr):
    """out[row0:row0 + count, channel:channel + width] = requantize(acc[:count, :width]): a
    register tile's epilogue (acc (mr, nr) int32, a stack matrix; mr, nr literals). A full
    panel (width == nr, a multiple of 16) goes vector by vector over the rows, each vector's
    table rows loaded once (requantize_tile_vector, in the form the clamp allows); a partial
    one row by row (requantize_row)."""
    if width == nr and nr % REQUANTIZE_LANES == 0:
        if zero_point == -128 and low == -128 and high == 127:
            for v in range(0, nr, REQUANTIZE_LANES):
                requantize_tile_vector_full_range(acc, table, channel, zero_point, low, high,
                                                  out, row0, count, v, mr)
        elif low >= zero_point:
            for v in range(0, nr, REQUANTIZE_LANES):
                requantize_tile_vector_clamped(acc, table, channel, zero_point, low, high, out,
                                               row0, count, v, mr)
        else:
            for v in range(0, nr, REQUANTIZE_LANES):
                requantize_tile_vector(acc, table, channel, zero_point, low, high, out, row0,
                                       count, v, mr)
    else:
        for r in range(count):
            requantize_row(acc[r], table, channel, zero_point, low, high, width,
                           out[row0 + r, channel:])


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
