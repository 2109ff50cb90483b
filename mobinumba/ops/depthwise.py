"""Depthwise 3x3 conv + BN + activation: one 3x3 filter per channel (kind `dwconv`).

Runtime: (N, H, W, C) -> (N, Ho, Wo, C). Stride-1 layers with one pixel of padding on every
side (both padding rules agree there) use the row-streaming kernel; others the per-pixel one.
"""
import numpy as np

from ..activation import activation_of
from ..kernels._common import aligned_copy
from ..kernels.depthwise import (dwconv3x3_nhwc_clamp, dwconv3x3s1_nhwc_clamp,
                                 pack_dwconv3x3_weights, tile_dwconv3x3_weights)
from .base import LayerKind, fold_batch_norm


class DepthwiseConv:
    """The depthwise runtime op: folded weights as (3, 3, C) and tiled rows, its kernels."""

    def __init__(self, record, activation, padding):
        self.spec = record.spec
        weight, bias = fold_batch_norm(record)
        self.weight = pack_dwconv3x3_weights(weight)  # (3, 3, C)
        self.bias = aligned_copy(bias)  # (C,)
        self.weight_tile, self.bias_tile = tile_dwconv3x3_weights(self.weight, self.bias)
        self.act_max = activation_of(activation).act_max
        self.epilogue_args = activation_of(activation).epilogue_args  # () or (slope,)
        self.padding = padding

    def output_shape(self, shape):
        """(N, Ho, Wo, C) of an (N, H, W, C) input."""
        n, height, width, _ = shape
        out_h, out_w, _, _ = self.spec.output_size(height, width, self.padding)
        return n, out_h, out_w, self.spec.out_channels

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, Ho, Wo, C) from src (N, H, W, C)."""
        _, _, pad_top, pad_left = self.spec.output_size(src.shape[1], src.shape[2], self.padding)
        if self.spec.stride == 1 and pad_top == 1 and pad_left == 1:
            return dwconv3x3s1_nhwc_clamp, (src, self.weight, self.bias, self.weight_tile,
                                            self.bias_tile, self.act_max, dst,
                                            *self.epilogue_args)
        return dwconv3x3_nhwc_clamp, (src, self.weight, self.bias, self.spec.stride,
                                      pad_top, pad_left, self.act_max, dst,
                                      *self.epilogue_args)


class QuantizedDepthwiseConv(DepthwiseConv):
    """The int8 depthwise op (TFLite DEPTHWISE_CONV_2D int8, per-channel weights):
    kernels/qdepthwise.py, which borders its input rows with the input zero point (TFLite
    skips padded taps: the same sums)."""

    output_dtype = np.int8

    def __init__(self, record, activation, padding, input_quantization):
        from ..kernels.qdepthwise import pack_qdwconv3x3_weights
        from .base import Int8Epilogue, int8_bias

        self.spec = record.spec
        self.padding = padding
        self.input_zero_point = input_quantization.zero_point
        self.epilogue = Int8Epilogue(record, input_quantization, activation)
        self.output_quantization = self.epilogue.output_quantization
        self.weight = pack_qdwconv3x3_weights(record.weight)  # (3, 3, C) int16
        self.bias = int8_bias(record, self.input_zero_point, fold=True)  # (C,) int32

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, Ho, Wo, C) int8 from src (N, H, W, C) int8."""
        from ..kernels.qdepthwise import (qdwconv3x3_band, qdwconv3x3_nhwc,
                                          tile_qdwconv3x3_bias, tile_qdwconv3x3_weights)

        out_h, out_w, top, left = self.spec.output_size(src.shape[1], src.shape[2],
                                                        self.padding)
        multiplier, shift, zero_point, low, high = self.epilogue.args
        # (3, 3, Wo * C) int16, (Wo * C,) int32: every tap's weights and the bias per element
        # of an output row.
        return qdwconv3x3_nhwc, (src, tile_qdwconv3x3_weights(self.weight, out_w),
                                 tile_qdwconv3x3_bias(self.bias, out_w), multiplier, shift,
                                 self.spec.stride, top, left, self.input_zero_point,
                                 zero_point, low, high, qdwconv3x3_band(out_h), dst)


class Depthwise3x3(LayerKind):
    """A depthwise 3x3 convolution: weight (C, 1, 3, 3), as many outputs as inputs."""

    op_class = DepthwiseConv
    int8_op_class = QuantizedDepthwiseConv
    name = "dwconv"
    description = "a depthwise 3x3 conv"
    kernel_size = 3
    strides = (1, 2)
    body = True

    def weight_shape(self, in_channels, out_channels):
        return (in_channels, 1, 3, 3)

    def channels(self, weight_shape):
        return weight_shape[0], weight_shape[0]

    def weight_problem(self, shape):
        problem = super().weight_problem(shape)
        if problem is None and shape[1] != 1:
            return f"shape {shape}, a depthwise weight must be (C, 1, 3, 3)"
        return problem

    def weight_count(self, spec):
        return spec.out_channels * 9


    def conv_groups(self, record):
        return record.weight.shape[0]


KIND = Depthwise3x3()
