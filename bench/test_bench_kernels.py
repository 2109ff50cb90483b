"""Kernel micro-benchmarks on MobileNetV1's real layer shapes (width 1.0, 224x224, batch 1).

One benchmark group per layer type: stem conv, depthwise, pointwise, dense, and the two
standard 3x3 conv baselines of the report (naive direct and im2col + GEMM) on each block's
shape. Each benchmark calls the kernel once untimed first, so JIT compilation (or loading
from the cache) is not measured. Run with `pytest bench` (see README).
"""
import numpy as np
import pytest

from mobinumba.padding import conv_output_size
from mobinumba.kernels.conv import (conv3x3_nchw_to_nhwc_clamp, conv3x3_nhwc_direct_clamp,
                                    conv3x3_nhwc_im2col_clamp, pack_conv3x3_direct_weights,
                                    pack_conv3x3_im2col_weights, pack_conv3x3_weights)
from mobinumba.kernels.depthwise import (dwconv3x3_nhwc_clamp, dwconv3x3s1_nhwc_clamp,
                                         pack_dwconv3x3_weights, tile_dwconv3x3_weights)
from mobinumba.kernels.head import dense_bias, pack_dense_weights
from mobinumba.kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
from shapes import layer_shapes

SHAPES = layer_shapes()
BLOCK_CONVS = layer_shapes(standard_convs=True)["conv"][1:]  # without the stem
RELU6 = np.float32(6.0)
RNG = np.random.default_rng(0)


def random(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def geometry(shape):
    """(out_h, out_w, pad_top, pad_left) of a 3x3 layer with PyTorch padding."""
    out_h, pad_top = conv_output_size(shape.height, 3, shape.stride, "torch")
    out_w, pad_left = conv_output_size(shape.width, 3, shape.stride, "torch")
    return out_h, out_w, pad_top, pad_left


def run(benchmark, group, kernel, *args):
    """Benchmark kernel(*args) in `group`, after one untimed call that compiles it."""
    benchmark.group = group
    kernel(*args)
    benchmark(kernel, *args)


@pytest.mark.parametrize("shape", SHAPES["conv"], ids=lambda s: s.id)
def test_stem_conv(benchmark, shape):
    out_h, out_w, top, left = geometry(shape)
    # The stem reads a zero-bordered input, as the runner's Workspace provides it.
    padded = np.zeros((shape.n, shape.c_in, top + shape.height + 2, left + shape.width + 2),
                      np.float32)
    padded[:, :, top:top + shape.height, left:left + shape.width] = random(
        shape.n, shape.c_in, shape.height, shape.width)  # NCHW
    packed, packed_bias = pack_conv3x3_weights(random(shape.c_out, shape.c_in, 3, 3),
                                               random(shape.c_out))
    out = np.empty((shape.n, out_h, out_w, shape.c_out), np.float32)
    run(benchmark, "conv3x3 stem", conv3x3_nchw_to_nhwc_clamp, padded, packed, packed_bias,
        shape.stride, RELU6, out)


@pytest.mark.parametrize("shape", SHAPES["dwconv"], ids=lambda s: s.id)
def test_dwconv(benchmark, shape):
    out_h, out_w, top, left = geometry(shape)
    x = random(shape.n, shape.height, shape.width, shape.c_in)  # NHWC
    weight, bias = pack_dwconv3x3_weights(random(shape.c_in, 1, 3, 3)), random(shape.c_in)
    out = np.empty((shape.n, out_h, out_w, shape.c_in), np.float32)
    if shape.stride == 1:  # the kernel the runner picks for stride 1
        run(benchmark, "dwconv3x3 stride 1", dwconv3x3s1_nhwc_clamp, x, weight, bias,
            *tile_dwconv3x3_weights(weight, bias), RELU6, out)
    else:
        run(benchmark, "dwconv3x3", dwconv3x3_nhwc_clamp, x, weight, bias, shape.stride, top,
            left, RELU6, out)


@pytest.mark.parametrize("shape", SHAPES["pwconv"], ids=lambda s: s.id)
def test_pwconv(benchmark, shape):
    rows = shape.n * shape.height * shape.width
    x = random(rows, shape.c_in)  # (N*H*W, Cin)
    packed, packed_bias = pack_pointwise_weights(random(shape.c_out, shape.c_in, 1, 1),
                                                 random(shape.c_out))
    out = np.empty((rows, shape.c_out), np.float32)
    run(benchmark, "pwconv (GEMM)", pwconv_nhwc_clamp, x, packed, packed_bias, RELU6, out)


@pytest.mark.parametrize("shape", SHAPES["dense"], ids=lambda s: s.id)
def test_dense(benchmark, shape):
    x = random(shape.n, shape.c_in)
    weight = pack_dense_weights(random(shape.c_out, shape.c_in))
    out = np.empty((shape.n, shape.c_out), np.float32)
    run(benchmark, "dense", dense_bias, x, weight, random(shape.c_out), out)


@pytest.mark.parametrize("shape", BLOCK_CONVS, ids=lambda s: s.id)
def test_standard_conv_direct(benchmark, shape):
    out_h, out_w, top, left = geometry(shape)
    x = random(shape.n, shape.height, shape.width, shape.c_in)
    weight = pack_conv3x3_direct_weights(random(shape.c_out, shape.c_in, 3, 3))
    out = np.empty((shape.n, out_h, out_w, shape.c_out), np.float32)
    run(benchmark, "conv3x3 standard, naive direct", conv3x3_nhwc_direct_clamp, x, weight,
        random(shape.c_out), shape.stride, top, left, RELU6, out)


@pytest.mark.parametrize("shape", BLOCK_CONVS, ids=lambda s: s.id)
def test_standard_conv_im2col(benchmark, shape):
    out_h, out_w, top, left = geometry(shape)
    x = random(shape.n, shape.height, shape.width, shape.c_in)
    packed, packed_bias = pack_conv3x3_im2col_weights(random(shape.c_out, shape.c_in, 3, 3),
                                                      random(shape.c_out))
    columns = np.empty((shape.n, out_h, out_w, 9 * shape.c_in), np.float32)
    out = np.empty((shape.n, out_h, out_w, shape.c_out), np.float32)
    run(benchmark, "conv3x3 standard, im2col + GEMM", conv3x3_nhwc_im2col_clamp, x, packed,
        packed_bias, shape.stride, top, left, RELU6, columns, out)
