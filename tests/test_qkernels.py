"""The int8 kernels and the int8 network against the naive NumPy reference of TFLite's
arithmetic (tests/qreference.py): bit-exact, on boundary sizes (channels 1 and odd, K not a
multiple of 4 or 64, batch > 1, non-zero zero points, both paddings, strides 1 and 2).

The VNNI kernel runs where the host has AVX-512 VNNI; the portable kernels everywhere. The
slow tests build the int8 network for haswell (AVX2) and x86-64 (SSE2) in a child process
with a fresh NUMBA_CACHE_DIR: the same child per target as tests/test_targets.py's float32
checks (tests/target_children.py).
"""
import dataclasses
import re

import numpy as np
import pytest
from numba import njit

import qreference
from mobinumba.bench.synthetic import random_model_file
from mobinumba.errors import InputError
from mobinumba.kernels.qcommon import (multiply_by_quantized_multiplier, requantize_row,
                                       requantize_table, requantize_tile, stack_matrix_i32)
from mobinumba.kernels.qconv import pack_qconv3x3_weights, qconv3x3_nchw_to_nhwc
from mobinumba.kernels.qdepthwise import (pack_qdwconv3x3_weights, qdwconv3x3_band,
                                          qdwconv3x3_nhwc, tile_qdwconv3x3_bias,
                                          tile_qdwconv3x3_weights)
from mobinumba.kernels.qinput import quantize_nchw
from mobinumba.kernels.qhead import (pack_qdense_weights, qaverage_pool_nhwc,
                                     qaverage_pool_nhwc_serial, qdense, qmean_nhwc,
                                     qmean_nhwc_serial)
from mobinumba.kernels.qpointwise import pack_qpointwise_weights, qpwconv_nhwc
from mobinumba.kernels.qtargets import int8_dot_product, matrix_tiles
from mobinumba.model import Model
from mobinumba.padding import conv_output_size
from mobinumba.quantization import (Quantization, mean_requantization, mean_rounds_half_up,
                                    quantize_multiplier)
from mobinumba.quantize import quantize_model_file

VNNI = int8_dot_product() == "avx512vnni"


def int8(rng, *shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def epilogue(rng, channels):
    """Random per-channel (multiplier, shift) from real multipliers 2^-14 .. 2^1, an output
    zero point and a clamp range inside int8."""
    reals = 2.0 ** rng.uniform(-14, 1, channels)
    pairs = [quantize_multiplier(real) for real in reals]
    multiplier = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    return multiplier, shift, int(rng.integers(-20, 20)), -100, 120


@njit
def _mbqm(values, multiplier, shift):
    out = np.empty(values.shape[0], np.int64)
    for i in range(values.shape[0]):
        out[i] = multiply_by_quantized_multiplier(values[i], multiplier[i], shift[i])
    return out


def test_multiply_by_quantized_multiplier_matches_the_reference():
    rng = np.random.default_rng(0)
    size = 20_000
    values = rng.integers(-2 ** 31, 2 ** 31, size).astype(np.int32)
    values[:6] = [0, 1, -1, 2 ** 31 - 1, -2 ** 31, 2 ** 30]
    reals = 2.0 ** rng.uniform(-40, 3, size)
    pairs = [quantize_multiplier(real) for real in reals]
    multiplier = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    small = np.abs(values) < 2 ** 20  # where the left shift cannot wrap: the real product
    got = _mbqm(values, multiplier, shift)
    assert np.array_equal(got, qreference.multiply_by_quantized_multiplier(values, multiplier,
                                                                           shift))
    exact = values[small].astype(np.float64) * reals[small]
    assert np.abs(got[small] - exact).max() <= 0.5 + 1e-6 * np.abs(exact).max()


def test_multiply_by_quantized_multiplier_rounds_ties_like_the_reference():
    # Every tie of both roundings: multiplier 2^30 (0.5) makes 2ab / 2^31 land on halves for
    # odd acc, and shifts -1..-4 put remainders exactly on (and next to) the half of
    # RoundingDivideByPOT, for positive and negative acc; plus multipliers next to 2^30.
    values = np.arange(-2000, 2001, dtype=np.int32)
    for multiplier in (2 ** 30, 2 ** 30 + 1, 2 ** 30 - 1, 2 ** 31 - 1, 1 << 29):
        for shift in (2, 1, 0, -1, -2, -3, -4, -31):
            m = np.full(values.shape, multiplier, np.int32)
            s = np.full(values.shape, shift, np.int32)
            assert np.array_equal(_mbqm(values, m, s),
                                  qreference.multiply_by_quantized_multiplier(values, m, s)), \
                (multiplier, shift)


@njit
def _requantize_rows(acc, table, zero_point, low, high, width, out):
    for start in range(0, acc.shape[0] - width + 1, width):
        requantize_row(acc[start:], table, start, zero_point, low, high, width, out[start:])


@pytest.mark.parametrize("width", [1, 15, 16, 17, 32, 40])
def test_requantize_row_matches_the_reference(width):
    """The epilogue of every kernel (16-lane vector part and scalar tail) on the whole int32
    range, real multipliers 2^-40 .. 2^3 (left shifts that wrap included), ties."""
    rng = np.random.default_rng(width)
    size = 40 * 480
    acc = rng.integers(-2 ** 31, 2 ** 31, size).astype(np.int32)
    acc[:4000] = rng.integers(-3000, 3000, 4000)
    acc[:6] = [0, 1, -1, 2 ** 31 - 1, -2 ** 31, 2 ** 30]
    pairs = [quantize_multiplier(real) for real in 2.0 ** rng.uniform(-40, 3, size)]
    multiplier = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    multiplier[:2000], shift[:2000] = 2 ** 30, rng.integers(-4, 1, 2000)  # ties
    covered = size // width * width  # whole rows only
    for zero_point, low, high in [(0, -128, 127), (-7, -7, 120), (100, -128, 127)]:
        out = np.zeros(size, np.int8)
        _requantize_rows(acc, requantize_table(multiplier, shift), zero_point, low, high,
                         width, out)
        expected = qreference.requantize(acc.astype(np.int64), multiplier, shift, zero_point,
                                         low, high)
        assert np.array_equal(out[:covered], expected[:covered])
    # A halves_up table (the int8 classifier on VNNI, ops/dense.py): LiteRT's rounding.
    for zero_point in (0, 100):
        out = np.zeros(size, np.int8)
        _requantize_rows(acc, requantize_table(multiplier, shift, halves_up=True), zero_point,
                         -128, 127, width, out)
        expected = qreference.requantize_half_up(acc.astype(np.int64), multiplier, shift,
                                                 zero_point, -128, 127)
        assert np.array_equal(out[:covered], expected[:covered])
        assert not np.array_equal(expected, qreference.requantize(
            acc.astype(np.int64), multiplier, shift, zero_point, -128, 127))  # ties differ


@njit
def _requantize_tile_6x64(acc, table, channel, zero_point, low, high, width, out, row0, count):
    tile = stack_matrix_i32(6, 64)
    for r in range(6):
        for c in range(64):
            tile[r, c] = acc[r, c]
    requantize_tile(tile, table, channel, zero_point, low, high, width, out, row0, count, 6, 64)


@pytest.mark.parametrize("count", [1, 4, 6])
@pytest.mark.parametrize("width", [64, 40])
def test_requantize_tile_matches_the_reference(count, width):
    """A register tile's epilogue (full panels vector by vector over the rows, partial ones
    row by row) writes exactly out[row0:row0 + count, channel:channel + width], each value
    TFLite's requantize of its accumulator, for both clamp kinds and the halves_up table."""
    rng = np.random.default_rng(count * width)
    acc = rng.integers(-2 ** 31, 2 ** 31, (6, 64)).astype(np.int32)
    acc[:, :32] = rng.integers(-40000, 40000, (6, 32))
    channels, channel, row0 = 200, 64, 3
    pairs = [quantize_multiplier(real) for real in 2.0 ** rng.uniform(-30, 2, channels)]
    multiplier = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    for zero_point, low, high, halves_up in [(-128, -128, 127, False), (-5, 10, 90, False),
                                             (3, -128, 127, False), (3, -128, 127, True)]:
        out = np.full((12, channels), 77, np.int8)
        _requantize_tile_6x64(acc, requantize_table(multiplier, shift, halves_up), channel,
                              zero_point, low, high, width, out, row0, count)
        part = slice(channel, channel + width)
        reference = qreference.requantize_half_up if halves_up else qreference.requantize
        expected = reference(acc[:count, :width].astype(np.int64), multiplier[part],
                             shift[part], zero_point, low, high)
        assert np.array_equal(out[row0:row0 + count, part], expected)
        untouched = out.copy()
        untouched[row0:row0 + count, part] = 77
        assert (untouched == 77).all()


def test_quantize_multiplier_represents_the_real():
    for real in [1e-9, 2.0 ** -31, 0.0037, 0.25, 0.5, 0.99999999, 1.0, 1.5, 7.3]:
        multiplier, shift = quantize_multiplier(real)
        assert 2 ** 30 <= multiplier < 2 ** 31
        assert abs(multiplier * 2.0 ** (shift - 31) - real) <= 2.0 ** (shift - 32)
    assert quantize_multiplier(0.0) == (0, 0) and quantize_multiplier(2.0 ** -40) == (0, 0)


STEM_CASES = [(32, 17, 2, "tf_same", 2), (5, 7, 1, "torch", 1), (1, 3, 2, "torch", 3),
              (33, 6, 2, "tf_same", 1), (64, 13, 1, "tf_same", 1)]


def _stem_case(c_out, out_w, stride, padding, batch, extra_columns):
    """(padded NCHW input, weight, bias, zero point, epilogue args, expected, out shape):
    the runner's input buffer, bordered with the zero point, exactly as wide as the taps
    need plus `extra_columns`."""
    rng = np.random.default_rng(c_out)
    height, width = 9, (out_w - 1) * stride + 2
    out_h, top = conv_output_size(height, 3, stride, padding)
    out_w, left = conv_output_size(width, 3, stride, padding)
    x = int8(rng, batch, height, width, 3)  # NHWC
    weight, bias = int8(rng, c_out, 3, 3, 3), rng.integers(-5000, 5000, c_out).astype(np.int32)
    zero_point = -7
    multiplier, shift, out_zp, low, high = epilogue(rng, c_out)
    padded = np.full((batch, 3, max(top + height, (out_h - 1) * stride + 3),
                      max(left + width, (out_w - 1) * stride + 3) + extra_columns),
                     zero_point, np.int8)
    padded[:, :, top:top + height, left:left + width] = x.transpose(0, 3, 1, 2)
    acc = qreference.conv2d(x, weight, bias, stride, top, left, out_h, out_w, zero_point)
    expected = qreference.requantize(acc, multiplier, shift, out_zp, low, high)
    weight_sum = weight.reshape(c_out, -1).astype(np.int64).sum(1)
    return (padded, weight, bias, weight_sum, zero_point, (requantize_table(multiplier, shift),
            stride, out_zp, low, high), expected)


@pytest.mark.parametrize("c_out,out_w,stride,padding,batch", STEM_CASES)
def test_qconv3x3_stem(c_out, out_w, stride, padding, batch):
    padded, weight, bias, weight_sum, zero_point, args, expected = _stem_case(
        c_out, out_w, stride, padding, batch, extra_columns=0)
    out = np.full(expected.shape, 99, np.int8)
    qconv3x3_nchw_to_nhwc(padded, pack_qconv3x3_weights(weight),
                          (bias - zero_point * weight_sum).astype(np.int32), *args, out)
    assert np.array_equal(out, expected)


@pytest.mark.skipif(not VNNI, reason="the host has no AVX-512 VNNI")
@pytest.mark.parametrize("c_out,out_w,stride,padding,batch", STEM_CASES)
@pytest.mark.parametrize("variant", ["avx512vnni", "avxvnni"])
def test_qconv3x3_stem_vnni(c_out, out_w, stride, padding, batch, variant):
    """Both tiles, on the one-column-wider buffer the op allocates, holding q + 128 as u8
    bits (ops/stem.py)."""
    from mobinumba.kernels.vnni_stem import (STEM_TILES, pack_vnni_conv3x3_weights,
                                             qconv3x3_nchw_to_nhwc_vnni_kernel)

    padded, weight, bias, weight_sum, zero_point, args, expected = _stem_case(
        c_out, out_w, stride, padding, batch, extra_columns=1)
    tile = STEM_TILES[variant]
    out = np.full(expected.shape, 99, np.int8)
    folded = (bias - (zero_point + 128) * weight_sum).astype(np.int32)
    flipped = padded ^ np.int8(-128)  # the kernel reads q + 128 as u8 bits (ops/stem.py)
    qconv3x3_nchw_to_nhwc_vnni_kernel(tile)(
        flipped, *pack_vnni_conv3x3_weights(weight, folded, tile.nr), *args, out)
    assert np.array_equal(out, expected)


DEPTHWISE_CASES = [
    (1, 5, 1, "torch", 2), (7, 8, 2, "tf_same", 1), (33, 7, 2, "torch", 2),
    (64, 6, 1, "tf_same", 1), (5, 8, 2, "tf_same", 2),
    # several rows per task, a short last band, both strides
    (9, 30, 1, "tf_same", 2), (16, 31, 2, "torch", 1), (3, 45, 2, "tf_same", 1),
    # whole vectors of channels (the VNNI kernel's one-stream rows), 8 and 16 lanes
    (32, 13, 1, "torch", 1), (48, 12, 2, "tf_same", 2)]


def _depthwise_case(channels, size, stride, padding, batch, relu=False):
    """(x, weight, bias, zero point, epilogue args, expected, geometry) of a depthwise case
    on a (size, size + 1) input, and TFLite's result from the NumPy reference; relu: the
    clamp starts at the output zero point (the kernels' clamped epilogue); "full": and it is
    [-128, 127] with the zero point -128."""
    rng = np.random.default_rng(channels)
    out_h, top = conv_output_size(size, 3, stride, padding)
    out_w, left = conv_output_size(size + 1, 3, stride, padding)
    x = int8(rng, batch, size, size + 1, channels)
    weight = int8(rng, channels, 1, 3, 3)
    bias = rng.integers(-5000, 5000, channels).astype(np.int32)
    zero_point = 11
    multiplier, shift, out_zp, low, high = epilogue(rng, channels)
    low = out_zp if relu else low
    if relu == "full":  # ReLU6 on the whole int8 range (the kernels' FULL_RANGE form)
        out_zp, low, high = -128, -128, 127
    acc = qreference.conv2d(x, weight, bias, stride, top, left, out_h, out_w, zero_point,
                            groups=channels)
    expected = qreference.requantize(acc, multiplier, shift, out_zp, low, high)
    weight_sum = weight.reshape(channels, -1).astype(np.int64).sum(1)
    return (x, weight, bias, weight_sum, zero_point, (requantize_table(multiplier, shift),),
            (out_zp, low, high), expected, (out_h, out_w, top, left))


@pytest.mark.parametrize("channels,size,stride,padding,batch", DEPTHWISE_CASES)
def test_qdwconv3x3(channels, size, stride, padding, batch):
    x, weight, bias, weight_sum, zero_point, requant, clamp, expected, geometry = \
        _depthwise_case(channels, size, stride, padding, batch)
    out_h, out_w, top, left = geometry
    packed = pack_qdwconv3x3_weights(weight)
    folded = (bias - zero_point * weight_sum).astype(np.int32)
    for band in sorted({qdwconv3x3_band(out_h), 1, 4}):  # output rows per task
        out = np.full((batch, out_h, out_w, channels), 99, np.int8)
        qdwconv3x3_nhwc(x, tile_qdwconv3x3_weights(packed, out_w),
                        tile_qdwconv3x3_bias(folded, out_w), *requant, stride, top, left,
                        zero_point, *clamp, band, out)
        assert np.array_equal(out, expected), band


@pytest.mark.skipif(not VNNI, reason="the host has no AVX-512 VNNI")
@pytest.mark.parametrize("channels,size,stride,padding,batch", DEPTHWISE_CASES)
@pytest.mark.parametrize("lanes", [16, 8])
@pytest.mark.parametrize("relu", [False, True, "full"])
def test_qdwconv3x3_vnni(channels, size, stride, padding, batch, lanes, relu):
    """zmm and ymm (AVX-VNNI's width) vectors; channels that are not whole vectors go
    through the scalar tail; the three epilogues (relu: the clamped one; "full": clamped to
    the whole int8 range from a zero point of -128)."""
    from mobinumba.kernels.vnni_depthwise import (pack_vnni_dwconv3x3_weights,
                                                  qdwconv3x3_nhwc_vnni_kernel,
                                                  vnni_dwconv3x3_bias)

    x, weight, bias, weight_sum, zero_point, requant, clamp, expected, geometry = \
        _depthwise_case(channels, size, stride, padding, batch, relu)
    out_h, out_w, top, left = geometry
    folded = vnni_dwconv3x3_bias((bias - (zero_point + 128) * weight_sum).astype(np.int32),
                                 lanes)
    kernel = qdwconv3x3_nhwc_vnni_kernel(lanes)
    for band in sorted({qdwconv3x3_band(out_h), 1, 4}):  # output rows per task
        out = np.full((batch, out_h, out_w, channels), 99, np.int8)
        kernel(x, pack_vnni_dwconv3x3_weights(weight, lanes), folded, *requant, stride, top,
               left, zero_point, *clamp, band, out)
        assert np.array_equal(out, expected), band


@pytest.mark.skipif(not VNNI, reason="the host has no AVX-512 VNNI")
@pytest.mark.parametrize("channels,size,stride,padding,batch,c_out", [
    (32, 13, 1, "torch", 2, 64), (48, 12, 2, "tf_same", 1, 40), (9, 30, 1, "tf_same", 1, 70),
    (16, 31, 2, "torch", 2, 16)])
@pytest.mark.parametrize("variant", ["avx512vnni", "avxvnni"])
@pytest.mark.parametrize("band,splits", [(1, 1), (2, 3), (5, 1)])
def test_qblock_vnni(channels, size, stride, padding, batch, c_out, variant, band, splits):
    """The fused depthwise + pointwise block: the depthwise case's result (TFLite's, from the
    NumPy reference) through the pointwise reference, equal on every element; bands of one
    and several rows, the panels shared out between tasks (splits)."""
    from mobinumba.kernels.vnni import TILES, pack_vnni_weights
    from mobinumba.kernels.vnni_block import qblock_nhwc_vnni_kernel
    from mobinumba.kernels.vnni_depthwise import (pack_vnni_dwconv3x3_weights,
                                                  vnni_dwconv3x3_bias)

    x, weight, bias, weight_sum, zero_point, requant, clamp, mid, geometry = \
        _depthwise_case(channels, size, stride, padding, batch)
    out_h, out_w, top, left = geometry
    tile = TILES[variant]
    lanes = tile.lanes
    rng = np.random.default_rng(c_out)
    pw_weight = int8(rng, c_out, channels, 1, 1)
    pw_bias = rng.integers(-5000, 5000, c_out).astype(np.int32)
    multiplier, shift, out_zp, low, high = epilogue(rng, c_out)
    mid_zp = clamp[0]
    acc = qreference.dense(mid.reshape(-1, channels), pw_weight[:, :, 0, 0], pw_bias, mid_zp)
    expected = qreference.requantize(acc, multiplier, shift, out_zp, low, high).reshape(
        batch, out_h, out_w, c_out)
    pw_folded = (pw_bias - (mid_zp + 128) * pw_weight.reshape(c_out, -1).astype(np.int64)
                 .sum(1)).astype(np.int32)
    packed, packed_bias = pack_vnni_weights(pw_weight, pw_folded, tile.nr)
    bands = (out_h + band - 1) // band
    splits = min(splits, packed.shape[0])
    scratch = np.empty((batch * bands * splits, band * out_w, channels), np.int8)
    out = np.full((batch, out_h, out_w, c_out), 99, np.int8)
    qblock_nhwc_vnni_kernel(lanes, tile)(
        x, pack_vnni_dwconv3x3_weights(weight, lanes),
        vnni_dwconv3x3_bias((bias - (zero_point + 128) * weight_sum).astype(np.int32), lanes),
        *requant, stride, top, left, zero_point, *clamp, band, splits, packed, packed_bias,
        requantize_table(multiplier, shift), out_zp, low, high, scratch, out)
    assert np.array_equal(out, expected)


POINTWISE_SHAPES = [(1, 1, 1), (37, 13, 70), (61, 64, 64), (7, 130, 33), (29, 3, 129),
                    (100, 1024, 65)]


def _pointwise_case(rows, c_in, c_out):
    rng = np.random.default_rng(rows * c_in + c_out)
    x = int8(rng, rows, c_in)
    weight = int8(rng, c_out, c_in, 1, 1)
    bias = rng.integers(-5000, 5000, c_out).astype(np.int32)
    zero_point = -3
    multiplier, shift, out_zp, low, high = epilogue(rng, c_out)
    acc = qreference.dense(x, weight[:, :, 0, 0], bias, zero_point)
    expected = qreference.requantize(acc, multiplier, shift, out_zp, low, high)
    weight_sum = weight.reshape(c_out, -1).astype(np.int64).sum(1)
    return x, weight, bias, weight_sum, zero_point, (requantize_table(multiplier, shift), out_zp,
                                                     low, high), expected


@pytest.mark.parametrize("rows,c_in,c_out", POINTWISE_SHAPES)
def test_qpwconv_portable(rows, c_in, c_out):
    x, weight, bias, weight_sum, zero_point, args, expected = _pointwise_case(rows, c_in,
                                                                              c_out)
    out = np.full((rows, c_out), 99, np.int8)
    folded = (bias - zero_point * weight_sum).astype(np.int32)
    qpwconv_nhwc(x, pack_qpointwise_weights(weight), folded, *args, out)
    assert np.array_equal(out, expected)


@pytest.mark.skipif(not VNNI, reason="the host has no AVX-512 VNNI")
@pytest.mark.parametrize("rows,c_in,c_out", POINTWISE_SHAPES)
@pytest.mark.parametrize("variant", ["avx512vnni", "avxvnni"])
def test_qpwconv_vnni(rows, c_in, c_out, variant):
    """Both tiles; the ymm one is encoded with EVEX here (AVX-512 VL), with VEX (AVX-VNNI)
    on a target without AVX-512 (test_int8_network_built_for_another_target)."""
    from mobinumba.kernels.vnni import TILES, pack_vnni_weights, qpwconv_nhwc_vnni_kernel

    x, weight, bias, weight_sum, zero_point, args, expected = _pointwise_case(rows, c_in,
                                                                              c_out)
    out = np.full((rows, c_out), 99, np.int8)
    folded = (bias - (zero_point + 128) * weight_sum).astype(np.int32)
    tile = TILES[variant]
    qpwconv_nhwc_vnni_kernel(tile)(x, *pack_vnni_weights(weight, folded, tile.nr), *args, out)
    assert np.array_equal(out, expected)


AMX_SHAPES = [(1, 4, 1), (31, 32, 70), (32, 64, 32), (61, 64, 64), (7, 132, 33),
              (100, 1024, 65), (196, 512, 512), (33, 8, 129), (49, 24, 31)]


@pytest.mark.skipif(not matrix_tiles(), reason="the host has no AMX-INT8 the process may use")
@pytest.mark.parametrize("rows,c_in,c_out", AMX_SHAPES)
def test_qpwconv_amx(rows, c_in, c_out):
    """Rows below 32 (a padded copy), rows ending in a partial block (the overlapping last
    block), depths stepping by 64, 32, 8 and 4 bytes, partial 32-channel panels."""
    from mobinumba.kernels.amx import (depth_step, pack_amx_weights, qpwconv_nhwc_amx,
                                       tile_config)

    x, weight, bias, weight_sum, zero_point, args, expected = _pointwise_case(rows, c_in,
                                                                              c_out)
    out = np.full((rows, c_out), 99, np.int8)
    folded = (bias - zero_point * weight_sum).astype(np.int32)  # signed x signed: no +128
    step = depth_step(c_in)
    qpwconv_nhwc_amx(x, *pack_amx_weights(weight, folded), *args, tile_config(step), step, out)
    assert np.array_equal(out, expected)


def test_depth_step_never_reads_past_a_pixel():
    from mobinumba.kernels.amx import depth_step

    assert [depth_step(c) for c in (1024, 32, 96, 24, 12, 3, 130, 1)] == \
        [64, 32, 32, 8, 4, None, None, None]


@pytest.mark.parametrize("cpu,features,expected", [
    ("sapphirerapids", "", True), ("graniterapids", "", True), ("icelake-server", "", False),
    ("znver5", "", False), ("haswell", "+avx2,+amx-int8", False),
    ("icelake-server", "+avx512f,+amx-tile,+amx-int8", True)])
def test_matrix_tiles_reads_the_compile_target(monkeypatch, cpu, features, expected):
    """matrix_tiles (the AMX GEMM) follows the compile target, as byte_permute does, and asks
    the operating system only for a target with AMX-INT8 and AMX-TILE (the request stands
    in for a host that grants it); MOBINUMBA_AMX=0 turns it off."""
    import numba

    from mobinumba.kernels import amx, qtargets

    asked = []
    monkeypatch.setattr(numba.config, "CPU_NAME", cpu)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    monkeypatch.setattr(amx, "request_tile_data", lambda: asked.append(1) or True)
    qtargets.matrix_tiles.cache_clear()
    try:
        assert qtargets.matrix_tiles() is expected
        assert len(asked) == int(expected)
        monkeypatch.setenv("MOBINUMBA_AMX", "0")
        qtargets.matrix_tiles.cache_clear()
        assert qtargets.matrix_tiles() is False
    finally:
        qtargets.matrix_tiles.cache_clear()


@pytest.mark.slow
@pytest.mark.skipif(not VNNI, reason="the host has no AVX-512 VNNI")
def test_vnni_kernel_uses_vpdpbusd():
    """Compiled afresh (code loaded from the disk cache has no assembly to inspect): 10 s."""
    from mobinumba.kernels.vnni import TILES, pack_vnni_weights, qpwconv_nhwc_vnni_kernel

    tile = TILES["avx512vnni"]
    fresh = njit(parallel=True)(qpwconv_nhwc_vnni_kernel(tile).py_func)
    x, weight, bias, weight_sum, zero_point, args, expected = _pointwise_case(7, 130, 33)
    out = np.empty((7, 33), np.int8)
    fresh(x, *pack_vnni_weights(weight, (bias - (zero_point + 128) * weight_sum).astype(
        np.int32), tile.nr), *args, out)
    assert np.array_equal(out, expected)
    assert any("vpdpbusd" in asm and "zmm" in asm for asm in fresh.inspect_asm().values())


@pytest.mark.parametrize("size,channels,batch", [(7, 33, 2), (4, 1, 1), (2, 1024, 3)])
def test_qpools(size, channels, batch):
    rng = np.random.default_rng(size)
    x = int8(rng, batch, size, size, channels)
    for average, mean in [(qaverage_pool_nhwc, qmean_nhwc),
                          (qaverage_pool_nhwc_serial, qmean_nhwc_serial)]:
        out = np.full((batch, channels), 99, np.int8)
        average(x, out)
        assert np.array_equal(out, qreference.average_pool(x))
        for source, target in [(Quantization(0.05, -9), Quantization(0.031, 4)),
                               (Quantization(0.02, 100), Quantization(0.08, -128))]:
            for pool_op in ("mean", "mean_flat"):
                params = mean_requantization(source, target, size * size, pool_op)
                out[...] = 99
                mean(x, params.offset, params.multiplier, params.shift, params.bias,
                     mean_rounds_half_up(channels, pool_op), out)
                assert np.array_equal(out, qreference.mean(x, source, target, pool_op)), \
                    pool_op


@pytest.mark.parametrize("features,classes,batch", [(1024, 1001, 2), (13, 5, 1), (64, 257, 3)])
def test_qdense(features, classes, batch):
    rng = np.random.default_rng(classes)
    x = int8(rng, batch, features)
    weight = int8(rng, classes, features)
    bias = rng.integers(-5000, 5000, classes).astype(np.int32)
    zero_point = 5
    multiplier, shift, out_zp, _, _ = epilogue(rng, classes)
    out = np.full((batch, classes), 99, np.int8)
    folded = (bias - zero_point * weight.astype(np.int64).sum(1)).astype(np.int32)
    qdense(x, pack_qdense_weights(weight), folded, multiplier, shift, out_zp, out)
    expected = qreference.requantize_half_up(qreference.dense(x, weight, bias, zero_point),
                                             multiplier, shift, out_zp, -128, 127)
    assert np.array_equal(out, expected)


@pytest.fixture(scope="module")
def small_int8_file():
    """A width-0.25 random MobileNetV1 at 40x40 (tf_same padding: asymmetric stride-2 pads),
    quantized with random calibration batches, and its float32 source."""
    model_file = random_model_file(0.25, 11, 40, seed=3)
    model_file.info = dataclasses.replace(model_file.info, padding="tf_same")
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((2, 3, 40, 40)).astype(np.float32) for _ in range(2)]
    int8_file, _ = quantize_model_file(model_file, batches)
    return int8_file, model_file


@pytest.fixture(scope="module")
def small_int8_model(small_int8_file):
    """small_int8_file's two models: (int8 file, int8 Model, float32 Model)."""
    int8_file, model_file = small_int8_file
    return int8_file, Model(int8_file), Model(model_file)


@pytest.mark.parametrize("tiles", [
    pytest.param(True, marks=pytest.mark.skipif(
        not matrix_tiles(), reason="the host has no AMX-INT8 the process may use")),
    False])
def test_int8_network_is_bit_exact(small_int8_file, monkeypatch, tiles):
    """On an AMX host, both with the AMX pointwise GEMM and without it (MOBINUMBA_AMX=0's
    path: the vpdpbusd kernels and the fused blocks)."""
    from mobinumba.kernels import qtargets

    int8_file, _ = small_int8_file
    if not tiles:
        monkeypatch.setattr(qtargets, "matrix_tiles", lambda: False)
    model = Model(int8_file)
    rng = np.random.default_rng(9)
    # batch > 1, odd sizes; 96x96 runs fused depthwise + pointwise blocks on VNNI hosts
    for shape in ((3, 40, 40, 3), (1, 33, 27, 3), (2, 96, 96, 3)):
        q = int8(rng, *shape)
        assert np.array_equal(model.run_quantized(q), qreference.forward(int8_file, q))
    workspace = model._workspaces[(2, 96, 96)]
    if tiles:
        amx = [op.spec.name for op, kernel, _ in workspace.block_calls
               if kernel.py_func.__name__ == "qpwconv_nhwc_amx"]
        assert amx == [f"block{b:02d}_pw" for b in range(1, 14)], amx
    elif VNNI:
        fused = [op.spec.name for op, kernel, _ in workspace.block_calls
                 if kernel.py_func.__name__ == "qblock_nhwc_vnni"]
        assert fused == ["block01_dw", "block02_dw", "block03_dw", "block04_dw",
                         "block05_dw", "block06_dw", "block07_dw", "block08_dw",
                         "block09_dw", "block10_dw", "block11_dw"], fused  # 3x3: 6 rows for 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale,zero_point", [(0.0078125, -1), (0.02, 5), (1.0, -128),
                                              (0.3, 127)])
@pytest.mark.parametrize("flip", [0, 128])
def test_quantize_nchw_matches_quantize(dtype, scale, zero_point, flip):
    """The input kernel = TFLite QUANTIZE: float32 division, std::round (halves away from
    zero, computed exactly in float64 here), + zero point, clamp; into a strided view; with
    flip 128 the same values + 128 as u8 bits (the vpdpbusd stem's input)."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 3, 9, 11)) * 100 * scale).astype(dtype)
    flat = x.reshape(-1)
    flat[:8] = np.array([0.5, -0.5, 1.5, -2.5, 0.49999997, -0.49999997, 1e30, -1e30]) * scale
    padded = np.full((2, 3, 12, 14), 99, np.int8)
    assert quantize_nchw(x, np.float32(scale), np.int32(zero_point), np.int32(flip),
                         padded[:, :, 1:10, 2:13]) == 0  # no NaN or Inf counted
    scaled = (x.astype(np.float32) / np.float32(scale)).astype(np.float64)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # exact for float32 values
    expected = np.clip(rounded + zero_point, -128, 127).astype(np.int8)
    written = padded[:, :, 1:10, 2:13].view(np.uint8).astype(np.int32)
    assert np.array_equal(written, (expected.astype(np.int32) + flip) % 256 if flip
                          else expected.view(np.uint8))
    assert np.array_equal(expected, Quantization(scale, zero_point).quantize(x))
    border = padded.copy()
    border[:, :, 1:10, 2:13] = 99
    assert (border == 99).all()  # nothing written outside the view


def test_nonfinite_inputs_are_counted_and_refused(small_int8_model):
    """The input kernel counts NaN and Inf (float32 and float64; a finite float64 beyond
    float32's range is not counted: it saturates); m(x), features() and profile() of an
    int8 model refuse such an input naming its first index, as the float model does."""
    _, model, _ = small_int8_model
    out = np.zeros((2, 3, 40, 40), np.int8)
    for dtype in (np.float32, np.float64):
        x = np.zeros((2, 3, 40, 40), dtype)
        x[1, 2, 5, 7], x[0, 1, 0, 3], x[1, 0, 39, 39] = np.nan, np.inf, -np.inf
        assert quantize_nchw(x, np.float32(0.02), np.int32(3), np.int32(0), out) == 3
    x = np.zeros((2, 3, 40, 40), np.float64)
    x[1, 1, 2, 3] = 1e300  # finite: quantizes to 127
    assert quantize_nchw(x, np.float32(0.02), np.int32(3), np.int32(0), out) == 0
    x[1, 2, 5, 7] = np.nan
    for call in (model, model.features, model.profile):
        with pytest.raises(InputError, match=re.escape("NaN or Inf (first at index "
                                                       "(1, 2, 5, 7))")):
            call(x)
    assert model(np.zeros_like(x)).shape == (2, 11)  # the next call runs


def test_call_quantizes_and_dequantizes(small_int8_model):
    """m(x) = dequantize(run_quantized(quantize(x))), and close to the float model."""
    int8_file, model, float_model = small_int8_model
    x = np.random.default_rng(4).standard_normal((2, 3, 40, 40)).astype(np.float32)
    q = model.input_quantization.quantize(x).transpose(0, 2, 3, 1)
    expected = model.output_quantization.dequantize(qreference.forward(int8_file, q))
    logits = model(x)
    assert logits.dtype == np.float32 and np.array_equal(logits, expected)
    assert np.abs(logits - float_model(x)).max() < 0.1 * np.abs(float_model(x)).max()


@pytest.mark.slow
@pytest.mark.parametrize("cpu,variant", [("haswell", "avx2"), ("x86-64", "portable"),
                                         ("alderlake", "avxvnni")])
def test_int8_network_built_for_another_target(target_children, cpu, variant):
    """alderlake: AVX2 + AVX-VNNI, no AVX-512 (this machine has both, so it runs): the
    stem, depthwise and fused blocks on vpdpbusd too (ymm); the others run the portable
    kernels, unfused."""
    report = target_children.report(cpu, "int8")  # tests/target_children.py
    vnni = variant == "avxvnni"
    kernels = (["qblock_nhwc_vnni", "qconv3x3_nchw_to_nhwc_vnni", "qdwconv3x3_nhwc_vnni"]
               if vnni else ["qconv3x3_nchw_to_nhwc", "qdwconv3x3_nhwc"])
    assert report == {"exact": True, "variants": [variant], "kernels": kernels}


@pytest.mark.skipif(not VNNI, reason="the host has no AVX-512 VNNI")
def test_store_quads_both_ways():
    """The depthwise quads (u8 bytes of three rows and a zero byte per int32), built by the
    byte permute (VBMI targets) and by widening (the others), at 16 and 8 lanes."""
    from mobinumba.kernels.vnni_depthwise import store_quads

    @njit
    def build(s0, s1, s2, out):
        for j in range(0, s0.shape[0], 16):
            store_quads(out[0], j, s0, s1, s2, j, 16, True)
            store_quads(out[1], j, s0, s1, s2, j, 16, False)
        for j in range(0, s0.shape[0], 8):
            store_quads(out[2], j, s0, s1, s2, j, 8, True)  # 8 lanes: widening either way
            store_quads(out[3], j, s0, s1, s2, j, 8, False)

    rng = np.random.default_rng(2)
    rows = [int8(rng, 64) for _ in range(3)]
    rows[0][:3] = [-128, 127, 0]
    out = np.zeros((4, 64), np.int32)
    build(*rows, out)
    u8 = [row.astype(np.int32) + 128 for row in rows]
    expected = u8[0] | (u8[1] << 8) | (u8[2] << 16)
    for variant in out:
        assert np.array_equal(variant, expected)


@pytest.mark.parametrize("cpu,features,expected", [
    ("znver4", "", True), ("icelake-server", "", True), ("cascadelake", "", False),
    ("haswell", "", False), ("znver4", "+avx512f,+avx512vnni,-avx512vbmi", False),
    ("cascadelake", "+avx512f,+avx512vbmi", True)])
def test_byte_permute_reads_the_compile_target(monkeypatch, cpu, features, expected):
    """byte_permute (the depthwise quads' vpermt2b) follows the compile target: the CPU's
    name when NUMBA_CPU_FEATURES is empty (Cascade Lake has VNNI without VBMI), else the
    features given."""
    import numba

    from mobinumba.kernels.qtargets import byte_permute

    monkeypatch.setattr(numba.config, "CPU_NAME", cpu)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    byte_permute.cache_clear()
    try:
        assert byte_permute() is expected
    finally:
        byte_permute.cache_clear()
