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
    or a 1x1 CONV_2D on a 1x1 map): the pointwise vpdpbusd GEMM where the compile target
    has VNNI (kernels/vnni.py), else kernels/qhead.py's qdense; no activation (clamped to
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
        from ..kernels.qcommon import requantize_table
        from ..kernels.qtargets import int8_dot_product
        from .base import Int8Epilogue, int8_bias

        self.spec = record.spec
        self.epilogue = Int8Epilogue(record, input_quantization, None)
        self.output_quantization = self.epilogue.output_quantization
        zero_point = input_quantization.zero_point
        self.vnni = int8_dot_product() in ("avx512vnni", "avxvnni")
        if self.vnni:
            # The pointwise GEMM's vpdpbusd kernel with rows = images (kernels/vnni.py):
            # int8 weights (1 MB at 1024 x 1000) where qdense streams int16 ones (2 MB),
            # 0.05 -> 0.02 ms per image (docs/performance.md). Its epilogue reads a table
            # whose negative values round halves up, as LiteRT's does.
            from ..kernels.vnni import TILES, pack_vnni_weights, qpwconv_nhwc_vnni_kernel

            tile = TILES[int8_dot_product()]
            self.kernel = qpwconv_nhwc_vnni_kernel(tile)
            # (P, ceil(C/4), NR*4) int8, (P, NR) int32: x + 128 as u8, as ops/pointwise.py
            self.weight, self.bias = pack_vnni_weights(
                record.weight, int8_bias(record, zero_point + 128, fold=True), tile.nr)
            self.table = requantize_table(self.epilogue.multiplier, self.epilogue.shift,
                                          halves_up=True)  # (5, K)
        else:
            from ..kernels.qhead import pack_qdense_weights, qdense

            self.kernel = qdense
            self.weight = pack_qdense_weights(record.weight)  # (chunks, C, CHUNK) int16
            self.bias = int8_bias(record, zero_point, fold=True)  # (K,)

    def bind(self, src, dst):
        """(kernel, args) computing dst (N, K) int8 from src (N, C) int8."""
        epilogue = self.epilogue
        if self.vnni:
            return self.kernel, (src, self.weight, self.bias, self.table, epilogue.zero_point,
                                 epilogue.low, epilogue.high, dst)
        return self.kernel, (src, self.weight, self.bias, epilogue.multiplier, epilogue.shift,
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
