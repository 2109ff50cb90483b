"""The paper's "Conv MobileNet" as runnable ops: standard 3x3 convs inside the network.

StandardConv follows graph.py's op protocol (spec, output_shape, bind), so a list of ops
with the stem, these convs, pooling and the classifier runs in a graph.Workspace exactly like
MobileNet does. The weight file format has no such layer (its middle layers are depthwise and
pointwise only): these ops exist for the benchmark report alone.
"""
import numpy as np

from ..graph import Workspace, build_ops
from ..kernels.conv import (conv3x3_nhwc_direct_clamp, conv3x3_nhwc_im2col_clamp,
                            pack_conv3x3_direct_weights, pack_conv3x3_im2col_weights)
from ..activation import activation_of
from ..ops.base import fold_batch_norm
from ..ops.stem import KIND as STEM

METHODS = ("direct", "im2col")


class ColumnScratch:
    """One im2col buffer shared by every StandardConv of a workspace (they run one at a time),
    sized for the largest of them by size_for() before the workspace binds the ops."""

    def __init__(self):
        self.buffer = np.empty(0, dtype=np.float32)

    def size_for(self, ops, n, height, width):
        """Allocate enough for every im2col conv in `ops` on an (n, 3, height, width) input."""
        shape, largest = (n, 3, height, width), 0
        for op in ops:
            out_shape = op.output_shape(shape)
            if isinstance(op, StandardConv) and op.method == "im2col":
                largest = max(largest, int(np.prod(out_shape[:3])) * 9 * shape[3])
            shape = out_shape
        self.buffer = np.empty(largest, dtype=np.float32)

    def columns(self, n, out_h, out_w, depth):
        """A (n, out_h, out_w, depth) view of the buffer."""
        return self.buffer[:n * out_h * out_w * depth].reshape(n, out_h, out_w, depth)


class StandardConv:
    """Standard 3x3 conv + BN + activation in NHWC: (N, H, W, Cin) -> (N, Ho, Wo, Cout).

    method "direct": the naive direct kernel; "im2col": im2col into `scratch`, then the
    pointwise GEMM.
    """

    def __init__(self, record, activation, padding, method, scratch=None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.spec = record.spec
        self.method = method
        weight, bias = fold_batch_norm(record)  # (Cout, Cin, 3, 3), (Cout,)
        if method == "direct":
            # (Cout, 3, 3, Cin), (Cout,)
            self.weight, self.bias = pack_conv3x3_direct_weights(weight), bias
        else:  # (panels, 9 * Cin, NR), (panels, NR)
            self.weight, self.bias = pack_conv3x3_im2col_weights(weight, bias)
        self.act_max = activation_of(activation).act_max
        self.epilogue_args = activation_of(activation).epilogue_args  # () or (slope,)
        self.padding = padding
        self.scratch = scratch if scratch is not None else ColumnScratch()

    def output_shape(self, shape):
        n, height, width, _ = shape
        out_h, out_w, _, _ = self.spec.output_size(height, width, self.padding)
        return n, out_h, out_w, self.spec.out_channels

    def bind(self, src, dst):
        n, height, width, c_in = src.shape
        out_h, out_w, pad_top, pad_left = self.spec.output_size(height, width, self.padding)
        if self.method == "direct":
            return conv3x3_nhwc_direct_clamp, (src, self.weight, self.bias, self.spec.stride,
                                               pad_top, pad_left, self.act_max, dst,
                                               *self.epilogue_args)
        if self.scratch.buffer.size < n * out_h * out_w * 9 * c_in:
            # Only an op with a scratch of its own gets here: a shared one is sized up front,
            # since replacing its buffer would leave the other ops' views on the old one.
            self.scratch.buffer = np.empty(n * out_h * out_w * 9 * c_in, dtype=np.float32)
        columns = self.scratch.columns(n, out_h, out_w, 9 * c_in)
        return conv3x3_nhwc_im2col_clamp, (src, self.weight, self.bias, self.spec.stride,
                                           pad_top, pad_left, self.act_max, columns, dst,
                                           *self.epilogue_args)


def conv_mobilenet_workspace(records, activation, padding, method, n, height, width):
    """A Workspace running the network of `records` in which every conv after the stem is a
    StandardConv of `method`; the stem, pooling and the classifier are graph.py's own ops."""
    ops = build_ops(records, activation, padding)
    scratch = ColumnScratch()
    weight_ops = [index for index, op in enumerate(ops) if op.spec.op.has_weights]
    for index, record in zip(weight_ops[1:], records[1:]):
        if record.spec.op is STEM:
            ops[index] = StandardConv(record, activation, padding, method, scratch)
    scratch.size_for(ops, n, height, width)
    return Workspace(ops, n, height, width)
