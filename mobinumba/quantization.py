"""TensorFlow Lite's int8 quantization scheme: the records an int8 model is made of, and the
arithmetic that turns their float32 scales into integer requantization parameters.

An int8 tensor holds q with real value = scale * (q - zero_point) (TFLite's quantization
spec, https://ai.google.dev/edge/litert/models/quantization_spec):

- activations: int8, asymmetric, one (scale, zero_point) per tensor;
- weights: int8, symmetric (zero point 0), one scale per output channel (per channel for a
  depthwise conv; a per-tensor file repeats one scale);
- bias: int32 with scale input_scale * weight_scale[c] and zero point 0.

The integer pipeline of one layer, as TFLite's reference kernels compute it
(tensorflow/lite/kernels/internal/reference/integer_ops/conv.h and friends):

    acc[c]  = bias[c] + sum_k (x[k] - input_zero_point) * w[c, k]        (int32)
    out[c]  = clamp(MultiplyByQuantizedMultiplier(acc[c], M[c], shift[c])
                    + output_zero_point, act_min, act_max)                 (int8)

with (M[c], shift[c]) = quantize_multiplier(input_scale * weight_scale[c] / output_scale)
computed in double from the float32 scales (kernel_util.cc
PopulateConvolutionQuantizationParams), and [act_min, act_max] the fused activation's range
(activation_range). kernels/qcommon.py has the same MultiplyByQuantizedMultiplier in Numba;
tests/qreference.py re-derives it independently in NumPy.
"""
import math
from dataclasses import dataclass

import numpy as np

PRECISIONS = ("float32", "int8")
INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
# The pooling before the classifier in an int8 model: TFLite's AVERAGE_POOL_2D (input and
# output quantization equal, a rounded integer division) or MEAN over H and W (Keras'
# GlobalAveragePooling2D converts to it: requantized by input_scale / output_scale), with
# keep_dims ("mean": (N, 1, 1, C), Keras' keepdims=True, as keras.applications.MobileNet) or
# without ("mean_flat": (N, C), GlobalAveragePooling2D's default). LiteRT computes the two
# differently (see mean_requantization), so the record says which one the file has.
POOL_OPS = ("average", "mean", "mean_flat")


@dataclass(frozen=True)
class Quantization:
    """One int8 tensor's affine quantization: real = scale * (q - zero_point).

    scale: a float32 value (finite, > 0); zero_point: an int in [-128, 127].
    """

    scale: float
    zero_point: int

    def quantize(self, real):
        """int8 array of float values, as TFLite's QUANTIZE op: round(x / scale) half away
        from zero, computed in float32, + zero point, clamped to [-128, 127]."""
        scaled = np.asarray(real, np.float32) / np.float32(self.scale)
        return np.clip(round_half_away(scaled) + self.zero_point, INT8_MIN,
                       INT8_MAX).astype(np.int8)

    def dequantize(self, q):
        """float32 array of int8 values, as TFLite's DEQUANTIZE op: scale * (q - zero_point)
        in double, then float32."""
        return (float(self.scale) * (np.asarray(q, np.float64) - self.zero_point)).astype(
            np.float32)


@dataclass
class LayerQuantization:
    """The quantization of one int8 weight layer (LayerRecord.quant).

    weight_scale: (Cout,) float32 > 0, one per output channel (per channel for dwconv).
    output: the layer's output tensor (after its fused activation).
    pooled: classifier only (kinds with flat_input): the quantization of the pooled features
        it reads, i.e. the output of the pooling op before it; None for other kinds.
    pool_op: classifier only: "average" (TFLite AVERAGE_POOL_2D: `pooled` must equal the
        previous layer's output), "mean" (TFLite MEAN over H, W with keep_dims) or
        "mean_flat" (MEAN without keep_dims), both requantized (mean_requantization).
    """

    weight_scale: np.ndarray
    output: Quantization
    pooled: Quantization | None = None
    pool_op: str = "average"


def round_half_away(values):
    """Round to the nearest integer, halves away from zero (C's std::round), exactly for
    float32 and float64 arrays (np.round rounds halves to even; floor(x + 0.5) misrounds
    0.49999997 in float32)."""
    values = np.asarray(values)
    magnitude = np.abs(values)
    whole = np.floor(magnitude)
    rounded = whole + (magnitude - whole >= 0.5)  # the subtraction is exact (Sterbenz)
    return np.clip(np.copysign(rounded, values), -2.0 ** 40, 2.0 ** 40).astype(np.int64)


def quantize_multiplier(real_multiplier):
    """(multiplier, shift) of a positive double, as TFLite's QuantizeMultiplier
    (kernels/internal/quantization_util.cc): real = multiplier * 2^(shift - 31) with
    multiplier an int32 in [2^30, 2^31) (or 0, for a real below 2^-32)."""
    if real_multiplier == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real_multiplier)  # real = fraction * 2^shift, fraction in [0.5, 1)
    fixed = int(round_half_away(np.float64(fraction * (1 << 31))))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def requantization(input_scale, weight_scale, output_scale):
    """(multipliers int32 (C,), shifts int32 (C,)) of a conv/dense layer, per output channel:
    quantize_multiplier(double(input_scale) * double(weight_scale[c]) / double(output_scale)),
    as PopulateConvolutionQuantizationParams computes them."""
    pairs = [quantize_multiplier(float(np.float32(input_scale)) * float(scale)
                                 / float(np.float32(output_scale)))
             for scale in np.asarray(weight_scale, np.float32)]
    multipliers = np.array([m for m, _ in pairs], np.int32)
    shifts = np.array([s for _, s in pairs], np.int32)
    return multipliers, shifts


def activation_range(activation, output):
    """(act_min, act_max) int of an int8 output with fused `activation` ('relu', 'relu6' or
    None for no activation), as TFLite's CalculateActivationRangeQuantized: the bounds 0 and
    6 quantized with the output's scale and zero point, within [-128, 127]."""
    def quantized(value):
        scaled = np.float32(value) / np.float32(output.scale)  # float32 division, as TFLite
        return output.zero_point + int(round_half_away(scaled))

    if activation is None:
        return INT8_MIN, INT8_MAX
    low = max(INT8_MIN, quantized(0.0))
    high = INT8_MAX if activation == "relu" else min(INT8_MAX, quantized(6.0))
    return low, high


@dataclass(frozen=True)
class MeanRequantization:
    """The integer parameters of an int8 MEAN over H and W: for each channel's int32 sum of
    the H*W inputs, out = clamp(MultiplyByQuantizedMultiplier(sum - offset, multiplier,
    shift) + bias, -128, 127) (kernels/qhead.qmean_nhwc)."""

    offset: int
    multiplier: int
    shift: int
    bias: int


def mean_requantization(input_quantization, output_quantization, count, pool_op):
    """MeanRequantization of a MEAN over `count` = H*W inputs per channel, as LiteRT's
    builtin resolver (the one its Interpreter uses by default) computes it:

    - "mean" (keep_dims, 4-D, axes (1, 2)): optimized_integer_ops::Mean
      (kernels/internal/optimized/integer_ops/mean.h): the multiplier of the float32
      in_scale / (float32(count) * out_scale), and the input zero point folded into the
      bias as out_zp - int(float32(in_zp * in_scale) / out_scale +- 0.5) (float32,
      truncated), so it is rounded once, not per element;
    - "mean_flat" (no keep_dims): reference_ops::QuantizedMeanOrSum
      (kernels/internal/reference/reduce.h): the multiplier of in_scale / out_scale (double)
      with 1/count folded in as (multiplier << k) // count, k = floor(log2(count)) (at most
      32 and 31 + shift), the zero point subtracted from the sum.

    Neither is reference_integer_ops::Mean (LiteRT's reference resolver only): measured
    against LiteRT 2.3, these two are bit-exact and that one is not (docs/format.md)."""
    in_scale = np.float32(input_quantization.scale)
    out_scale = np.float32(output_quantization.scale)
    if pool_op == "mean":
        zero_point_shift = np.float32(np.float32(input_quantization.zero_point) * in_scale)
        zero_point_shift = np.float32(zero_point_shift / out_scale)
        half = np.float32(0.5)
        rounded = zero_point_shift + half if zero_point_shift > 0 else zero_point_shift - half
        real = np.float32(in_scale / np.float32(np.float32(count) * out_scale))
        multiplier, shift = quantize_multiplier(float(real))
        return MeanRequantization(offset=0, multiplier=multiplier, shift=shift,
                                  bias=output_quantization.zero_point - int(rounded))
    if pool_op == "mean_flat":
        multiplier, shift = quantize_multiplier(float(in_scale) / float(out_scale))
        fold = min(count.bit_length() - 1, 32, 31 + shift)
        return MeanRequantization(offset=input_quantization.zero_point * count,
                                  multiplier=(multiplier << fold) // count,
                                  shift=shift - fold, bias=output_quantization.zero_point)
    raise ValueError(f"pool_op {pool_op!r} is not a MEAN")


def mean_rounds_half_up(channels, pool_op, threads=1):
    """(C,) bool: the channels whose MEAN result LiteRT rounds halves up rather than away
    from zero. Its keep_dims kernel splits the channels among min(C // 8, threads) tasks
    (at least 1) and runs each task's channels in blocks of 16 through a vector path
    (NEON, NEON_2_SSE on x86: vqrdmulh + vrshl, both rounding halves toward +inf), the
    remaining < 16 scalar (MultiplyByQuantizedMultiplier: halves away from zero). The
    runtime follows LiteRT with `threads` = 1, as convert's self-check runs it."""
    half_up = np.zeros(channels, np.bool_)
    if pool_op != "mean":
        return half_up
    tasks = min(max(channels // 8, 1), threads)
    start = 0
    for task in range(tasks):
        end = start + (channels - start) // (tasks - task)
        half_up[start:start + (end - start) // 16 * 16] = True
        start = end
    return half_up
