"""Ops built from the layer records of a weight file, their workspace, and the runner.

An op owns its layer's folded and packed weights and knows which kernel computes it. A
Workspace is built once per input shape (N, H, W): it allocates every buffer the forward pass
needs and binds each op to its input and output views, so running the network is one loop of
kernel calls with no allocation.
"""
import math
import time

import numpy as np

from .architecture import LayerSpec
from .kernels._common import aligned_copy, aligned_zeros
from .kernels.conv import conv3x3_nchw_to_nhwc_clamp, pack_conv3x3_weights
from .kernels.depthwise import (dwconv3x3_nhwc_clamp, dwconv3x3s1_nhwc_clamp,
                                pack_dwconv3x3_weights, tile_dwconv3x3_weights)
from .kernels.head import dense_bias, global_avgpool_nhwc, pack_dense_weights
from .kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp
from .weights import fold_batch_norm

ACT_MAX = {"relu": np.float32(np.inf), "relu6": np.float32(6.0)}


class StemConv:
    """Standard 3x3 conv + BN + activation: (N, 3, H, W) NCHW -> (N, Ho, Wo, C) NHWC.

    Its kernel reads a zero-padded copy of the input, which the Workspace provides.
    """

    def __init__(self, record, activation, padding):
        self.spec = record.spec
        weight, bias = fold_batch_norm(record)
        self.weight, self.bias = pack_conv3x3_weights(weight, bias)  # (P, Cin*9, NR), (P, NR)
        self.act_max = ACT_MAX[activation]
        self.padding = padding

    def output_shape(self, shape):
        n, _, height, width = shape
        out_h, out_w, _, _ = self.spec.output_size(height, width, self.padding)
        return n, out_h, out_w, self.spec.out_channels

    def padded_input(self, shape):
        """(padded shape, pad_top, pad_left): the zero-bordered input buffer this op reads."""
        n, channels, height, width = shape
        out_h, out_w, pad_top, pad_left = self.spec.output_size(height, width, self.padding)
        stride = self.spec.stride
        padded_h = max(pad_top + height, (out_h - 1) * stride + 3)
        padded_w = max(pad_left + width, (out_w - 1) * stride + 3)
        return (n, channels, padded_h, padded_w), pad_top, pad_left

    def bind(self, src, dst):
        return conv3x3_nchw_to_nhwc_clamp, (src, self.weight, self.bias, self.spec.stride,
                                            self.act_max, dst)


class DepthwiseConv:
    """Depthwise 3x3 conv + BN + activation: (N, H, W, C) -> (N, Ho, Wo, C).

    Stride-1 layers (one pixel of padding on every side under both padding rules) use the
    row-streaming kernel; stride-2 layers the per-pixel one.
    """

    def __init__(self, record, activation, padding):
        self.spec = record.spec
        weight, bias = fold_batch_norm(record)
        self.weight = pack_dwconv3x3_weights(weight)  # (3, 3, C)
        self.bias = aligned_copy(bias)  # (C,)
        self.weight_tile, self.bias_tile = tile_dwconv3x3_weights(self.weight, self.bias)
        self.act_max = ACT_MAX[activation]
        self.padding = padding

    def output_shape(self, shape):
        n, height, width, _ = shape
        out_h, out_w, _, _ = self.spec.output_size(height, width, self.padding)
        return n, out_h, out_w, self.spec.out_channels

    def bind(self, src, dst):
        _, _, pad_top, pad_left = self.spec.output_size(src.shape[1], src.shape[2], self.padding)
        if self.spec.stride == 1 and pad_top == 1 and pad_left == 1:
            return dwconv3x3s1_nhwc_clamp, (src, self.weight, self.bias, self.weight_tile,
                                            self.bias_tile, self.act_max, dst)
        return dwconv3x3_nhwc_clamp, (src, self.weight, self.bias, self.spec.stride,
                                      pad_top, pad_left, self.act_max, dst)


class PointwiseConv:
    """1x1 conv + BN + activation: (N, H, W, Cin) -> (N, H, W, Cout), as a GEMM."""

    def __init__(self, record, activation, padding):
        self.spec = record.spec
        weight, bias = fold_batch_norm(record)
        self.weight, self.bias = pack_pointwise_weights(weight, bias)  # (P, Cin, NR), (P, NR)
        self.act_max = ACT_MAX[activation]

    def output_shape(self, shape):
        return (*shape[:3], self.spec.out_channels)

    def bind(self, src, dst):
        rows = src.shape[0] * src.shape[1] * src.shape[2]
        return pwconv_nhwc_clamp, (src.reshape(rows, src.shape[3]), self.weight, self.bias,
                                   self.act_max, dst.reshape(rows, dst.shape[3]))


class GlobalAvgPool:
    """Mean over the spatial axes: (N, H, W, C) -> (N, C). Not a weight layer."""

    def __init__(self, channels):
        self.spec = LayerSpec("avgpool", "pool", channels, channels)

    def output_shape(self, shape):
        return shape[0], shape[3]

    def bind(self, src, dst):
        return global_avgpool_nhwc, (src, dst)


class Dense:
    """Fully connected layer with bias: (N, C) -> (N, K) logits."""

    def __init__(self, record, activation, padding):
        self.spec = record.spec
        self.weight = pack_dense_weights(record.weight)  # (chunks, C, CHUNK)
        self.bias = aligned_copy(record.bias)  # (K,)

    def output_shape(self, shape):
        return shape[0], self.spec.out_channels

    def bind(self, src, dst):
        return dense_bias, (src, self.weight, self.bias, dst)


OP_TYPES = {"conv": StemConv, "dwconv": DepthwiseConv, "pwconv": PointwiseConv, "dense": Dense}


def build_ops(layers, activation, padding):
    """The op list for validated layer records: each layer's op, with pooling before dense."""
    ops = []
    for record in layers:
        if record.kind == "dense":
            ops.append(GlobalAvgPool(record.spec.in_channels))
        ops.append(OP_TYPES[record.kind](record, activation, padding))
    return ops


def workspace_bytes(ops, n, height, width):
    """Bytes a Workspace for an (n, 3, height, width) input allocates."""
    padded_shape, _, _ = ops[0].padded_input((n, 3, height, width))
    shape = (n, 3, height, width)
    largest = 0
    for op in ops[:-1]:
        shape = op.output_shape(shape)
        largest = max(largest, math.prod(shape))  # Python ints: no overflow for any shape
    logits = n * ops[-1].spec.out_channels
    return 4 * (math.prod(padded_shape) + 2 * largest + logits)


class Workspace:
    """Every buffer of one forward pass for a fixed input shape, and the bound kernel calls.

    padded_input (N, 3, Hp, Wp) float32, zero borders: the stem conv reads it.
    input (N, 3, H, W): the interior view of padded_input; the caller copies its batch here.
    two ping-pong buffers, each as large as the largest intermediate activation: op i writes
    into buffer i % 2 and reads the other one.
    logits (N, num_classes) float32: the last op's output.
    """

    def __init__(self, ops, n, height, width):
        padded_shape, top, left = ops[0].padded_input((n, 3, height, width))
        self.padded_input = aligned_zeros(padded_shape)  # (N, 3, Hp, Wp)
        self.input = self.padded_input[:, :, top:top + height, left:left + width]  # (N, 3, H, W)
        shapes = []
        shape = self.input.shape
        for op in ops:
            shape = op.output_shape(shape)
            shapes.append(shape)
        largest = max(int(np.prod(s)) for s in shapes[:-1])
        ping_pong = [aligned_zeros(largest) for _ in range(2)]
        self.logits = aligned_zeros(shapes[-1])  # (N, num_classes)
        self.calls = []  # (op, kernel, args) in execution order
        src = self.padded_input
        for index, (op, shape) in enumerate(zip(ops, shapes)):
            if index == len(ops) - 1:
                dst = self.logits
            else:
                dst = ping_pong[index % 2][:int(np.prod(shape))].reshape(shape)
            kernel, args = op.bind(src, dst)
            self.calls.append((op, kernel, args))
            src = dst

    def run(self):
        """Run every kernel in order; the result is in self.logits."""
        for _, kernel, args in self.calls:
            kernel(*args)

    def run_profiled(self):
        """Run like run() and return [(op, seconds)] per op, timed with perf_counter."""
        timings = []
        for op, kernel, args in self.calls:
            start = time.perf_counter()
            kernel(*args)
            timings.append((op, time.perf_counter() - start))
        return timings
