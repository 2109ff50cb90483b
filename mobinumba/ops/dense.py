"""The classifier: a fully connected layer with bias on pooled features (kind `dense`).

Runtime: (N, C) -> (N, K) logits by kernels/head.py's chunked GEMV. No batch norm, and the
bias is required. Stored as PyTorch's Linear stores it: weight (K, C).
"""
import numpy as np

from ..kernels._common import aligned_copy
from ..kernels.head import dense_bias, pack_dense_weights
from .base import LayerKind


class Dense:
    """The classifier's runtime op: weights packed in class chunks, its kernel."""

    def __init__(self, record, activation, padding):  # no activation after the logits
        self.spec = record.spec
        self.weight = pack_dense_weights(record.weight)  # (chunks, C, CHUNK)
        self.bias = aligned_copy(record.bias)  # (K,)

    def output_shape(self, shape):
        """(N, K) of an (N, C) input."""
        return shape[0], self.spec.out_channels

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, K) from src (N, C)."""
        return dense_bias, (src, self.weight, self.bias, dst)


class FullyConnected(LayerKind):
    """A linear layer: weight (K, C), bias (K,)."""

    op_class = Dense
    name = "dense"
    description = "a linear layer"
    has_bn = False
    bias_required = True
    flat_input = True
    flat_output = True
    last = True
    weight_rank = 2

    def weight_shape(self, in_channels, out_channels):
        return (out_channels, in_channels)

    def weight_problem(self, shape):
        return None

    def weight_count(self, spec):
        return spec.in_channels * spec.out_channels


    def torch_layers(self, record, activation, padding):
        import torch
        from torch import nn

        linear = nn.Linear(record.weight.shape[1], record.weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(record.weight)))
            linear.bias.copy_(torch.from_numpy(record.bias))
        return [linear]


KIND = FullyConnected()
