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

# Tasks a fused int8 block (QuantizedDepthwiseConv.bind_block) aims at per batch: as many as
# the depthwise kernel's bands (qdepthwise.qdwconv3x3_band), so two threads stay balanced.
BLOCK_TASKS = 14


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
    """The int8 depthwise op (TFLite DEPTHWISE_CONV_2D int8, per-channel weights): the
    vpdpbusd kernel (kernels/vnni_depthwise.py) where the compile target has AVX-512 VNNI or
    AVX-VNNI, else kernels/qdepthwise.py. Both border their input with the input zero point
    (TFLite skips padded taps: the same sums)."""

    output_dtype = np.int8

    def __init__(self, record, activation, padding, input_quantization):
        from ..kernels.qtargets import int8_dot_product
        from .base import Int8Epilogue, int8_bias

        self.spec = record.spec
        self.padding = padding
        self.input_zero_point = input_quantization.zero_point
        self.epilogue = Int8Epilogue(record, input_quantization, activation)
        self.output_quantization = self.epilogue.output_quantization
        self.lanes = {"avx512vnni": 16, "avxvnni": 8}.get(int8_dot_product())
        if self.lanes:
            from ..kernels.vnni_depthwise import (pack_vnni_dwconv3x3_weights,
                                                  vnni_dwconv3x3_bias)

            # (3 * Cp * 4,) int8 kernel rows; (Cp,) int32 with (128 + zp) * sum w folded in
            self.weight = pack_vnni_dwconv3x3_weights(record.weight, self.lanes)
            self.bias = vnni_dwconv3x3_bias(
                int8_bias(record, self.input_zero_point + 128, fold=True), self.lanes)
        else:
            from ..kernels.qdepthwise import pack_qdwconv3x3_weights

            self.weight = pack_qdwconv3x3_weights(record.weight)  # (3, 3, C) int16
            self.bias = int8_bias(record, self.input_zero_point, fold=True)  # (C,) int32

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, Ho, Wo, C) int8 from src (N, H, W, C) int8."""
        from ..kernels.qdepthwise import (qdwconv3x3_band, qdwconv3x3_nhwc,
                                          tile_qdwconv3x3_bias, tile_qdwconv3x3_weights)

        out_h, out_w, top, left = self.spec.output_size(src.shape[1], src.shape[2],
                                                        self.padding)
        table, zero_point, low, high = self.epilogue.args
        epilogue = (table, self.spec.stride, top, left, self.input_zero_point, zero_point, low,
                    high, qdwconv3x3_band(out_h), dst)
        if self.lanes:
            from ..kernels.vnni_depthwise import qdwconv3x3_nhwc_vnni_kernel

            return qdwconv3x3_nhwc_vnni_kernel(self.lanes), (src, self.weight, self.bias,
                                                             *epilogue)
        # (3, 3, Wo * C) int16, (Wo * C,) int32: every tap's weights and the bias per element
        # of an output row.
        return qdwconv3x3_nhwc, (src, tile_qdwconv3x3_weights(self.weight, out_w),
                                 tile_qdwconv3x3_bias(self.bias, out_w), *epilogue)

    def fuses_with(self, following, shape):
        """Whether this op and the `following` one run as one block (bind_block) for this
        op's output `shape` (N, Ho, Wo, C): both on vpdpbusd, the following op a pointwise
        one, and a band's Wo * rows filling the GEMM's row tiles (at most 10% idle rows: a
        14x14 layer's bands of 14 rows run 3 tiles of 6 and were 1.2x slower fused, 7x7
        1.6x, where the separate GEMM tiles all 196 or 49 rows)."""
        from ..kernels.qdepthwise import qdwconv3x3_band

        tile = getattr(following, "tile", None)
        if not self.lanes or tile is None:
            return False
        rows = qdwconv3x3_band(shape[1]) * shape[2]
        return -(-rows // tile.mr) * tile.mr <= 1.1 * rows

    def bind_block(self, following, src, dst):
        """(kernel, args) computing `following`'s output dst (N, Ho, Wo, Cout) int8 from this
        op's input src in one parallel region (kernels/vnni_block.py); dst must not share
        memory with src. Only where fuses_with(following, dst's depthwise shape)."""
        tile = following.tile
        from ..kernels.qdepthwise import qdwconv3x3_band
        from ..kernels.vnni_block import qblock_nhwc_vnni_kernel

        n, out_h, _, _ = dst.shape
        _, _, top, left = self.spec.output_size(src.shape[1], src.shape[2], self.padding)
        band = qdwconv3x3_band(out_h)
        bands = (out_h + band - 1) // band
        panels = following.weight.shape[0]
        # About 14 tasks per image, as the separate kernels have: bands of the small layers
        # (7 rows) split by panels.
        splits = max(1, min(panels, -(-BLOCK_TASKS // (n * bands))))
        scratch = np.empty((n * bands * splits, band * dst.shape[2], self.spec.out_channels),
                           np.int8)  # (tasks, rows, C): each task's depthwise rows
        return qblock_nhwc_vnni_kernel(self.lanes, tile), (
            src, self.weight, self.bias, *self.epilogue.args[:1], self.spec.stride, top, left,
            self.input_zero_point, *self.epilogue.args[1:], band, splits, following.weight,
            following.bias, *following.epilogue.args, scratch, dst)


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
