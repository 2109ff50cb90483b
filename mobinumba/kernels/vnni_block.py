"""int8 depthwise + pointwise block in one parallel region on VNNI.

Only imported when the compile target has AVX-512 VNNI or AVX-VNNI, like kernels/vnni.py.
MobileNetV1 is 13 blocks of a depthwise 3x3 conv followed by a pointwise 1x1 conv. Run as two
kernels, each block is two parallel regions, and each region ends in a barrier where one
thread waits for the other: on a shared machine, a thread that is descheduled next to
another process holds every barrier up (docs/performance.md: ~0.06 ms per region at load 3).
Here one task computes a band of depthwise output rows into its own rows of a scratch buffer
(band x Wo x C int8, 28 KB at most in MobileNetV1 at 224: it stays in the core's cache) and
then the GEMM rows of that band for its share of the pointwise panels, with the same row and
tile code as the separate kernels (vnni_depthwise.depthwise_row_vnni, vnni.vnni_tile), so
the results are the same bits. The scratch is an argument, not an array the task allocates:
row views of a kernel-allocated array kept the GEMM's accumulators on the stack (24 stores
per step of the reduction; 2-3x slower).

ops/depthwise.py fuses a block only where a band's rows fill the GEMM's row tiles (the late
14x14 and 7x7 layers stay two kernels), and sets `band` and `splits`: a task is one band of
one image and every `splits`-th panel, so that a layer with few bands still gives both
threads work (each share recomputes its band's depthwise rows).

Measured (docs/performance.md): on a quiet machine the same time as the two kernels; under
load, fewer barriers (5 regions fewer per forward pass at 224).
"""
import functools

from numba import njit, prange

from ._common import CACHE
from .vnni import vnni_tile
from .vnni_depthwise import depthwise_buffers, depthwise_row_vnni


@functools.cache
def qblock_nhwc_vnni_kernel(lanes, tile):
    """qblock_nhwc_vnni for depthwise vectors of `lanes` and the pointwise VnniTile `tile`."""
    mr, vectors, tile_lanes, nr = tile.mr, tile.vectors, tile.lanes, tile.nr  # constants

    @njit(parallel=True, cache=CACHE)
    def qblock_nhwc_vnni(x, dw_weight, dw_bias, dw_table, stride, top, left, in_zero_point,
                         mid_zero_point, mid_low, mid_high, band, splits, packed, packed_bias,
                         table, out_zero_point, low, high, scratch, out):
        """out = pointwise(depthwise(x)), both requantized as TFLite does, in one region.

        x (N, H, W, C) int8; dw_weight, dw_bias, dw_table, stride, top, left, in_zero_point:
        qdwconv3x3_nhwc_vnni's; mid_zero_point, mid_low, mid_high: the depthwise output's
        zero point and clamp; band: depthwise output rows per task; splits: panel shares
        per band; packed, packed_bias, table, out_zero_point, low, high: qpwconv_nhwc_vnni's;
        scratch (tasks, band * Wo, C) int8, a task's depthwise rows; out (N, Ho, Wo, Cout)
        int8, C-contiguous.
        """
        n_batch, _, width, channels = x.shape
        _, out_h, out_w, c_out = out.shape
        panels = packed.shape[0]
        bands = (out_h + band - 1) // band
        out_rows = out.reshape(n_batch * out_h * out_w, c_out)  # (M, Cout)
        for task in prange(n_batch * bands * splits):
            share = task % splits
            n = task // splits // bands
            oh0 = (task // splits - n * bands) * band
            oh1 = min(out_h, oh0 + band)
            mid = scratch[task, :(oh1 - oh0) * out_w]  # (rows, C): the band's dw output
            outside, quads, acc = depthwise_buffers(width, channels, out_w, stride, left,
                                                    dw_bias.shape[0], in_zero_point)
            for oh in range(oh0, oh1):
                row = (oh - oh0) * out_w
                depthwise_row_vnni(x, n, oh, stride, top, left, dw_weight, dw_bias, dw_table,
                                   mid_zero_point, mid_low, mid_high, outside, quads, acc,
                                   mid[row:row + out_w], lanes)
            rows = mid.shape[0]
            first = (n * out_h + oh0) * out_w
            target = out_rows[first:first + rows]  # (rows, Cout)
            row_tiles = (rows + mr - 1) // mr
            my_panels = (panels - share + splits - 1) // splits
            for t in range(my_panels * row_tiles):  # one loop over the tiles, as in vnni.py
                p = share + (t // row_tiles) * splits
                i0 = (t % row_tiles) * mr
                j0 = p * nr
                vnni_tile(mid, i0, min(mr, rows - i0), packed[p], packed_bias[p], table, j0,
                          min(nr, c_out - j0), out_zero_point, low, high, target, mr, vectors,
                          tile_lanes, nr)

    return qblock_nhwc_vnni
