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


class QuantizedDense(Dense):
    """The int8 classifier (TFLite FULLY_CONNECTED int8, per-channel or per-tensor weights,
    or a 1x1 CONV_2D on a 1x1 map): kernels/qhead.py, no activation (clamped to
    [-128, 127]).

    Requantized as LiteRT does it, halves rounded up (vqrdmulh + vrshl), not away from zero
    as TFLite's reference kernel: measured on one-operator files (tests/
    test_litert_int8_ops.py), LiteRT 2.3 rounds halves up in FULLY_CONNECTED and 1x1
    CONV_2D at every shape, batch and thread count tried, while its MEAN and pooling
    follow gemmlowp. The other int8 convolutions (kernels/q*.py) keep TFLite's reference
    rounding: their ReLU / ReLU6 clamp at the quantized 0 makes the two agree there (a
    negative half rounds to <= 0 either way)."""

    output_dtype = np.int8

    def __init__(self, record, activation, padding, input_quantization):
        from ..kernels.qhead import pack_qdense_weights
        from .base import Int8Epilogue, int8_bias

        self.spec = record.spec
        self.epilogue = Int8Epilogue(record, input_quantization, None)
        self.output_quantization = self.epilogue.output_quantization
        self.weight = pack_qdense_weights(record.weight)  # (chunks, C, CHUNK) int16
        self.bias = int8_bias(record, input_quantization.zero_point, fold=True)  # (K,)

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, K) int8 from src (N, C) int8."""
        from ..kernels.qhead import qdense

        epilogue = self.epilogue
        return qdense, (src, self.weight, self.bias, epilogue.multiplier, epilogue.shift,
                        epilogue.zero_point, dst)


class FullyConnected(LayerKind):
    """A linear layer: weight (K, C), bias (K,)."""

    op_class = Dense
    int8_op_class = QuantizedDense
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
