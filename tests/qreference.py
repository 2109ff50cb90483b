"""A naive NumPy reference of TFLite's int8 arithmetic, written from the reference kernels
(tensorflow/lite/kernels/internal/common.h, reference/integer_ops/{conv,depthwise_conv,
pooling,fully_connected,mean}.h), independent of mobinumba's Numba kernels: vectorised int64
NumPy instead of scalar Numba code, taps outside the image skipped by explicit bounds tests
instead of a zero-point border, the zero point subtracted instead of folded into the bias.
MEAN and the classifier follow what LiteRT's builtin kernels compute instead (its optimized
MEAN, QuantizedMeanOrSum, and FULLY_CONNECTED rounding halves up), since convert checks
imported files against LiteRT: tests/test_litert_int8_ops.py pins those against LiteRT.
"""
import numpy as np

from mobinumba.ops import kind_of
from mobinumba.padding import conv_output_size
from mobinumba.quantization import activation_range, quantize_multiplier, requantization


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """TFLite's MultiplyByQuantizedMultiplier, element-wise on int64 arrays emulating C's
    int32 arithmetic: SaturatingRoundingDoublingHighMul then RoundingDivideByPOT."""
    x = np.asarray(x, np.int64)
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = ((x << left) + 2 ** 31) % 2 ** 32 - 2 ** 31  # int32 wraparound
    product = shifted * multiplier
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    high = np.sign(total) * (np.abs(total) // 2 ** 31)  # C division truncates toward zero
    mask = (np.int64(1) << right) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> right) + (remainder > threshold)


def multiply_by_quantized_multiplier_half_up(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier as LiteRT's NEON vector code (vshl, vqrdmulh, vrshl)
    computes it, element-wise on int64 arrays: round(2 * x * multiplier / 2^32) and
    round(high / 2^right) with halves rounded toward +inf (NumPy's floor division)."""
    x = np.asarray(x, np.int64)
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = ((x << left) + 2 ** 31) % 2 ** 32 - 2 ** 31  # int32 wraparound
    high = np.floor_divide(2 * shifted * multiplier + 2 ** 31, 2 ** 32)  # vqrdmulh
    return np.floor_divide(high + (1 << right) // 2, 1 << right)  # vrshl


def requantize_half_up(acc, multiplier, shift, zero_point, low, high):
    """requantize with LiteRT's FULLY_CONNECTED rounding (halves up)."""
    value = multiply_by_quantized_multiplier_half_up(acc, multiplier, shift) + zero_point
    return np.clip(value, low, high).astype(np.int8)


def requantize(acc, multiplier, shift, zero_point, low, high):
    """int8 of int64 accumulators: multiplier, zero point, clamp."""
    value = multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point
    return np.clip(value, low, high).astype(np.int8)


def conv2d(x, weight, bias, stride, pad_top, pad_left, out_h, out_w, in_zero_point,
           groups=1):
    """int64 accumulators (N, Ho, Wo, Cout) of a KxK conv on NHWC int8 x: bias + sum over
    taps inside the image of (x - zp) * w. weight OIHW int8 (Cout, Cin/groups, K, K)."""
    n, height, width, c_in = x.shape
    c_out, per_group, k, _ = weight.shape
    acc = np.broadcast_to(bias.astype(np.int64), (n, out_h, out_w, c_out)).copy()
    xs = x.astype(np.int64) - in_zero_point
    w = weight.astype(np.int64)
    for oh in range(out_h):
        for ow in range(out_w):
            for kh in range(k):
                ih = oh * stride - pad_top + kh
                if not 0 <= ih < height:
                    continue
                for kw in range(k):
                    iw = ow * stride - pad_left + kw
                    if not 0 <= iw < width:
                        continue
                    pixel = xs[:, ih, iw]  # (N, Cin)
                    if groups == 1:
                        acc[:, oh, ow] += pixel @ w[:, :, kh, kw].T
                    else:  # depthwise: one input channel per output channel
                        acc[:, oh, ow] += pixel * w[:, 0, kh, kw]
    return acc


def average_pool(x):
    """TFLite AVERAGE_POOL_2D int8 over the whole image: (N, C) int8."""
    total = x.astype(np.int64).sum(axis=(1, 2))
    count = x.shape[1] * x.shape[2]
    rounded = np.where(total > 0, (total + count // 2) // count,
                       -((-total + count // 2) // count))
    return np.clip(rounded, -128, 127).astype(np.int8)


def mean(x, in_quantization, out_quantization, pool_op):
    """TFLite MEAN int8 over H, W as LiteRT's builtin resolver runs it: (N, C) int8.

    pool_op 'mean' (keep_dims): optimized_integer_ops::Mean, every 16 channels through its
    NEON vector path (vqrdmulh, vrshl: halves rounded up), the < 16 left scalar (gemmlowp
    rounding: halves away from zero), the zero point folded into a float32-rounded bias.
    'mean_flat': reference_ops::QuantizedMeanOrSum, 1/count folded into the multiplier.
    Written from those sources in int64 NumPy (one LiteRT thread)."""
    f32 = np.float32
    in_scale, out_scale = f32(in_quantization.scale), f32(out_quantization.scale)
    count = x.shape[1] * x.shape[2]
    channels = x.shape[3]
    total = x.astype(np.int64).sum(axis=(1, 2))  # (N, C)
    if pool_op == "mean":
        ratio = f32(f32(f32(in_quantization.zero_point) * in_scale) / out_scale)
        bias = out_quantization.zero_point - int(np.trunc(ratio + np.copysign(f32(0.5), ratio)))
        multiplier, shift = quantize_multiplier(float(in_scale / (f32(count) * out_scale)))
        scaled = multiply_by_quantized_multiplier(total, multiplier, shift)
        vector = channels // 16 * 16
        scaled[:, :vector] = multiply_by_quantized_multiplier_half_up(
            total[:, :vector], multiplier, shift)
        value = scaled + bias
    else:
        multiplier, shift = quantize_multiplier(float(in_scale) / float(out_scale))
        fold = min(int(np.floor(np.log2(count))), 32, 31 + shift)
        value = multiply_by_quantized_multiplier(
            total - in_quantization.zero_point * count, (multiplier << fold) // count,
            shift - fold) + out_quantization.zero_point
    return np.clip(value, -128, 127).astype(np.int8)


def dense(x, weight, bias, in_zero_point):
    """int64 accumulators (N, K) of FULLY_CONNECTED: bias + (x - zp) @ W.T."""
    return bias.astype(np.int64) + (x.astype(np.int64) - in_zero_point) @ weight.astype(
        np.int64).T


def forward(model_file, q):
    """int8 logits (N, K) of an int8 ModelFile for an int8 NHWC input (N, H, W, 3), layer
    by layer from the records alone."""
    info = model_file.info
    quantization = info.input_quantization
    x = q
    for record in model_file.layers:
        kind = kind_of(record.kind)
        quant = record.quant
        if kind.flat_input:
            if quant.pool_op == "average":
                x = average_pool(x)
            else:
                x = mean(x, quantization, quant.pooled, quant.pool_op)
            quantization = quant.pooled
        multiplier, shift = requantization(quantization.scale, quant.weight_scale,
                                           quant.output.scale)
        if kind.flat_input:  # LiteRT's FULLY_CONNECTED rounding
            acc = dense(x, record.weight, record.bias, quantization.zero_point)
            x = requantize_half_up(acc, multiplier, shift, quant.output.zero_point, -128, 127)
        else:
            k = record.weight.shape[2]
            out_h, pad_top = conv_output_size(x.shape[1], k, record.stride, info.padding)
            out_w, pad_left = conv_output_size(x.shape[2], k, record.stride, info.padding)
            groups = x.shape[3] if kind.conv_groups(record) > 1 else 1
            acc = conv2d(x, record.weight, record.bias, record.stride, pad_top, pad_left,
                         out_h, out_w, quantization.zero_point, groups)
            low, high = activation_range(info.activation, quant.output)
            x = requantize(acc, multiplier, shift, quant.output.zero_point, low, high)
        quantization = quant.output
    return x
