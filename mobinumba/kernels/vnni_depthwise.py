"""int8 depthwise 3x3 on VNNI: the 3 taps of a kernel column in one `vpdpbusd` lane.

Only imported when the compile target has AVX-512 VNNI or AVX-VNNI (qtargets.int8_dot_product),
like kernels/vnni.py. The portable kernel (kernels/qdepthwise.py) multiplies every tap
separately: per 16 outputs 18 sign extensions (shuffles), 9 vpmulld and 9 adds, and it
streams per-element weight rows (9 x Wo * C int16, up to 129 KB a layer) that a forward pass
evicts from the caches between two calls.

Here, for every output row, each task first writes one row of int32 "quads": for padded
input column p and channel c, the bytes x[ih + kh, p, c] + 128 (u8) of the three input rows
the output row reads (kh = 0, 1, 2) and a zero byte. A kernel column's weights are packed
the same way (w[c, 0..2, kw], 0), so one vpdpbusd adds a whole kernel column for 16 channels
(zmm; 8 on ymm): output column ow is the 3 vpdpbusd of quad columns s*ow + kw. Column quads
(not row quads) because consecutive output rows share no quad row, so each quad is built
once, and the buffer is one row (Wp * C * 4 bytes, 36 KB at most in MobileNetV1 at 224):
row quads for a band of rows were rebuilt 1.25-3x (band overlap) and their buffer, above
malloc's mmap threshold, page-faulted at every call (14x512: 0.15 ms vs the portable 0.06).
The +128 of the bytes comes back out through the bias (as in kernels/vnni.py):
    sum (x - zp) w = sum (x + 128) w - (128 + zp) sum w,
and padding taps hold the input zero point, whose terms cancel (TFLite skips them).
Accumulators wrap modulo 2^32 on the way, which is harmless: the final sum fits int32
(ops/base.int8_bias checks the bound) and modular arithmetic gives it exactly.
"""
import functools

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import CACHE
from .qcommon import (CLAMPED, EXACT, FULL_RANGE, aligned_array, mode_intrinsic,
                      requantize_ir, requantize_with_table, splat_ir, table_rows_ir)
from .qtargets import byte_permute
from .vnni import _data_pointer

# Build the quads with one byte permute (AVX-512 VBMI) where the target has it (store_quads).
_BYTE_PERMUTE = byte_permute()


@intrinsic
def dpbusd_taps3(typingctx, out, start, quads, first, row_stride, weights, channel, row_bytes,
                 lanes):
    """out[channel:channel + L] = start[channel:...] + the 3 vpdpbusd of the quad vectors at
    flat indices first + k * row_stride of `quads` (k = 0, 1, 2: the kernel columns) with
    the 4 * L weight bytes at 4 * channel + k * row_bytes of `weights`.

    out, start: 1-D int32; quads: a C-contiguous int32 array (read flat); weights: 1-D int8;
    lanes: literal 16 (zmm) or 8 (ymm). The caller checks the bounds."""
    if not (all(isinstance(a, types.Array) and a.dtype == types.int32
                for a in (out, start, quads))
            and isinstance(weights, types.Array) and weights.dtype == types.int8
            and isinstance(lanes, types.IntegerLiteral) and lanes.literal_value in (8, 16)):
        return None
    width = lanes.literal_value
    name = f"llvm.x86.avx512.vpdpbusd.{32 * width}"

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        vector = ir.VectorType(i32, width)
        intp = [context.cast(builder, args[i], signature.args[i], types.intp)
                for i in (3, 4, 6, 7)]
        first_value, stride_value, channel_value, row_bytes_value = intp

        def vector_at(position, element, index):
            data = _data_pointer(context, builder, signature.args[position], args[position],
                                 element)
            return builder.bitcast(builder.gep(data, [index]), vector.as_pointer())

        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector, vector, vector]), name)
        acc = builder.load(vector_at(1, i32, channel_value), align=4)
        weight_base = builder.mul(channel_value, ir.Constant(channel_value.type, 4))
        for k in range(3):
            k_value = ir.Constant(channel_value.type, k)
            quad_index = builder.add(first_value, builder.mul(stride_value, k_value))
            weight_index = builder.add(weight_base, builder.mul(row_bytes_value, k_value))
            acc = builder.call(function, [
                acc, builder.load(vector_at(2, i32, quad_index), align=4),
                builder.load(vector_at(5, ir.IntType(8), weight_index), align=1)])
        builder.store(acc, vector_at(0, i32, channel_value), align=4)
        return context.get_dummy_value()

    return (types.none(out, start, quads, first, row_stride, weights, channel, row_bytes, lanes),
            codegen)


@intrinsic
def store_quads(typingctx, dst, index, s0, s1, s2, offset, lanes, permute):
    """dst.flat[index:index + L] = the int32 quads (u8(s0[offset + l]), u8(s1[offset + l]),
    u8(s2[offset + l]), 0) for l < L, with u8(v) = v + 128: three byte loads, then one byte
    permute (permute True and L = 16: for AVX-512 VBMI targets, _BYTE_PERMUTE) or
    zero-extension, shifts and ors on whole vectors (a Numba loop over channels was not
    vectorised: 1.2 cycles per quad). dst: a C-contiguous int32 array, s0, s1, s2: 1-D
    int8; lanes: literal 16 or 8; permute: a literal bool. The caller checks the bounds."""
    sources = (s0, s1, s2)
    if not (isinstance(dst, types.Array) and dst.dtype == types.int32
            and all(isinstance(a, types.Array) and a.dtype == types.int8 and a.ndim == 1
                    for a in sources)
            and isinstance(lanes, types.IntegerLiteral) and lanes.literal_value in (8, 16)
            and isinstance(permute, types.BooleanLiteral)):
        return None
    width = lanes.literal_value
    permute_bytes = width == 16 and permute.literal_value

    def codegen(context, builder, signature, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        v8, v32 = ir.VectorType(i8, width), ir.VectorType(i32, width)
        offset = context.cast(builder, args[5], signature.args[5], types.intp)
        rows = []
        for position in (2, 3, 4):
            source = _data_pointer(context, builder, signature.args[position], args[position],
                                   i8)
            rows.append(builder.load(builder.bitcast(builder.gep(source, [offset]),
                                                     v8.as_pointer()), align=1))
        if permute_bytes:
            # One byte permute of the 48 loaded bytes and 16 zeros (vpermt2b), then +128 on
            # the three data bytes of each quad: 7 instructions per 16 quads in the
            # assembly, where widening each row takes 14 (depthwise layers 437 -> 403 us
            # summed, one thread).
            indices = ir.VectorType(i32, 2 * width)
            pair = builder.shuffle_vector(rows[0], rows[1], ir.Constant(indices,
                                                                        list(range(2 * width))))
            last = builder.shuffle_vector(rows[2], ir.Constant(v8, [0] * width),
                                          ir.Constant(indices, list(range(2 * width))))
            order = [index for lane in range(width)
                     for index in (lane, width + lane, 2 * width + lane, 3 * width)]
            quad = builder.shuffle_vector(pair, last,
                                          ir.Constant(ir.VectorType(i32, 4 * width), order))
            quad = builder.bitcast(builder.xor(quad, ir.Constant(
                ir.VectorType(i8, 4 * width), [128, 128, 128, 0] * width)), v32)
        else:  # zero-extend each row to int32 lanes, shift and or
            quad = None
            for k, raw in enumerate(rows):
                byte = builder.zext(builder.xor(raw, ir.Constant(v8, [128] * width)), v32)
                if k:
                    byte = builder.shl(byte, ir.Constant(v32, [8 * k] * width))
                quad = byte if quad is None else builder.or_(quad, byte)
        target = _data_pointer(context, builder, signature.args[0], args[0], i32)
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        builder.store(quad, builder.bitcast(builder.gep(target, [index]), v32.as_pointer()),
                      align=4)
        return context.get_dummy_value()

    return types.none(dst, index, s0, s1, s2, offset, lanes, permute), codegen


def _depthwise_row_vector_intrinsic(mode):
    """The depthwise_row_vector intrinsic (see its docstring below)."""

    def depthwise_row_vector(typingctx, out, quads, weights, bias, table, channel, stride,
                             zero_point, low, high, lanes):
        arrays_ok = (isinstance(out, types.Array) and out.dtype == types.int8
                     and out.ndim == 2
                     and isinstance(quads, types.Array) and quads.dtype == types.int32
                     and quads.ndim == 2 and quads.layout == "C"
                     and isinstance(weights, types.Array) and weights.dtype == types.int8
                     and isinstance(bias, types.Array) and bias.dtype == types.int32
                     and isinstance(table, types.Array) and table.dtype == types.int32
                     and table.ndim == 2 and table.layout == "C"
                     and isinstance(lanes, types.IntegerLiteral)
                     and lanes.literal_value in (8, 16))
        if not arrays_ok:
            return None
        width = lanes.literal_value
        name = f"llvm.x86.avx512.vpdpbusd.{32 * width}"

        def codegen(context, builder, signature, args):
            i8, i32 = ir.IntType(8), ir.IntType(32)
            v32, v8 = ir.VectorType(i32, width), ir.VectorType(i8, width)
            intp = lambda index: context.cast(builder, args[index],  # noqa: E731
                                              signature.args[index], types.intp)
            channel, stride = intp(5), intp(6)
            array = lambda index: context.make_array(signature.args[index])(  # noqa: E731
                context, builder, args[index])
            out, quads = array(0), array(1)
            out_w, _ = cgutils.unpack_tuple(builder, out.shape, 2)
            out_stride = cgutils.unpack_tuple(builder, out.strides, 2)[0]  # bytes per pixel
            cpad = cgutils.unpack_tuple(builder, quads.shape, 2)[1]
            quad_data = builder.bitcast(quads.data, i32.as_pointer())
            weight_data = builder.bitcast(array(2).data, i8.as_pointer())
            out_data = builder.bitcast(out.data, i8.as_pointer())

            def vector(pointer, index, vector_type):
                return builder.load(builder.bitcast(builder.gep(pointer, [index]),
                                                    vector_type.as_pointer()), align=1)

            def splat(index):
                return splat_ir(context, builder, signature, args, index, width)

            # Loaded once per row and vector of channels: bias, the 3 kernel columns' weight
            # quads, the table rows, the splats.
            start = vector(builder.bitcast(array(3).data, i32.as_pointer()), channel, v32)
            four = ir.Constant(channel.type, 4)
            column_bytes = builder.mul(cpad, four)
            taps = [vector(weight_data, builder.add(builder.mul(channel, four),
                                                    builder.mul(column_bytes,
                                                                ir.Constant(channel.type, k))),
                           v32) for k in range(3)]
            rows = table_rows_ir(context, builder, signature.args[4], args[4], channel, width)
            zp, low, high = splat(7), splat(8), splat(9)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(v32, [v32, v32, v32]), name)
            with cgutils.for_range(builder, out_w) as loop:
                first = builder.mul(builder.mul(loop.index, stride), cpad)  # column ow * s
                acc = start
                for k in range(3):
                    index = builder.add(builder.add(first, builder.mul(
                        cpad, ir.Constant(channel.type, k))), channel)
                    acc = builder.call(function, [acc, vector(quad_data, index, v32), taps[k]])
                result = requantize_ir(builder, acc, rows, zp, low, high, mode)
                target = builder.gep(out_data, [builder.add(builder.mul(loop.index, out_stride),
                                                            channel)])
                builder.store(result, builder.bitcast(target, v8.as_pointer()), align=1)
            return context.get_dummy_value()

        return (types.none(out, quads, weights, bias, table, channel, stride, zero_point, low,
                           high, lanes), codegen)

    return mode_intrinsic(depthwise_row_vector, "depthwise_row_vector", mode)


depthwise_row_vector = _depthwise_row_vector_intrinsic(EXACT)
depthwise_row_vector.__doc__ = """out[ow, channel:channel + L] = requantize(bias + the 3
vpdpbusd of quad columns ow * stride + kw with kernel column kw's weight quads) for every
output pixel ow of the row: one vector of L = lanes channels (a literal, 16 or 8) across the
row, its bias, weights, table rows and splats loaded once, the accumulator kept in a
register. out (Wo, C) int8 with contiguous pixels; quads (Wp, Cp) int32 C-contiguous;
weights (3 * Cp * 4,) int8 (pack_vnni_dwconv3x3_weights); bias (Cp,) int32; table (5, C)
int32. The caller checks the bounds (channel + L <= C)."""
depthwise_row_vector_clamped = _depthwise_row_vector_intrinsic(CLAMPED)
depthwise_row_vector_clamped.__doc__ = """depthwise_row_vector for low >= zero_point (the
clamped requantization, qcommon.requantize_vector_clamped)."""
depthwise_row_vector_full_range = _depthwise_row_vector_intrinsic(FULL_RANGE)
depthwise_row_vector_full_range.__doc__ = """depthwise_row_vector for zero_point = low = -128
and high = 127 (qcommon.FULL_RANGE)."""


def padded_channels(channels, lanes):
    """C rounded up to whole vectors of `lanes`: the length of a quad row and of the bias."""
    return (channels + lanes - 1) // lanes * lanes


def pack_vnni_dwconv3x3_weights(weight, lanes):
    """OIHW int8 (C, 1, 3, 3) -> (3 * Cp * 4,) int8: kernel column kw at kw * 4Cp, channel
    c's bytes [4c .. 4c + 3] = (w[c, 0, kw], w[c, 1, kw], w[c, 2, kw], 0); zero past C."""
    channels = weight.shape[0]
    cpad = padded_channels(channels, lanes)
    packed = np.zeros((3, cpad, 4), np.int8)
    packed[:, :channels, :3] = weight[:, 0].transpose(2, 0, 1)  # (kw, c, kh)
    return aligned_array(packed.reshape(-1), np.int8)


def vnni_dwconv3x3_bias(bias, lanes):
    """(C,) int32, the input zero point already folded in -> (Cp,) int32 (zero past C).
    The caller subtracts 128 * sum w (the u8 shift) first."""
    start = np.zeros(padded_channels(bias.shape[0], lanes), np.int32)
    start[:bias.shape[0]] = bias
    return aligned_array(start, np.int32)


@njit(inline="always")
def _u8(value):
    """An int8 value + 128 as the low byte of an int32."""
    return (np.int32(value) ^ 128) & 255


@njit(inline="always")
def depthwise_buffers(width, channels, out_w, stride, left, cpad, in_zero_point):
    """A task's buffers for depthwise_row_vnni: `outside` (W * C,) int8, an input row of
    zero points (the rows above and below the image); `quads` (Wp, Cp) int32 with its
    padding columns already set (the same for every row); `acc` (Cp,) int32, the partial
    last vector's accumulators."""
    padded_w = (out_w - 1) * stride + 3  # input columns an output row reads, padded
    right = min(width, padded_w - left)  # input columns [0, right) are read
    outside = np.full(width * channels, in_zero_point, np.int8)
    quads = np.empty((padded_w, cpad), np.int32)
    zero_quad = _u8(in_zero_point) * np.int32(0x10101)  # three padding taps
    for p in range(padded_w):
        if p < left or p - left >= right:
            quads[p, :channels] = zero_quad
    return outside, quads, np.empty(cpad, np.int32)


@njit(inline="always")
def depthwise_row_vnni(x, n, oh, stride, top, left, weight_quads, bias, table,
                       out_zero_point, low, high, outside, quads, acc, out_row, lanes):
    """out_row (Wo, C) int8 = output row oh of image n: the quad row of its three input
    rows, then per vector of channels along the row the 3 vpdpbusd and the epilogue of each
    output column (depthwise_row_vector). Buffers from
    depthwise_buffers; the other arguments as qdwconv3x3_nhwc_vnni's; lanes a literal."""
    height, width, channels = x.shape[1], x.shape[2], x.shape[3]
    out_w = out_row.shape[0]
    padded_w, cpad = quads.shape
    right = min(width, padded_w - left)
    full = channels - channels % lanes  # channels in whole vectors
    ih = oh * stride - top  # the first of the three input rows
    s0 = x[n, ih].reshape(-1) if 0 <= ih < height else outside  # (W * C,)
    s1 = x[n, ih + 1].reshape(-1) if 0 <= ih + 1 < height else outside
    s2 = x[n, ih + 2].reshape(-1) if 0 <= ih + 2 < height else outside
    if full == cpad:  # whole vectors: the row is one stream of W * C bytes
        for j in range(0, right * channels, lanes):
            store_quads(quads, left * cpad + j, s0, s1, s2, j, lanes, _BYTE_PERMUTE)
    else:
        for w in range(right):
            for c in range(0, full, lanes):
                store_quads(quads, (left + w) * cpad + c, s0, s1, s2, w * channels + c, lanes,
                            _BYTE_PERMUTE)
            for c in range(full, channels):
                j = w * channels + c
                quads[left + w, c] = _u8(s0[j]) | (_u8(s1[j]) << 8) | (_u8(s2[j]) << 16)
    # Whole vectors of channels: one pass along the row per vector (its constants loaded
    # once, the accumulator in a register); per pixel and vector 3 vpdpbusd and the
    # epilogue, where a pass over the vectors per pixel went through an acc buffer and
    # reloaded the table for every pixel.
    if out_zero_point == -128 and low == -128 and high == 127:
        for v in range(0, full, lanes):
            depthwise_row_vector_full_range(out_row, quads, weight_quads, bias, table, v,
                                            stride, out_zero_point, low, high, lanes)
    elif low >= out_zero_point:
        for v in range(0, full, lanes):
            depthwise_row_vector_clamped(out_row, quads, weight_quads, bias, table, v, stride,
                                         out_zero_point, low, high, lanes)
    else:
        for v in range(0, full, lanes):
            depthwise_row_vector(out_row, quads, weight_quads, bias, table, v, stride,
                                 out_zero_point, low, high, lanes)
    if full < channels:  # the last, partial vector: through acc, the scalar epilogue
        for ow in range(out_w):
            first = ow * stride * cpad
            dpbusd_taps3(acc, bias, quads, first + full, cpad, weight_quads, full, 4 * cpad,
                         lanes)
            for c in range(full, channels):
                out_row[ow, c] = requantize_with_table(acc[c], table, c, out_zero_point, low,
                                                       high)


@functools.cache
def qdwconv3x3_nhwc_vnni_kernel(lanes):
    """qdwconv3x3_nhwc_vnni for vectors of `lanes` int32 (16: AVX-512 VNNI, 8: AVX-VNNI)."""

    @njit(parallel=True, cache=CACHE)
    def qdwconv3x3_nhwc_vnni(x, weight_quads, bias, table, stride, top, left, in_zero_point,
                             out_zero_point, low, high, band, out):
        """out = requantize(depthwise3x3(x - zp_in, W) + bias) with vpdpbusd.

        x (N, H, W, C) int8; weight_quads (3 * Cp * 4,) int8 from
        pack_vnni_dwconv3x3_weights; bias (Cp,) int32 with (128 + zp_in) * sum w subtracted
        (vnni_dwconv3x3_bias); table (5, C) int32 from qcommon.requantize_table; stride 1 or
        2; top, left: padding before the first row and column; band: output rows per task
        (qdepthwise.qdwconv3x3_band); out (N, Ho, Wo, C) int8.
        """
        n_batch, _, width, channels = x.shape
        out_h, out_w = out.shape[1], out.shape[2]
        bands = (out_h + band - 1) // band
        for task in prange(n_batch * bands):
            n = task // bands
            oh0 = (task - n * bands) * band
            outside, quads, acc = depthwise_buffers(width, channels, out_w, stride, left,
                                                    bias.shape[0], in_zero_point)
            for oh in range(oh0, min(out_h, oh0 + band)):
                depthwise_row_vnni(x, n, oh, stride, top, left, weight_quads, bias, table,
                                   out_zero_point, low, high, outside, quads, acc, out[n, oh],
                                   lanes)

    return qdwconv3x3_nhwc_vnni
