"""The int8 classifier head: global pooling (TFLite's AVERAGE_POOL_2D or MEAN) and the
fully connected layer (TFLite's FULLY_CONNECTED int8)."""
import numpy as np
from numba import njit, prange

from ._common import CACHE
from .qcommon import aligned_array, multiply_by_quantized_multiplier

# Classes per dense task, as the float kernel (head.py): 4 tasks per image at 1000 classes.
QDENSE_CHUNK = 256


@njit(inline="always")
def _rounded_divide(acc, count):
    """acc / count rounded half away from zero, in C's truncating integer division, as
    TFLite's pooling and MEAN kernels write it."""
    if acc > 0:
        return (acc + count // 2) // count
    return -((-acc + count // 2) // count)


# Each pooling has a parallel entry point (one task per image) and a serial one for a single
# image: a parallel region with one task still starts and joins the worker thread, which on a
# loaded 2-core machine cost about 0.06 ms against 0.008 ms of work (docs/performance.md).
@njit(inline="always")
def _average_pool_image(x, n, out):
    height, width, channels = x.shape[1:]
    count = height * width
    acc = np.zeros(channels, np.int32)  # (C,)
    for h in range(height):
        for w in range(width):
            pixel = x[n, h, w]
            for c in range(channels):
                acc[c] += np.int32(pixel[c])
    for c in range(channels):
        out[n, c] = np.int8(min(max(_rounded_divide(np.int64(acc[c]), count), -128), 127))


@njit(parallel=True, cache=CACHE)
def qaverage_pool_nhwc(x, out):
    """out[n, c] = the rounded mean of x[n, :, :, c] (TFLite AVERAGE_POOL_2D int8 over the
    whole image, which keeps its input's quantization). x (N, H, W, C) int8; out (N, C)."""
    for n in prange(x.shape[0]):
        _average_pool_image(x, n, out)


@njit(cache=CACHE)
def qaverage_pool_nhwc_serial(x, out):
    """qaverage_pool_nhwc without a parallel region (for one image)."""
    for n in range(x.shape[0]):
        _average_pool_image(x, n, out)


@njit(inline="always")
def _mean_image(x, n, offset, multiplier, shift, bias, half_up, out):
    """qmean_nhwc for image n."""
    height, width, channels = x.shape[1:]
    acc = np.zeros(channels, np.int32)  # (C,)
    for h in range(height):
        for w in range(width):
            pixel = x[n, h, w]
            for c in range(channels):
                acc[c] += np.int32(pixel[c])
    for c in range(channels):
        total = np.int64(acc[c]) - offset  # |sum| <= 128 * H * W: no int32 wrap
        if half_up[c]:
            value = _multiply_half_up(total, multiplier, shift)
        else:
            value = multiply_by_quantized_multiplier(total, multiplier, shift)
        out[n, c] = np.int8(min(max(value + bias, -128), 127))


@njit(inline="always")
def _multiply_half_up(acc, multiplier, shift):
    """MultiplyByQuantizedMultiplier as LiteRT's NEON vector paths compute it (MEAN's
    MultiplyByQuantizedMultiplier4Rows, the int8 GEMV of cpu_backend_gemm_custom_gemv.h;
    NEON_2_SSE on x86): vqrdmulh, the high 32 bits of 2 * acc * multiplier rounded half up,
    then vrshl, a right shift rounding half up. Halves of negative values round toward
    +inf, where the scalar (gemmlowp) version rounds them away from zero."""
    shift = np.int64(shift)
    left = max(shift, np.int64(0))
    right = max(-shift, np.int64(0))
    shifted = np.int64(np.int32(np.int64(acc) << left))  # C's int32 product wraps
    high = (shifted * np.int64(multiplier) + (np.int64(1) << 30)) >> 31
    return (high + ((np.int64(1) << right) >> 1)) >> right


@njit(parallel=True, cache=CACHE)
def qmean_nhwc(x, offset, multiplier, shift, bias, half_up, out):
    """out[n, c] = TFLite MEAN int8 over H and W, as LiteRT runs it (see
    quantization.mean_requantization): clamp(MultiplyByQuantizedMultiplier(sum of
    x[n, :, :, c] - offset) + bias), the multiply rounding halves up where half_up[c]
    (LiteRT's vector path, quantization.mean_rounds_half_up), away from zero elsewhere.
    x (N, H, W, C) int8; half_up (C,) bool; out (N, C) int8."""
    for n in prange(x.shape[0]):
        _mean_image(x, n, offset, multiplier, shift, bias, half_up, out)


@njit(cache=CACHE)
def qmean_nhwc_serial(x, offset, multiplier, shift, bias, half_up, out):
    """qmean_nhwc without a parallel region (for one image)."""
    for n in range(x.shape[0]):
        _mean_image(x, n, offset, multiplier, shift, bias, half_up, out)


def pack_qdense_weights(weight):
    """(K, C) int8 -> (ceil(K / CHUNK), C, CHUNK) int16, zero-padded: each task streams one
    contiguous block of classes (as head.pack_dense_weights)."""
    classes, features = weight.shape
    chunks = (classes + QDENSE_CHUNK - 1) // QDENSE_CHUNK
    packed = np.zeros((chunks, features, QDENSE_CHUNK), np.int16)
    for chunk in range(chunks):
        block = weight[chunk * QDENSE_CHUNK:(chunk + 1) * QDENSE_CHUNK].T  # (C, <= CHUNK)
        packed[chunk, :, :block.shape[1]] = block
    return aligned_array(packed, np.int16)


@njit(parallel=True, cache=CACHE)
def qdense(x, weight, bias, multiplier, shift, out_zero_point, out):
    """out = requantize(x @ W + bias), clamped to [-128, 127] (no activation), the
    multiplier rounding halves up as LiteRT's FULLY_CONNECTED does (_multiply_half_up; see
    ops/dense.QuantizedDense), not away from zero as TFLite's reference kernel.

    x (N, C) int8; weight (chunks, C, CHUNK) int16 from pack_qdense_weights; bias (K,) int32
    with the input zero point folded in; multiplier, shift (K,) int32; out (N, K) int8.
    """
    n_batch, features = x.shape
    classes = out.shape[1]
    chunks = weight.shape[0]
    for task in prange(n_batch * chunks):
        n = task // chunks
        chunk = task - n * chunks
        start = chunk * QDENSE_CHUNK
        stop = min(start + QDENSE_CHUNK, classes)
        acc = np.empty(stop - start, np.int32)
        for j in range(stop - start):
            acc[j] = bias[start + j]
        block = weight[chunk]  # (C, CHUNK)
        for c in range(features):
            value = np.int32(x[n, c])
            row = block[c]
            for j in range(stop - start):
                acc[j] += value * np.int32(row[j])
        for j in range(stop - start):
            value = _multiply_half_up(acc[j], multiplier[start + j], shift[start + j])
            out[n, start + j] = np.int8(min(max(value + out_zero_point, -128), 127))
