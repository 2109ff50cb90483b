"""The kernels' LeakyReLU epilogue (a float32 `slope` passed last) against the naive NumPy
reference of test_kernels.py, on the same boundary sizes: every kernel that ends in the
activation (stem, depthwise both ways, pointwise, the standard-conv baselines), and the slope
combined with an upper bound (the epilogue is min(max(x, slope * x), act_max))."""
import numpy as np
import pytest

from mobinumba.activation import Activation
from mobinumba.kernels.conv import (conv3x3_nchw_to_nhwc_clamp, conv3x3_nhwc_direct_clamp,
                                    conv3x3_nhwc_im2col_clamp, pack_conv3x3_direct_weights,
                                    pack_conv3x3_im2col_weights, pack_conv3x3_weights)
from mobinumba.kernels.depthwise import (dwconv3x3_nhwc_clamp, dwconv3x3s1_nhwc_clamp,
                                        pack_dwconv3x3_weights, tile_dwconv3x3_weights)
from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
from test_kernels import assert_close, naive_conv3x3, padding_for, random

SLOPE = np.float32(0.1)
# (act_max, slope): RetinaFace's LeakyReLU(0.1), and a capped one so both bounds are live.
EPILOGUES = [(np.float32(np.inf), SLOPE), (np.float32(1.5), np.float32(0.25))]


def leaky(values, act_max, slope):
    """torch's LeakyReLU (x if x > 0 else slope * x) in float64, then min(., act_max)."""
    values = np.asarray(values, np.float64)
    return np.minimum(np.where(values > 0, values, float(slope) * values), float(act_max))


def test_activation_epilogue_args():
    """The ops pass nothing extra for relu/relu6 (the unchanged clamp specialisation) and a
    float32 slope for leaky_relu; the torch module is LeakyReLU with that slope."""
    assert Activation("relu").epilogue_args == ()
    assert Activation("relu6").epilogue_args == ()
    (slope,) = Activation("leaky_relu", 0.1).epilogue_args
    assert slope.dtype == np.float32 and slope == np.float32(0.1)
    assert Activation("leaky_relu", 0.1).torch_module().negative_slope == 0.1
    for name, bad in (("leaky_relu", None), ("leaky_relu", 1.0), ("leaky_relu", -0.1),
                      ("leaky_relu", float("nan")), ("relu", 0.1), ("gelu", None)):
        with pytest.raises(ValueError):
            Activation(name, bad)


@pytest.mark.parametrize("act_max,slope", EPILOGUES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [1, 7, 8, 15])
@pytest.mark.parametrize("padding", ["torch", "tf_same"])
def test_conv3x3_stem_leaky(size, stride, padding, act_max, slope):
    rng = np.random.default_rng(size * 10 + stride)
    height, width = size, size + 1
    x = random(rng, 2, 3, height, width)
    weight, bias = random(rng, 17, 3, 3, 3) * 3, random(rng, 17)
    out_h, top, bottom = padding_for(height, stride, padding)
    out_w, left, right = padding_for(width, stride, padding)
    out = np.full((2, out_h, out_w, 17), np.nan, np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom + 1), (left, right + 1)))
    conv3x3_nchw_to_nhwc_clamp(padded, *pack_conv3x3_weights(weight, bias), stride, act_max,
                               out, slope)
    expected = leaky(naive_conv3x3(x, weight, bias, stride, (top, bottom, left, right), 1),
                     act_max, slope)
    assert (expected < 0).any()  # the negative side is exercised
    assert_close(out, expected.transpose(0, 2, 3, 1), f"leaky stem {size} s{stride}")


@pytest.mark.parametrize("act_max,slope", EPILOGUES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [1, 7, 8, 14, 15])
@pytest.mark.parametrize("channels", [1, 13, 40])
def test_dwconv3x3_leaky(channels, size, stride, act_max, slope):
    rng = np.random.default_rng(size * 100 + channels)
    height, width = size, size + 1
    x = random(rng, 2, height, width, channels)
    weight, bias = random(rng, channels, 1, 3, 3) * 3, random(rng, channels)
    out_h, top, bottom = padding_for(height, stride, "torch")
    out_w, left, right = padding_for(width, stride, "torch")
    out = np.full((2, out_h, out_w, channels), np.nan, np.float32)
    packed = pack_dwconv3x3_weights(weight)
    dwconv3x3_nhwc_clamp(x, packed, bias, stride, top, left, act_max, out, slope)
    expected = leaky(naive_conv3x3(x.transpose(0, 3, 1, 2), weight, bias, stride,
                                   (top, bottom, left, right), channels),
                     act_max, slope).transpose(0, 2, 3, 1)
    assert_close(out, expected, f"leaky dwconv3x3 C={channels} {size} s{stride}")
    if stride == 1:
        out_s1 = np.full_like(out, np.nan)
        dwconv3x3s1_nhwc_clamp(x, packed, bias, *tile_dwconv3x3_weights(packed, bias),
                               act_max, out_s1, slope)
        assert_close(out_s1, expected, f"leaky dwconv3x3s1 C={channels} {size}")


@pytest.mark.parametrize("act_max,slope", EPILOGUES)
@pytest.mark.parametrize("rows,c_in,c_out", [(1, 1, 1), (7, 13, 33), (64, 32, 64),
                                              (225, 64, 31), (196, 512, 130)])
def test_pwconv_leaky(rows, c_in, c_out, act_max, slope):
    rng = np.random.default_rng(rows + c_in * 7 + c_out)
    x = random(rng, rows, c_in)
    weight, bias = random(rng, c_out, c_in, 1, 1) * 3, random(rng, c_out)
    out = np.full((rows, c_out), np.nan, np.float32)
    pwconv_nhwc_clamp(x, *pack_pointwise_weights(weight, bias), act_max, out, slope)
    expected = leaky(x.astype(np.float64) @ weight[:, :, 0, 0].T.astype(np.float64) + bias,
                     act_max, slope)
    assert_close(out, expected, f"leaky pwconv {rows}x{c_in}->{c_out}")


@pytest.mark.parametrize("method", ["direct", "im2col"])
def test_standard_conv_baselines_leaky(method):
    rng = np.random.default_rng(3)
    x = random(rng, 2, 9, 10, 8)  # NHWC
    weight, bias = random(rng, 12, 8, 3, 3) * 3, random(rng, 12)
    out_h, top, bottom = padding_for(9, 2, "torch")
    out_w, left, right = padding_for(10, 2, "torch")
    out = np.full((2, out_h, out_w, 12), np.nan, np.float32)
    act_max = np.float32(np.inf)
    if method == "direct":
        conv3x3_nhwc_direct_clamp(x, pack_conv3x3_direct_weights(weight), bias, 2, top, left,
                                  act_max, out, SLOPE)
    else:
        columns = np.empty((2, out_h, out_w, 9 * 8), np.float32)
        conv3x3_nhwc_im2col_clamp(x, *pack_conv3x3_im2col_weights(weight, bias), 2, top, left,
                                  act_max, columns, out, SLOPE)
    expected = leaky(naive_conv3x3(x.transpose(0, 3, 1, 2), weight, bias, 2,
                                   (top, bottom, left, right), 1), act_max, SLOPE)
    assert_close(out, expected.transpose(0, 2, 3, 1), f"leaky {method}")
