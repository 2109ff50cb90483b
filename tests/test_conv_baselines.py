"""The standard-convolution baselines of the benchmark report against a naive NumPy loop.

conv3x3_nhwc_direct_clamp (the naive direct kernel), im2col3x3_nhwc and
conv3x3_nhwc_im2col_clamp (im2col + the pointwise GEMM), on the same boundary sizes as the
network's kernels: channels 1, odd, around the GEMM's 6-row tile and 32-wide panel; spatial
sizes 1 to 15 and non-square; strides 1 and 2; PyTorch and TF "SAME" padding; ReLU and ReLU6
alternating over the cases.
"""
import numpy as np
import pytest

from mobinumba.kernels.conv import (conv3x3_nhwc_direct_clamp, conv3x3_nhwc_im2col_clamp,
                                    im2col3x3_nhwc, pack_conv3x3_direct_weights,
                                    pack_conv3x3_im2col_weights)
from test_kernels import ACTIVATIONS, assert_close, clamp, naive_conv3x3, padding_for, random

SIZES = (1, 2, 7, 8, 15)
CHANNELS = [(1, 1), (3, 7), (5, 33), (17, 40), (32, 64)]


def case(c_in, c_out, size, stride, padding):
    """(x NHWC, weight OIHW, bias, pads (top, bottom, left, right), (Ho, Wo)) of one case."""
    rng = np.random.default_rng(size * 1000 + c_in * 10 + c_out + stride)
    height, width = size, size + 1  # non-square: rows and columns cannot be swapped
    x = random(rng, 2, height, width, c_in)
    weight = random(rng, c_out, c_in, 3, 3) * 3
    bias = random(rng, c_out)
    out_h, top, bottom = padding_for(height, stride, padding)
    out_w, left, right = padding_for(width, stride, padding)
    return x, weight, bias, (top, bottom, left, right), (out_h, out_w)


def expected_conv(x, weight, bias, stride, pads, activation):
    """NHWC float64 reference: naive_conv3x3 on the NCHW view, then clamp."""
    out = naive_conv3x3(x.transpose(0, 3, 1, 2), weight, bias, stride, pads, 1)
    return clamp(out, ACTIVATIONS[activation]).transpose(0, 2, 3, 1)


def activation_for(size, c_out):
    """ReLU or ReLU6, alternating over the cases: the epilogue is the same code for both."""
    return "relu6" if (size + c_out) % 2 else "relu"


@pytest.mark.parametrize("padding", ["torch", "tf_same"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c_in,c_out", CHANNELS)
def test_conv3x3_direct(c_in, c_out, size, stride, padding):
    activation = activation_for(size, c_out)
    x, weight, bias, pads, (out_h, out_w) = case(c_in, c_out, size, stride, padding)
    out = np.full((2, out_h, out_w, c_out), np.nan, np.float32)
    conv3x3_nhwc_direct_clamp(x, pack_conv3x3_direct_weights(weight), bias, stride, pads[0],
                              pads[2], ACTIVATIONS[activation], out)
    assert_close(out, expected_conv(x, weight, bias, stride, pads, activation),
                 f"direct conv3x3 {c_in}->{c_out} {size} s{stride}")


@pytest.mark.parametrize("padding", ["torch", "tf_same"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("c_in,c_out", CHANNELS)
def test_conv3x3_im2col(c_in, c_out, size, stride, padding):
    activation = activation_for(size, c_out)
    x, weight, bias, pads, (out_h, out_w) = case(c_in, c_out, size, stride, padding)
    columns = np.full((2, out_h, out_w, 9 * c_in), np.nan, np.float32)
    out = np.full((2, out_h, out_w, c_out), np.nan, np.float32)
    conv3x3_nhwc_im2col_clamp(x, *pack_conv3x3_im2col_weights(weight, bias), stride, pads[0],
                              pads[2], ACTIVATIONS[activation], columns, out)
    assert_close(out, expected_conv(x, weight, bias, stride, pads, activation),
                 f"im2col conv3x3 {c_in}->{c_out} {size} s{stride}")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", ["torch", "tf_same"])
def test_im2col_patches(stride, padding):
    """Each column is the zero-padded 3x3 patch in (kh, kw, ci) order, every element written."""
    x, _, _, (top, bottom, left, right), (out_h, out_w) = case(3, 1, 7, stride, padding)
    columns = np.full((2, out_h, out_w, 27), np.nan, np.float32)
    im2col3x3_nhwc(x, stride, top, left, columns)
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    for oh in range(out_h):
        for ow in range(out_w):
            patch = padded[:, oh * stride:oh * stride + 3, ow * stride:ow * stride + 3, :]
            np.testing.assert_array_equal(columns[:, oh, ow], patch.reshape(2, 27),
                                          err_msg=f"patch ({oh}, {ow})")
