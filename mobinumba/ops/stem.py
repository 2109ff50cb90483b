"""The stem: a standard 3x3 conv + BN + activation on the RGB input (kind `conv`).

Runtime: (N, 3, H, W) NCHW -> (N, Ho, Wo, C) NHWC by the register-tiled GEMM kernel of
kernels/conv.py, which reads a zero-padded copy of the input that the Workspace provides.
int8 (QuantizedStemConv): the same shapes in int8, kernels/qconv.py, the input padded with
its zero point.
"""
import numpy as np

from ..kernels.conv import conv3x3_nchw_to_nhwc_clamp_kernel, pack_conv3x3_weights
from ..kernels.targets import target_tiles
from .base import ACT_MAX, LayerKind, fold_batch_norm


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
        self.act_max = ACT_MAX[activation]
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
                                            self.act_max, dst)


class QuantizedStemConv(StemConv):
    """The int8 stem (TFLite CONV_2D int8): int8 NCHW input padded with the input zero point
    (so padded taps contribute 0, as TFLite's skipped taps), int8 NHWC output."""

    input_dtype = output_dtype = np.int8

    def __init__(self, record, activation, padding, input_quantization):
        from ..kernels.qconv import pack_qconv3x3_weights
        from .base import Int8Epilogue, int8_bias

        self.spec = record.spec
        self.padding = padding
        self.pad_value = input_quantization.zero_point
        self.epilogue = Int8Epilogue(record, input_quantization, activation)
        self.output_quantization = self.epilogue.output_quantization
        self.weight = pack_qconv3x3_weights(record.weight)  # (Cin*9, Cout) int16
        self.bias = int8_bias(record, input_quantization.zero_point, fold=True)  # (Cout,)

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, Ho, Wo, C) int8 from the padded int8 input."""
        from ..kernels.qconv import qconv3x3_nchw_to_nhwc

        multiplier, shift, zero_point, low, high = self.epilogue.args
        return qconv3x3_nchw_to_nhwc, (src, self.weight, self.bias, multiplier, shift,
                                       self.spec.stride, zero_point, low, high, dst)


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
