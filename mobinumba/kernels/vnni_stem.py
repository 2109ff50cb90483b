"""int8 stem (standard 3x3 conv on the RGB input) on VNNI: `vpdpbusd` over the kernel rows.

Only imported when the compile target has AVX-512 VNNI or AVX-VNNI (qtargets.int8_dot_product),
like kernels/vnni.py, whose GEMM tile and vpdpbusd update it reuses. The portable stem
(kernels/qconv.py) multiplies 27 taps one at a time in int32.

The input is the runner's padded NCHW int8 buffer, so the three taps kw = 0, 1, 2 of a kernel
row (input channel ci, row kh) of output pixel ow are the contiguous bytes x[n, ci, r,
s*ow .. s*ow + 2]: one unaligned 4-byte load gives them (and one byte more, whose weight is
0). Each (ci, kh) is one group of the reduction: 9 groups of 4 bytes instead of 27 taps, with
the weights packed as (w[co, ci, kh, 0..2], 0). The padded buffer is one column wider than
the taps need (ops/stem.py), so the fourth byte of the last pixel stays inside its row.
The input buffer holds the quantized input + 128 as u8 bits (q XOR 0x80: the input QUANTIZE
writes it so, ops/stem.py QuantizedStemConv.input_flip), so each group is one broadcast from
memory; XORing every load, as the pointwise GEMM does, took 0.164 ms against 0.110 ms at
224x224 on one thread. The +128 comes back out through the bias, as in kernels/vnni.py.
"""
import functools

import numpy as np
from numba import njit, prange

from ._common import CACHE
from .qcommon import aligned_array, requantize_tile, stack_matrix_i32
from .vnni import VnniTile, dpbusd_update, load_i32_unaligned


# MobileNetV1's stem has 32 channels (x width): two zmm of channels, and 12 pixels fill
# 24 accumulators + 2 weight vectors + 1 broadcast of the 32 zmm. AVX-VNNI (16 ymm):
# 6 pixels x 2 ymm = 12 accumulators + 2 + 1.
# (The pointwise GEMM's tile type: mr pixels x vectors of lanes channels.)
STEM_TILES = {"avx512vnni": VnniTile(12, 2, 16), "avxvnni": VnniTile(6, 2, 8)}


def pack_vnni_conv3x3_weights(weight, bias, nr):
    """OIHW int8 (Cout, Cin, 3, 3), int32 (Cout,) -> (P, Cin * 3, nr * 4) int8 panels and
    (P, nr) int32 bias: in panel p, group g = ci * 3 + kh, bytes [4c .. 4c + 3] hold
    (w[p*nr + c, ci, kh, 0..2], 0), zero past Cout."""
    c_out, c_in = weight.shape[:2]
    panels = (c_out + nr - 1) // nr
    quads = np.zeros((panels * nr, c_in, 3, 4), np.int8)  # (Cout padded, Cin, kh, kw + 1)
    quads[:c_out, :, :, :3] = weight
    # (P, NR, Cin * 3, 4) -> (P, Cin * 3, NR, 4)
    packed = quads.reshape(panels, nr, c_in * 3, 4).transpose(0, 2, 1, 3)
    packed_bias = np.zeros(panels * nr, np.int32)
    packed_bias[:c_out] = bias
    return (aligned_array(packed.reshape(panels, c_in * 3, nr * 4), np.int8),
            aligned_array(packed_bias.reshape(panels, nr), np.int32))


@functools.cache
def qconv3x3_nchw_to_nhwc_vnni_kernel(tile):
    """qconv3x3_nchw_to_nhwc_vnni compiled for `tile` (a VnniTile), once per tile."""
    mr, vectors, lanes, nr = tile.mr, tile.vectors, tile.lanes, tile.nr  # closure constants

    @njit(parallel=True, cache=CACHE)
    def qconv3x3_nchw_to_nhwc_vnni(x, packed, packed_bias, table, stride,
                                   out_zero_point, low, high, out):
        """out = requantize(conv3x3(x - zp_in, W) + bias) with vpdpbusd, NCHW int8 in,
        NHWC int8 out.

        x (N, Cin, Hp, Wp) int8 holding q + 128 as u8 bits (q ^ 0x80), padded with the zero
        point likewise, with Wp >= (Wo - 1) * stride + 4 (out[n, oh, ow]
        reads x[n, :, oh*s : oh*s+3, ow*s : ow*s+4]); packed (P, Cin*3, NR*4) int8 and
        packed_bias (P, NR) int32 from pack_vnni_conv3x3_weights (the bias with (128 +
        input zero point) * sum w folded in); table (5, Cout) int32 from qcommon.requantize_table;
        out (N, Ho, Wo, Cout) int8.
        """
        n_batch, c_in = x.shape[0], x.shape[1]
        _, out_h, out_w, c_out = out.shape
        panels = packed.shape[0]
        blocks = (out_w + mr - 1) // mr
        for task in prange(n_batch * out_h * panels):
            row = task // panels
            p = task - row * panels
            n = row // out_h
            oh = row - n * out_h
            j0 = p * nr
            width = min(nr, c_out - j0)
            panel = packed[p]  # (Cin*3, NR*4)
            start = packed_bias[p]  # (NR,)
            for block in range(blocks):
                ow0 = block * mr
                count = min(mr, out_w - ow0)
                acc = stack_matrix_i32(mr, nr)
                for v in range(min(nr, start.shape[0])):
                    for r in range(mr):
                        acc[r, v] = start[v]
                for ci in range(c_in):
                    for kh in range(3):
                        line = x[n, ci, oh * stride + kh]  # (Wp,)
                        w = panel[ci * 3 + kh]  # (NR*4,)
                        for r in range(mr):
                            # Pixels past the row's end repeat its last one (not stored).
                            column = (ow0 + min(r, count - 1)) * stride
                            a = load_i32_unaligned(line, column)  # u8 already
                            for v in range(vectors):
                                dpbusd_update(acc, r * nr + v * lanes, a, w, v * 4 * lanes,
                                              lanes)
                requantize_tile(acc, table, j0, out_zero_point, low, high, width, out[n, oh],
                                ow0, count, mr, nr)

    return qconv3x3_nchw_to_nhwc_vnni
