"""The stem: a standard 3x3 conv + BN + activation on the RGB input (kind `conv`).

Runtime: (N, 3, H, W) NCHW -> (N, Ho, Wo, C) NHWC by the register-tiled GEMM kernel of
kernels/conv.py, which reads a zero-padded copy of the input that the Workspace provides.
int8 (QuantizedStemConv): the same shapes in int8, kernels/qconv.py, the input padded with
its zero point.
"""
import numpy as np

from ..kernels.conv import conv3x3_nchw_to_nhwc_clamp_kernel, pack_conv3x3_weights
from ..kernels.targets import target_tiles
from ..activation import activation_of
from .base import LayerKind, fold_batch_norm


class StemConv:
    """The stem's runtime op: folded weights packed into GEMM panels, bound to its kernel
    built for the compile target's stem tile (kernels/targets.py)."""

    def __init__(self, record, activation, padding):
        self.spec = record.spec
        weight, bias = fold_batch_norm(record)
        tile = target_tiles().stem
        self.kernel = conv3x3_nchw_to_nhwc_clamp_kernel(tile)
        # (P, Cin*9, NR), (P, NR)
        self.weight, self.bias = pack_conv3x3_weights(weight, bias, tile.nr)
        self.act_max = activation_of(activation).act_max
        self.epilogue_args = activation_of(activation).epilogue_args  # () or (slope,)
        self.padding = padding

    def output_shape(self, shape):
        """(N, Ho, Wo, C) of an (N, 3, H, W) input."""
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
        """(kernel, args) computing dst (N, Ho, Wo, C) from the padded input src."""
        return self.kernel, (src, self.weight, self.bias, self.spec.stride,
                                            self.act_max, dst, *self.epilogue_args)


class QuantizedStemConv(StemConv):
    """The int8 stem (TFLite CONV_2D int8): int8 NCHW input padded with the input zero point
    (so padded taps contribute 0, as TFLite's skipped taps), int8 NHWC output. The vpdpbusd
    kernel (kernels/vnni_stem.py) where the compile target has AVX-512 VNNI or AVX-VNNI,
    else kernels/qconv.py."""

    input_dtype = output_dtype = np.int8

    def __init__(self, record, activation, padding, input_quantization):
        from ..kernels.qtargets import int8_dot_product
        from .base import Int8Epilogue, int8_bias

        self.spec = record.spec
        self.padding = padding
        self.epilogue = Int8Epilogue(record, input_quantization, activation)
        self.output_quantization = self.epilogue.output_quantization
        zero_point = input_quantization.zero_point
        self.vnni = int8_dot_product() in ("avx512vnni", "avxvnni")
        # The vpdpbusd kernel reads its input as u8 = q + 128: the input QUANTIZE
        # (kernels/qinput.py, Model) stores q ^ input_flip, and the border holds the zero
        # point the same way.
        self.input_flip = 128 if self.vnni else 0
        self.pad_value = (zero_point + self.input_flip + 128) % 256 - 128  # int8 bits
        if self.vnni:
            from ..kernels.vnni_stem import (STEM_TILES, pack_vnni_conv3x3_weights,
                                             qconv3x3_nchw_to_nhwc_vnni_kernel)

            tile = STEM_TILES[int8_dot_product()]
            self.kernel = qconv3x3_nchw_to_nhwc_vnni_kernel(tile)
            # (P, Cin*3, NR*4) int8, (P, NR) int32 with (128 + zp) * sum w folded in
            self.weight, self.bias = pack_vnni_conv3x3_weights(
                record.weight, int8_bias(record, zero_point + 128, fold=True), tile.nr)
        else:
            from ..kernels.qconv import pack_qconv3x3_weights, qconv3x3_nchw_to_nhwc

            self.kernel = qconv3x3_nchw_to_nhwc
            self.weight = pack_qconv3x3_weights(record.weight)  # (P, Cin*9, NR) int16
            self.bias = int8_bias(record, zero_point, fold=True)  # (Cout,)

    def padded_input(self, shape):
        """StemConv's padded buffer, one column wider for the vpdpbusd kernel: its 4-byte
        loads read one byte past the last pixel's taps (with weight 0)."""
        (n, channels, padded_h, padded_w), pad_top, pad_left = super().padded_input(shape)
        return (n, channels, padded_h, padded_w + int(self.vnni)), pad_top, pad_left

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, Ho, Wo, C) int8 from the padded int8 input."""
        table, zero_point, low, high = self.epilogue.args
        return self.kernel, (src, self.weight, self.bias, table, self.spec.stride, zero_point,
                             low, high, dst)


class Conv3x3(LayerKind):
    """A standard 3x3 convolution: weight (Cout, Cin, 3, 3)."""

    op_class = StemConv
    int8_op_class = QuantizedStemConv
    name = "conv"
    description = "a 3x3 conv"
    kernel_size = 3
    strides = (1, 2)
    first = True




KIND = Conv3x3()
