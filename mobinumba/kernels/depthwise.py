"""Depthwise 3x3 convolution in NHWC: one filter per channel.

Work is split into tasks of (image, output row, block of CB channels). Inside a task each
output pixel accumulates its 9 taps into a CB-float stack buffer (vector registers) that
starts at the bias, then is clamped and stored once. Rows and columns whose taps fall into
the padding skip those taps; the tap ranges are computed per row and per column, not per
element.
"""
import numpy as np
from numba import njit, prange

from ._common import FASTMATH, ZERO, stack_buffer_f32

CB = 32  # channels per task: two zmm vectors


def pack_dwconv3x3_weights(weight):
    """OIHW (C, 1, 3, 3) -> (3, 3, C): the inner loop runs over contiguous channels."""
    return np.ascontiguousarray(weight[:, 0].transpose(1, 2, 0), dtype=np.float32)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def dwconv3x3_nhwc_clamp(x, weight, bias, stride, pad_top, pad_left, act_max, out):
    """out = clamp(depthwise_conv3x3(x, weight) + bias, 0, act_max), all NHWC.

    x (N, H, W, C); weight (3, 3, C) packed; bias (C,); out (N, Ho, Wo, C).
    Taps in the padding are skipped; the caller sizes `out` for its padding rule.
    """
    n_batch, height, width, channels = x.shape
    _, out_h, out_w, _ = out.shape
    blocks = (channels + CB - 1) // CB
    for task in prange(n_batch * out_h * blocks):
        row = task // blocks
        c0 = (task - row * blocks) * CB
        n = row // out_h
        oh = row - n * out_h
        ih0 = oh * stride - pad_top
        kh_lo = max(0, -ih0)
        kh_hi = min(3, height - ih0)
        if channels - c0 >= CB:
            b = bias[c0:c0 + CB]
            acc = stack_buffer_f32(CB)
            for ow in range(out_w):
                iw0 = ow * stride - pad_left
                kw_lo = max(0, -iw0)
                kw_hi = min(3, width - iw0)
                for v in range(CB):
                    acc[v] = b[v]
                for kh in range(kh_lo, kh_hi):
                    for kw in range(kw_lo, kw_hi):
                        pixel = x[n, ih0 + kh, iw0 + kw, c0:c0 + CB]  # (CB,)
                        tap = weight[kh, kw, c0:c0 + CB]  # (CB,)
                        for v in range(CB):
                            acc[v] += pixel[v] * tap[v]
                dst = out[n, oh, ow, c0:c0 + CB]
                for v in range(CB):
                    dst[v] = min(max(acc[v], ZERO), act_max)
        else:
            # The last, partial block of channels: same loops, run-time length.
            count = channels - c0
            for ow in range(out_w):
                iw0 = ow * stride - pad_left
                kw_lo = max(0, -iw0)
                kw_hi = min(3, width - iw0)
                dst = out[n, oh, ow, c0:]  # (count,)
                for v in range(count):
                    dst[v] = bias[c0 + v]
                for kh in range(kh_lo, kh_hi):
                    for kw in range(kw_lo, kw_hi):
                        pixel = x[n, ih0 + kh, iw0 + kw, c0:]
                        tap = weight[kh, kw, c0:]
                        for v in range(count):
                            dst[v] += pixel[v] * tap[v]
                for v in range(count):
                    dst[v] = min(max(dst[v], ZERO), act_max)
