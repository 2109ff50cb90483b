"""Global average pooling (kind `pool`): mean over H and W, (N, H, W, C) -> (N, C).

Not a weight layer and not stored in weight files: build_ops puts one before the first kind
that takes flat features (the classifier). Its additions are not counted as multiply-adds, as
in the paper.
"""
from ..kernels.head import global_avgpool_nhwc
from .base import LayerKind


class GlobalAveragePool(LayerKind):
    """Mean over the spatial axes."""

    name = "pool"
    description = "global average pooling"
    has_weights = False
    has_bn = False
    flat_output = True

    def build_pool(self, channels):
        """The runtime op pooling `channels` channels."""
        return GlobalAvgPool(channels)


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
