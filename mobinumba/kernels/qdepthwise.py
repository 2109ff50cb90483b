"""int8 depthwise 3x3 convolution in NHWC, TFLite's DEPTHWISE_CONV_2D int8 arithmetic.

TFLite skips the taps that fall into the padding, which is the same as padding with the input
zero point (x - zp = 0 there). So each task (an output row) first copies the 3 input rows it
reads into a buffer bordered with the zero point, and then every tap is inside: the input
zero point folds into the bias (bias - zp * sum of the channel's 9 weights) and the sums are
plain int32 dot products of raw int8 values, followed by the fused requantize + clamp +
store. (Copying the whole input first was a second parallel region: one more barrier, which
cost more than the 3x copy at 2 threads, docs/performance.md.)

Stride 1 streams whole rows, as the float kernel does (kernels/depthwise.py): an NHWC row is
one contiguous (W*C) vector, and tap (kh, kw) of output element j = ow*C + c is element
j + kw*C of bordered row kh, so a row is 9 shifted streams times a weight row tiled to
the same length, summed (a kernel row's 3 taps per pass) in vectorised loops without
per-pixel bookkeeping. Other strides sum
each pixel's 9 taps over its contiguous channels.
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE
from .qcommon import aligned_array, requantize_row


def pack_qdwconv3x3_weights(weight):
    """OIHW int8 (C, 1, 3, 3) -> (3, 3, C) int16: contiguous channels per tap."""
    return aligned_array(weight[:, 0].transpose(1, 2, 0), np.int16)


def tile_qdwconv3x3_weights(packed, out_width):
    """(3, 3, C) -> (3, 3, out_width * C): each tap's weights repeated for every output
    pixel of a row (the stride-1 kernel's per-element weights)."""
    return aligned_array(np.tile(packed, (1, 1, out_width)), np.int16)


def qdwconv3x3_band(out_h):
    """Output rows per task: about 14 tasks per image, at least one row. Each task copies the
    input rows its band reads once (band * stride + 3 - stride rows, not 3 per output row)
    and allocates its buffers once: 112x112x32 stride 1 on one thread 0.26 -> 0.21 ms
    (band 8), 56x56x128 0.23 -> 0.21 ms (band 4)."""
    return max(1, out_h // 14)


@njit(parallel=True, cache=CACHE)
def qdwconv3x3_nhwc(x, weight, weight_row, bias, multiplier, shift, stride, top, left,
                    in_zero_point, out_zero_point, low, high, band, out):
    """out = requantize(depthwise3x3(x - zp_in, W) + bias).

    x (N, H, W, C) int8; weight (3, 3, C) int16 from pack_qdwconv3x3_weights; weight_row
    (3, 3, Wo * C) int16 from tile_qdwconv3x3_weights (stride 1 only); bias (C,) int32 with
    the input zero point folded in; multiplier, shift (C,) int32; top, left: the padding
    before the first row and column; band: output rows per task (qdwconv3x3_band); out
    (N, Ho, Wo, C) int8.
    """
    n_batch, height, width, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    padded_w = max(left + width, (out_w - 1) * stride + 3)
    length = out_w * channels
    bands = (out_h + band - 1) // band
    band_rows = (band - 1) * stride + 3  # input rows one band reads
    # One parallel region (each costs a fork and a barrier): every task copies the input
    # rows its band reads into its own zero-point-bordered buffer.
    for task in prange(n_batch * bands):
        n = task // bands
        oh0 = (task - n * bands) * band
        oh1 = min(out_h, oh0 + band)
        rows = np.full((band_rows, padded_w, channels), in_zero_point, np.int8)  # (R, Wp, C)
        for r in range(band_rows):
            ih = oh0 * stride + r - top
            if 0 <= ih < height:
                for w in range(width):
                    source = x[n, ih, w]  # (C,)
                    target = rows[r, left + w]  # (C,)
                    for c in range(channels):
                        target[c] = source[c]
        acc = np.empty(length, np.int32)  # (Wo * C,): one output row
        for oh in range(oh0, oh1):
            r0 = (oh - oh0) * stride  # the output row's first input row in `rows`
            if stride == 1:
                for ow in range(out_w):
                    for c in range(channels):
                        acc[ow * channels + c] = bias[c]
                for kh in range(3):
                    # The row's 3 taps in one pass: a third of the accumulator loads and
                    # stores of one pass per tap.
                    row = rows[r0 + kh].reshape(-1)  # (Wp * C,)
                    left_taps, middle_taps, right_taps = (weight_row[kh, 0], weight_row[kh, 1],
                                                          weight_row[kh, 2])  # (Wo * C,) each
                    left_row = row[:length]
                    middle_row = row[channels:channels + length]
                    right_row = row[2 * channels:2 * channels + length]
                    for j in range(length):
                        acc[j] += (np.int32(left_row[j]) * np.int32(left_taps[j])
                                   + np.int32(middle_row[j]) * np.int32(middle_taps[j])
                                   + np.int32(right_row[j]) * np.int32(right_taps[j]))
            else:
                for ow in range(out_w):
                    pixel_acc = acc[ow * channels:(ow + 1) * channels]  # (C,)
                    for c in range(channels):
                        pixel_acc[c] = bias[c]
                    for kh in range(3):
                        for kw in range(3):
                            pixel = rows[r0 + kh, ow * stride + kw]  # (C,)
                            tap = weight[kh, kw]  # (C,)
                            for c in range(channels):
                                pixel_acc[c] += np.int32(pixel[c]) * np.int32(tap[c])
            for ow in range(out_w):
                requantize_row(acc[ow * channels:], multiplier, shift, out_zero_point, low,
                               high, channels, out[n, oh, ow])
