"""Global average pooling (kind `pool`): mean over H and W, (N, H, W, C) -> (N, C).

Not a weight layer and not stored in weight files: build_ops puts one before the first kind
that takes flat features (the classifier). Its additions are not counted as multiply-adds, as
in the paper.
"""
import numpy as np

from ..kernels.head import global_avgpool_nhwc
from .base import LayerKind


class GlobalAveragePool(LayerKind):
    """Mean over the spatial axes."""

    name = "pool"
    description = "global average pooling"
    has_weights = False
    has_bn = False
    flat_output = True

    def build_pool(self, channels, input_quantization=None, layer_quantization=None):
        """The runtime op pooling `channels` channels; int8 when the classifier after it
        is (its LayerQuantization says the pool op and the pooled quantization)."""
        if layer_quantization is None:
            return GlobalAvgPool(channels)
        return QuantizedGlobalAvgPool(channels, input_quantization, layer_quantization)


KIND = GlobalAveragePool()


class GlobalAvgPool:
    """The pooling runtime op."""

    def __init__(self, channels):
        from ..architecture import LayerSpec

        self.spec = LayerSpec("avgpool", KIND.name, channels, channels)

    def output_shape(self, shape):
        """(N, C) of an (N, H, W, C) input."""
        return shape[0], shape[3]

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, C) from src (N, H, W, C)."""
        return global_avgpool_nhwc, (src, dst)


class QuantizedGlobalAvgPool(GlobalAvgPool):
    """The int8 pooling op: TFLite's AVERAGE_POOL_2D over the whole image (pool_op
    'average': keeps its input's quantization) or MEAN over H and W (pool_op 'mean' with
    keep_dims, 'mean_flat' without: requantized as LiteRT does it, see
    quantization.mean_requantization and kernels/qhead.py)."""

    output_dtype = np.int8

    def __init__(self, channels, input_quantization, layer_quantization):
        super().__init__(channels)
        self.pool_op = layer_quantization.pool_op
        self.input_quantization = input_quantization
        self.output_quantization = layer_quantization.pooled

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, C) int8 from src (N, H, W, C) int8."""
        from ..kernels import qhead
        from ..quantization import mean_requantization, mean_rounds_half_up

        single = src.shape[0] == 1  # one task: no parallel region (kernels/qhead.py)
        if self.pool_op == "average":
            kernel = qhead.qaverage_pool_nhwc_serial if single else qhead.qaverage_pool_nhwc
            return kernel, (src, dst)
        # The parameters depend on H*W (the multiplier folds 1 / count in): known here.
        params = mean_requantization(self.input_quantization, self.output_quantization,
                                     src.shape[1] * src.shape[2], self.pool_op)
        half_up = mean_rounds_half_up(src.shape[3], self.pool_op)
        kernel = qhead.qmean_nhwc_serial if single else qhead.qmean_nhwc
        return kernel, (src, params.offset, params.multiplier, params.shift, params.bias,
                        half_up, dst)
