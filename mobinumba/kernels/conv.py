"""Standard 3x3 convolution: the network's stem, reading the user's NCHW image batch.

The stem is a small GEMM per output row: each output pixel's 27 inputs (3 channels x 3x3
taps) times a (27, Cout) weight panel. It uses the pointwise kernel's register tile (MR
pixels x NR channels in stack buffers) with the A operand gathered straight from the image.
The input arrives already padded (the runner keeps a zero-bordered input buffer), so no tap
needs a bounds test.
"""
from numba import njit, prange

from ._common import FASTMATH, stack_buffer_f32
from ._tile import MR, pack_gemm_weights, store_clamped, store_clamped_partial

NR = 32  # output channels per tile: the stem has 32 at width 1.0


def pack_conv3x3_weights(weight, bias):
    """OIHW (Cout, Cin, 3, 3) and (Cout,) -> GEMM panels over k = (ci * 3 + kh) * 3 + kw."""
    c_out = weight.shape[0]
    return pack_gemm_weights(weight.reshape(c_out, -1).T, bias, NR)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def conv3x3_nchw_to_nhwc_clamp(x, packed, packed_bias, stride, act_max, out):
    """out = clamp(conv3x3(x, W) + bias, 0, act_max), NCHW in, NHWC out, no implicit padding.

    x (N, Cin, Hp, Wp) padded input: out[n, oh, ow] reads x[n, :, oh*s : oh*s+3,
    ow*s : ow*s+3], so Hp >= (Ho - 1) * s + 3 and Wp >= (Wo - 1) * s + 3;
    packed (P, Cin*9, NR), packed_bias (P, NR) from pack_conv3x3_weights; out (N, Ho, Wo, Cout).
    """
    n_batch, c_in = x.shape[:2]
    _, out_h, out_w, c_out = out.shape
    panels = packed.shape[0]
    # One task per (image, output row, panel): 112 rows per image at 224x224.
    for task in prange(n_batch * out_h * panels):
        row = task // panels
        p = task - row * panels
        n = row // out_h
        oh = row - n * out_h
        j0 = p * NR
        width = min(NR, c_out - j0)
        panel = packed[p]  # (Cin*9, NR)
        bias = packed_bias[p]  # (NR,)
        dst = out[n, oh]  # (Wo, Cout)
        full_blocks = out_w // MR
        for block in range(full_blocks):
            ow0 = block * MR
            acc0 = stack_buffer_f32(NR)
            acc1 = stack_buffer_f32(NR)
            acc2 = stack_buffer_f32(NR)
            acc3 = stack_buffer_f32(NR)
            acc4 = stack_buffer_f32(NR)
            acc5 = stack_buffer_f32(NR)
            for v in range(NR):
                acc0[v] = bias[v]
                acc1[v] = bias[v]
                acc2[v] = bias[v]
                acc3[v] = bias[v]
                acc4[v] = bias[v]
                acc5[v] = bias[v]
            iw = ow0 * stride
            for ci in range(c_in):
                for kh in range(3):
                    src = x[n, ci, oh * stride + kh]  # (Wp,) one padded input row
                    for kw in range(3):
                        w = panel[(ci * 3 + kh) * 3 + kw]  # (NR,)
                        a0 = src[iw + kw]
                        a1 = src[iw + stride + kw]
                        a2 = src[iw + 2 * stride + kw]
                        a3 = src[iw + 3 * stride + kw]
                        a4 = src[iw + 4 * stride + kw]
                        a5 = src[iw + 5 * stride + kw]
                        for v in range(NR):
                            acc0[v] += a0 * w[v]
                            acc1[v] += a1 * w[v]
                            acc2[v] += a2 * w[v]
                            acc3[v] += a3 * w[v]
                            acc4[v] += a4 * w[v]
                            acc5[v] += a5 * w[v]
            if width == NR:
                store_clamped(acc0, dst[ow0, j0:j0 + NR], act_max)
                store_clamped(acc1, dst[ow0 + 1, j0:j0 + NR], act_max)
                store_clamped(acc2, dst[ow0 + 2, j0:j0 + NR], act_max)
                store_clamped(acc3, dst[ow0 + 3, j0:j0 + NR], act_max)
                store_clamped(acc4, dst[ow0 + 4, j0:j0 + NR], act_max)
                store_clamped(acc5, dst[ow0 + 5, j0:j0 + NR], act_max)
            else:
                store_clamped_partial(acc0, dst[ow0, j0:], width, act_max)
                store_clamped_partial(acc1, dst[ow0 + 1, j0:], width, act_max)
                store_clamped_partial(acc2, dst[ow0 + 2, j0:], width, act_max)
                store_clamped_partial(acc3, dst[ow0 + 3, j0:], width, act_max)
                store_clamped_partial(acc4, dst[ow0 + 4, j0:], width, act_max)
                store_clamped_partial(acc5, dst[ow0 + 5, j0:], width, act_max)
        # Fewer than MR pixels left in the row: one pixel at a time.
        for ow in range(full_blocks * MR, out_w):
            acc = stack_buffer_f32(NR)
            for v in range(NR):
                acc[v] = bias[v]
            for ci in range(c_in):
                for kh in range(3):
                    src = x[n, ci, oh * stride + kh]
                    for kw in range(3):
                        a = src[ow * stride + kw]
                        w = panel[(ci * 3 + kh) * 3 + kw]
                        for v in range(NR):
                            acc[v] += a * w[v]
            store_clamped_partial(acc, dst[ow, j0:], width, act_max)
