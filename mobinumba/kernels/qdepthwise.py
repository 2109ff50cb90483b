"""int8 depthwise 3x3 convolution in NHWC, TFLite's DEPTHWISE_CONV_2D int8 arithmetic.

TFLite skips the taps that fall into the padding, which is the same as padding with the input
zero point (x - zp = 0 there). So each task (a band of output rows) first copies the input rows
it reads into a buffer bordered with the zero point, and then every tap is inside: the input
zero point folds into the bias (bias - zp * sum of the channel's 9 weights) and the sums are
plain int32 dot products of raw int8 values, followed by the fused requantize + clamp +
store. (Copying the whole input first was a second parallel region: one more barrier, which
cost more than the 3x copy at 2 threads, docs/performance.md.)

The kernel streams whole rows, as the float kernel does (kernels/depthwise.py): an NHWC row is
one contiguous (W*C) vector, and for stride 1 tap (kh, kw) of output element j = ow*C + c is
element j + kw*C of bordered row kh, so a row is 9 shifted streams times a weight row tiled
to the same length, summed (all 9 taps in one pass, from the bias tiled to the same length)
in a vectorised loop without per-pixel bookkeeping. For stride 2 the copy splits each row
into its even and odd padded columns (two phase planes), where every tap is again one
contiguous stream.
"""
import numpy as np
from numba import njit, prange

from ._common import CACHE
from .qcommon import aligned_array, requantize_row


def pack_qdwconv3x3_weights(weight):
    """OIHW int8 (C, 1, 3, 3) -> (3, 3, C) int16: contiguous channels per tap."""
    return aligned_array(weight[:, 0].transpose(1, 2, 0), np.int16)


def tile_qdwconv3x3_bias(bias, out_width):
    """(C,) int32 -> (out_width * C,): the bias of every output pixel of a row."""
    return aligned_array(np.tile(bias, out_width), np.int32)


def tile_qdwconv3x3_weights(packed, out_width):
    """(3, 3, C) -> (3, 3, out_width * C): each tap's weights repeated for every output
    pixel of a row (the kernel's per-element weights)."""
    return aligned_array(np.tile(packed, (1, 1, out_width)), np.int16)


def qdwconv3x3_band(out_h):
    """Output rows per task: about 14 tasks per image, at least one row. Each task copies the
    input rows its band reads once (band * stride + 3 - stride rows, not 3 per output row)
    and allocates its buffers once: 112x112x32 stride 1 on one thread 0.26 -> 0.21 ms
    (band 8), 56x56x128 0.23 -> 0.21 ms (band 4)."""
    return max(1, out_h // 14)


@njit(inline="always")
def _tap_stream(rows, r, kw, stride, channels, length):
    """The (Wo * C,) int8 stream of tap column kw in band row r: padded column ow*s + kw of
    every output pixel ow lies in phase plane kw % s at index ow + kw // s."""
    plane = rows[r * stride + (kw & (stride - 1))].reshape(-1)  # (plane_w * C,); kw % s
    start = (kw >> (stride - 1)) * channels  # (kw // s) * C
    return plane[start:start + length]


@njit(parallel=True, cache=CACHE)
def qdwconv3x3_nhwc(x, weight_row, bias_row, table, stride, top, left,
                    in_zero_point, out_zero_point, low, high, band, out):
    """out = requantize(depthwise3x3(x - zp_in, W) + bias).

    x (N, H, W, C) int8; weight_row (3, 3, Wo * C) int16 from tile_qdwconv3x3_weights;
    bias_row (Wo * C,) int32 from tile_qdwconv3x3_bias, the input zero point folded in;
    table (5, C) int32 from qcommon.requantize_table; stride 1 or 2; top, left: the padding
    before the first row and column; band: output rows per task (qdwconv3x3_band);
    out (N, Ho, Wo, C) int8.
    """
    n_batch, height, width, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    padded_w = max(left + width, (out_w - 1) * stride + 3)
    plane_w = (padded_w + stride - 1) // stride  # >= out_w + 2 // stride: every tap inside
    length = out_w * channels
    bands = (out_h + band - 1) // band
    band_rows = (band - 1) * stride + 3  # input rows one band reads
    # One parallel region (each costs a fork and a barrier): every task copies the input
    # rows its band reads into its own zero-point-bordered buffer, padded column p at
    # [p % stride, p // stride] (stride phase planes), so every tap of a row is one
    # contiguous stream for stride 2 as for stride 1.
    for task in prange(n_batch * bands):
        n = task // bands
        oh0 = (task - n * bands) * band
        oh1 = min(out_h, oh0 + band)
        rows = np.full((band_rows * stride, plane_w, channels), in_zero_point,
                       np.int8)  # (R * s, Wp / s, C)
        for r in range(band_rows):
            ih = oh0 * stride + r - top
            if 0 <= ih < height:
                for w in range(width):
                    column = left + w
                    source = x[n, ih, w]  # (C,)
                    # [p % s, p // s] without a division (s is 1 or 2): 0.18 -> 0.23 ms
                    # at 112x112x32 with `%` and `//` by the runtime stride.
                    target = rows[r * stride + (column & (stride - 1)),
                                  column >> (stride - 1)]  # (C,)
                    for c in range(channels):
                        target[c] = source[c]
        acc = np.empty(length, np.int32)  # (Wo * C,): one output row
        for oh in range(oh0, oh1):
            r0 = (oh - oh0) * stride  # the output row's first input row in `rows`
            # All 9 taps in one pass over the row, starting from the tiled bias: the
            # accumulator row is written once (3 passes of 3 taps, each loading and storing
            # it, took 10-15% longer: 0.205 -> 0.186 ms at 112x112x32; stride 2 summed each
            # pixel's taps over its channels: 0.21 -> 0.13-0.15 ms at 112x112x64, the
            # stride-1 112x112x32 layer costs 0.18 -> 0.20 ms in exchange).
            x00 = _tap_stream(rows, r0, 0, stride, channels, length)  # (Wo * C,) each
            x01 = _tap_stream(rows, r0, 1, stride, channels, length)
            x02 = _tap_stream(rows, r0, 2, stride, channels, length)
            x10 = _tap_stream(rows, r0 + 1, 0, stride, channels, length)
            x11 = _tap_stream(rows, r0 + 1, 1, stride, channels, length)
            x12 = _tap_stream(rows, r0 + 1, 2, stride, channels, length)
            x20 = _tap_stream(rows, r0 + 2, 0, stride, channels, length)
            x21 = _tap_stream(rows, r0 + 2, 1, stride, channels, length)
            x22 = _tap_stream(rows, r0 + 2, 2, stride, channels, length)
            w00, w01, w02 = weight_row[0, 0], weight_row[0, 1], weight_row[0, 2]
            w10, w11, w12 = weight_row[1, 0], weight_row[1, 1], weight_row[1, 2]
            w20, w21, w22 = weight_row[2, 0], weight_row[2, 1], weight_row[2, 2]
            for j in range(length):
                acc[j] = (bias_row[j]
                          + np.int32(x00[j]) * np.int32(w00[j])
                          + np.int32(x01[j]) * np.int32(w01[j])
                          + np.int32(x02[j]) * np.int32(w02[j])
                          + np.int32(x10[j]) * np.int32(w10[j])
                          + np.int32(x11[j]) * np.int32(w11[j])
                          + np.int32(x12[j]) * np.int32(w12[j])
                          + np.int32(x20[j]) * np.int32(w20[j])
                          + np.int32(x21[j]) * np.int32(w21[j])
                          + np.int32(x22[j]) * np.int32(w22[j]))
            for ow in range(out_w):
                requantize_row(acc[ow * channels:], table, 0, out_zero_point, low,
                               high, channels, out[n, oh, ow])
