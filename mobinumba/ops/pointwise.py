"""Pointwise 1x1 conv + BN + activation (kind `pwconv`): the depthwise-separable block's
second half, and timm's optional head conv.

Runtime: (N, H, W, Cin) -> (N, H, W, Cout) as one GEMM over the N*H*W pixels
(kernels/pointwise.py). Stride 1 only: the runtime has no strided 1x1 kernel.
"""
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


class Pointwise(LayerKind):
    """A 1x1 convolution: weight (Cout, Cin, 1, 1)."""

    op_class = PointwiseConv
    name = "pwconv"
    description = "a 1x1 conv"
    kernel_size = 1
    body = True




KIND = Pointwise()
