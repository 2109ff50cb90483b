"""Pointwise 1x1 conv + BN + activation (kind `pwconv`): the depthwise-separable block's
second half, and timm's optional head conv.

Runtime: (N, H, W, Cin) -> (N, H, W, Cout) as one GEMM over the N*H*W pixels
(kernels/pointwise.py). Stride 1 only: the runtime has no strided 1x1 kernel. int8
(QuantizedPointwiseConv): kernels/amx.py where the compile target has AMX-INT8 and the
system grants it, kernels/vnni.py where it has AVX-512 VNNI or AVX-VNNI, kernels/avx2_int8.py
where it has AVX2 only, else the portable kernels/qpointwise.py.
"""
import numpy as np

from ..kernels.pointwise import pack_pointwise_weights, pwconv_nhwc_clamp_kernel
from ..kernels.targets import target_tiles
from ..activation import activation_of
from .base import LayerKind, fold_batch_norm


class PointwiseConv:
    """The pointwise runtime op: folded weights packed into GEMM panels, its kernel built for
    the compile target's pointwise tile (kernels/targets.py)."""

    def __init__(self, record, activation, padding):
        self.spec = record.spec
        weight, bias = fold_batch_norm(record)
        tile = target_tiles().pointwise
        self.kernel = pwconv_nhwc_clamp_kernel(tile)
        # (P, Cin, NR), (P, NR)
        self.weight, self.bias = pack_pointwise_weights(weight, bias, tile.nr)
        self.act_max = activation_of(activation).act_max
        self.epilogue_args = activation_of(activation).epilogue_args  # () or (slope,)

    def output_shape(self, shape):
        """(N, H, W, Cout) of an (N, H, W, Cin) input."""
        return (*shape[:3], self.spec.out_channels)

    def bind(self, src, dst):
        """(kernel, args): the GEMM over src and dst flattened to (N*H*W, C)."""
        rows = src.shape[0] * src.shape[1] * src.shape[2]
        return self.kernel, (src.reshape(rows, src.shape[3]), self.weight, self.bias,
                             self.act_max, dst.reshape(rows, dst.shape[3]),
                             *self.epilogue_args)


class QuantizedPointwiseConv(PointwiseConv):
    """The int8 pointwise op (TFLite CONV_2D int8, 1x1): the AMX tdpbssd GEMM when the
    compile target has AMX-INT8 and the system grants this process the tiles
    (kernels/qtargets.matrix_tiles; Cin a multiple of 4), the vpdpbusd GEMM when it has
    AVX-512 VNNI or AVX-VNNI, the vpmaddwd one with AVX2 only, else the portable one. All
    fold the input zero point into the bias; vpdpbusd's u8 operand adds 128 more
    (kernels/vnni.py). Only the vpdpbusd op has a `tile`: the depthwise op before it fuses
    with it (ops/depthwise.fuses_with); on AMX the separate kernels measured faster (m(x)
    1.49 ms against 1.65 with the early blocks fused on vpdpbusd)."""

    output_dtype = np.int8

    def __init__(self, record, activation, padding, input_quantization):
        from ..kernels.qtargets import int8_dot_product, matrix_tiles
        from .base import Int8Epilogue, int8_bias

        self.spec = record.spec
        self.epilogue = Int8Epilogue(record, input_quantization, activation)
        self.output_quantization = self.epilogue.output_quantization
        zero_point = input_quantization.zero_point
        self.bias = int8_bias(record, zero_point, fold=True)  # (Cout,) int32
        self.variant = int8_dot_product() or "portable"
        step = None
        if matrix_tiles():
            from ..kernels.amx import depth_step

            step = depth_step(record.weight.shape[1])
        if step is not None:
            from ..kernels.amx import pack_amx_weights, qpwconv_nhwc_amx, tile_config

            self.variant = "amx"
            self.kernel = qpwconv_nhwc_amx
            self.tile_config = tile_config(step)
            self.depth_step = step
            # (P, Cin/4, 128) int8, (P, 32) int32: signed x signed, only the zero point folded
            self.weight, self.bias = pack_amx_weights(record.weight, self.bias)
        elif self.variant == "avx2":
            from ..kernels.avx2_int8 import AVX2_TILE, pack_avx2_weights, qpwconv_nhwc_avx2_kernel

            self.kernel = qpwconv_nhwc_avx2_kernel(AVX2_TILE)
            self.weight = pack_avx2_weights(record.weight, AVX2_TILE.nr)  # (P, G, NR*2) int16
        elif self.variant != "portable":
            from ..kernels.vnni import TILES, pack_vnni_weights, qpwconv_nhwc_vnni_kernel

            tile = self.tile = TILES[self.variant]
            self.kernel = qpwconv_nhwc_vnni_kernel(tile)
            # x + 128 as u8: the bias absorbs 128 * sum_k w (checked like the zero point).
            # (P, ceil(Cin/4), NR*4) int8, (P, NR) int32
            self.weight, self.bias = pack_vnni_weights(
                record.weight, int8_bias(record, zero_point + 128, fold=True), tile.nr)
        else:
            from ..kernels.qpointwise import pack_qpointwise_weights, qpwconv_nhwc

            self.kernel = qpwconv_nhwc
            self.weight = pack_qpointwise_weights(record.weight)  # (P, Cin, NR) int16

    def bind(self, src, dst):
        """(kernel, args): the int8 GEMM over src and dst flattened to (N*H*W, C)."""
        rows = src.shape[0] * src.shape[1] * src.shape[2]
        tiles = (self.tile_config, self.depth_step) if self.variant == "amx" else ()
        return self.kernel, (src.reshape(rows, src.shape[3]), self.weight, self.bias,
                             *self.epilogue.args, *tiles, dst.reshape(rows, dst.shape[3]))


class Pointwise(LayerKind):
    """A 1x1 convolution: weight (Cout, Cin, 1, 1)."""

    op_class = PointwiseConv
    int8_op_class = QuantizedPointwiseConv
    name = "pwconv"
    description = "a 1x1 conv"
    kernel_size = 1
    body = True




KIND = Pointwise()
