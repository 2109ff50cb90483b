"""Each kernel against a naive NumPy reference in float64, on boundary sizes.

Channels 1, odd, and not multiples of 8 or 16; spatial sizes 1, 7, 8, 14, 15, 112; strides 1
and 2; PyTorch and TF "SAME" padding; ReLU and ReLU6. Every comparison uses relative
tolerance 1e-5 (plus an absolute floor of 1e-5 of the output's scale for results that cancel
to near zero) and names the first failing index.
"""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mobinumba.padding import conv_output_size
from mobinumba.kernels.conv import conv3x3_nchw_to_nhwc_clamp, pack_conv3x3_weights
from mobinumba.kernels.depthwise import (dwconv3x3_nhwc_clamp, dwconv3x3s1_nhwc_clamp,
                                        pack_dwconv3x3_weights, tile_dwconv3x3_weights)
from mobinumba.kernels.head import dense_bias, global_avgpool_nhwc, pack_dense_weights
from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
from tfslim_graphs import tf_same_pads

RTOL = 1e-5
ACTIVATIONS = {"relu": np.float32(np.inf), "relu6": np.float32(6.0)}
SIZES = (1, 7, 8, 14, 15, 112)


def assert_close(actual, expected, what):
    """Fail with the first index where |actual - expected| > RTOL * |expected| + floor.

    Outputs start as NaN, so an element a kernel never writes fails too.
    """
    floor = RTOL * max(1.0, float(np.abs(expected).max()))
    # Written as "not <=" so that NaN (an output the kernel never wrote) counts as a mismatch.
    bad = ~(np.abs(actual.astype(np.float64) - expected) <= RTOL * np.abs(expected) + floor)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} mismatches, first at {index}: got "
                             f"{actual[index]!r}, expected {expected[index]!r}")


def clamp(values, act_max):
    return np.minimum(np.maximum(values, 0.0), float(act_max))


def naive_conv3x3(x, weight, bias, stride, pads, groups):
    """NCHW float64 convolution by a loop over the 9 taps. pads = (top, bottom, left, right)."""
    top, bottom, left, right = pads
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c_in, height, width = x.shape
    c_out = weight.shape[0]
    out_h = (height - 3) // stride + 1
    out_w = (width - 3) // stride + 1
    out = np.zeros((n, c_out, out_h, out_w)) + bias[None, :, None, None]
    for kh, kw in itertools.product(range(3), range(3)):
        patch = x[:, :, kh:kh + stride * (out_h - 1) + 1:stride,
                  kw:kw + stride * (out_w - 1) + 1:stride]  # (N, Cin, Ho, Wo)
        if groups == 1:
            out += np.einsum("nchw,oc->nohw", patch, weight[:, :, kh, kw].astype(np.float64))
        else:
            out += patch * weight[:, 0, kh, kw].astype(np.float64)[None, :, None, None]
    return out


def padding_for(size, stride, padding):
    out, before = conv_output_size(size, 3, stride, padding)
    after = (out - 1) * stride + 3 - size - before
    return out, before, after


def random(rng, *shape):
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


@pytest.mark.parametrize("padding", ["torch", "tf_same"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c_in,c_out", [(3, 32), (1, 1), (3, 7), (5, 33)])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_conv3x3_stem(c_in, c_out, size, stride, padding, activation):
    rng = np.random.default_rng(size * 100 + c_out)
    height, width = size, size + 1  # non-square: rows and columns cannot be swapped
    x = random(rng, 2, c_in, height, width)
    weight = random(rng, c_out, c_in, 3, 3) * 3
    bias = random(rng, c_out)
    out_h, top, bottom = padding_for(height, stride, padding)
    out_w, left, right = padding_for(width, stride, padding)
    out = np.full((2, out_h, out_w, c_out), np.nan, np.float32)
    # The kernel reads a padded input; rows/columns past what the output needs are allowed.
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom + 1), (left, right + 1)))
    conv3x3_nchw_to_nhwc_clamp(padded, *pack_conv3x3_weights(weight, bias), stride,
                               ACTIVATIONS[activation], out)
    expected = clamp(naive_conv3x3(x, weight, bias, stride, (top, bottom, left, right), 1),
                     ACTIVATIONS[activation])
    assert_close(out, expected.transpose(0, 2, 3, 1), f"conv3x3 {c_in}->{c_out} {size} s{stride}")


@pytest.mark.parametrize("padding", ["torch", "tf_same"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 7, 13, 17, 32, 40, 600])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_dwconv3x3(channels, size, stride, padding, activation):
    rng = np.random.default_rng(size * 100 + channels)
    height, width = size, size + 1
    x = random(rng, 2, height, width, channels)  # NHWC
    weight = random(rng, channels, 1, 3, 3) * 3
    bias = random(rng, channels)
    out_h, top, bottom = padding_for(height, stride, padding)
    out_w, left, right = padding_for(width, stride, padding)
    out = np.full((2, out_h, out_w, channels), np.nan, np.float32)
    packed = pack_dwconv3x3_weights(weight)
    dwconv3x3_nhwc_clamp(x, packed, bias, stride, top, left, ACTIVATIONS[activation], out)
    expected = naive_conv3x3(x.transpose(0, 3, 1, 2), weight, bias, stride,
                             (top, bottom, left, right), channels)
    expected = clamp(expected, ACTIVATIONS[activation]).transpose(0, 2, 3, 1)
    assert_close(out, expected, f"dwconv3x3 C={channels} {size} s{stride}")
    if stride == 1:  # the row-streaming kernel must agree on every stride-1 case
        out_s1 = np.full_like(out, np.nan)
        dwconv3x3s1_nhwc_clamp(x, packed, bias, *tile_dwconv3x3_weights(packed, bias),
                               ACTIVATIONS[activation], out_s1)
        assert_close(out_s1, expected, f"dwconv3x3s1 C={channels} {size}")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [1, 7, 8, 14, 15])
def test_tf_same_kernels_match_explicit_torch_padding(size, stride):
    """TF "SAME" for a 3x3 kernel, stated case by case rather than by conv_output_size's formula:
    (0 before, 1 after) on an even side at stride 2, (1, 1) otherwise. The reference pads with
    F.pad and then convolves without padding; rows and columns have opposite parities."""
    height, width = size, size + 1
    (top, bottom), (left, right) = tf_same_pads(height, stride), tf_same_pads(width, stride)
    assert conv_output_size(height, 3, stride, "tf_same")[1] == top
    assert conv_output_size(width, 3, stride, "tf_same")[1] == left
    rng = np.random.default_rng(size + 10 * stride)
    x = random(rng, 2, 5, height, width)  # NCHW
    padded = F.pad(torch.from_numpy(x).double(), (left, right, top, bottom))
    stem_weight, dw_weight, bias = random(rng, 7, 5, 3, 3), random(rng, 5, 1, 3, 3), random(rng, 7)
    act_max = ACTIVATIONS["relu6"]
    expected = F.conv2d(padded, torch.from_numpy(stem_weight).double(),
                        torch.from_numpy(bias).double(), stride=stride)
    expected = clamp(expected.numpy(), act_max).transpose(0, 2, 3, 1)  # (N, Ho, Wo, 7)
    out = np.full(expected.shape, np.nan, np.float32)
    # The stem kernel reads an explicitly padded input (the runner pads by conv_output_size).
    x_padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    conv3x3_nchw_to_nhwc_clamp(x_padded, *pack_conv3x3_weights(stem_weight, bias), stride,
                               act_max, out)
    assert_close(out, expected, f"stem tf_same {height}x{width} s{stride}")
    expected = F.conv2d(padded, torch.from_numpy(dw_weight).double(),
                        torch.from_numpy(bias[:5]).double(), stride=stride, groups=5)
    expected = clamp(expected.numpy(), act_max).transpose(0, 2, 3, 1)  # (N, Ho, Wo, 5)
    out = np.full(expected.shape, np.nan, np.float32)
    dwconv3x3_nhwc_clamp(np.ascontiguousarray(x.transpose(0, 2, 3, 1)),
                         pack_dwconv3x3_weights(dw_weight), bias[:5].copy(), stride, top, left,
                         act_max, out)
    assert_close(out, expected, f"dwconv tf_same {height}x{width} s{stride}")


# (rows = N*H*W, Cin, Cout): row counts around the 6-row tile and MobileNet's pixel counts,
# channels around the 32-wide panel; products kept small enough for a float64 reference.
PW_SHAPES = [(rows, c_in, c_out)
             for rows in (1, 5, 6, 7, 49, 64, 196, 225, 12544)
             for c_in, c_out in ((1, 1), (7, 13), (32, 64), (13, 33), (64, 31), (512, 1024),
                                 (1024, 17))
             if rows * c_in * c_out <= 2 ** 25]


@pytest.mark.parametrize("rows,c_in,c_out", PW_SHAPES)
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_pwconv(rows, c_in, c_out, activation):
    rng = np.random.default_rng(rows + c_in * 7 + c_out)
    x = random(rng, rows, c_in)
    weight = random(rng, c_out, c_in, 1, 1) * 3
    bias = random(rng, c_out)
    out = np.full((rows, c_out), np.nan, np.float32)
    pwconv_nhwc_clamp(x, *pack_pointwise_weights(weight, bias), ACTIVATIONS[activation], out)
    expected = clamp(x.astype(np.float64) @ weight[:, :, 0, 0].T.astype(np.float64) + bias,
                     ACTIVATIONS[activation])
    assert_close(out, expected, f"pwconv {rows}x{c_in}->{c_out}")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 7, 17, 1024])
def test_global_avgpool(size, channels):
    rng = np.random.default_rng(size + channels)
    x = random(rng, 3, size, size + 1, channels)
    out = np.full((3, channels), np.nan, np.float32)
    global_avgpool_nhwc(x, out)
    assert_close(out, x.astype(np.float64).mean(axis=(1, 2)), f"avgpool {size} C={channels}")


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("features,classes", [(1, 1), (7, 13), (1024, 1000), (1024, 1001),
                                              (17, 257)])
def test_dense(batch, features, classes):
    rng = np.random.default_rng(features + classes)
    x = random(rng, batch, features)
    weight = random(rng, classes, features)
    bias = random(rng, classes)
    out = np.full((batch, classes), np.nan, np.float32)
    dense_bias(x, pack_dense_weights(weight), bias, out)
    expected = x.astype(np.float64) @ weight.T.astype(np.float64) + bias
    assert_close(out, expected, f"dense {features}->{classes}")
