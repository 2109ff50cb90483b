"""The runner: the ops of a weight file's layer records, bound to one workspace.

An op (built by its layer kind, mobinumba/ops/) owns its layer's folded and packed weights
and knows which kernel computes it. A Workspace is built once per input shape (N, H, W): it
allocates every buffer the forward pass needs and binds each op to its input and output
views, so running the network is one loop of kernel calls with no allocation.
"""
import math
import time

import numpy as np

from .kernels._common import aligned_zeros
from .ops import POOL, kind_of


def build_ops(layers, activation, padding, input_quantization=None):
    """The op list for validated layer records, in order: each record's op (built by its
    kind, see mobinumba/ops/), with global pooling before the first op taking flat features,
    or last when no layer does (a backbone without classifier ends with its pooled features).
    `activation` is an activation.Activation or a name (relu, relu6).

    int8 records (record.quant set) get int8 ops; each needs its input's quantization: the
    model's `input_quantization` for the first, then the previous op's output_quantization.
    """
    ops = []
    quantization = input_quantization
    for record in layers:
        kind = kind_of(record.kind)
        if kind.flat_input:
            ops.append(POOL.build_pool(record.spec.in_channels, quantization, record.quant))
            quantization = getattr(ops[-1], "output_quantization", None)
        ops.append(kind.build(record, activation, padding, quantization))
        quantization = getattr(ops[-1], "output_quantization", None)
    if not ops[-1].spec.op.flat_output:  # a float32 backbone (weights.py refuses int8 ones)
        ops.append(POOL.build_pool(ops[-1].spec.out_channels))
    return ops


def pooling_index(ops):
    """The index of the global pooling op: its output (N, C) is the model's features."""
    return next(index for index, op in enumerate(ops) if op.spec.op is POOL)


def _output_dtype(op):
    """The dtype an op writes: float32, or int8 for int8 ops (which say so)."""
    return np.dtype(getattr(op, "output_dtype", np.float32))


def workspace_bytes(ops, n, height, width):
    """Bytes a Workspace for an (n, 3, height, width) input allocates."""
    padded_shape, _, _ = ops[0].padded_input((n, 3, height, width))
    shape = (n, 3, height, width)
    largest = 0
    for op in ops[:-1]:
        shape = op.output_shape(shape)
        largest = max(largest, math.prod(shape))  # Python ints: no overflow for any shape
    logits = n * ops[-1].spec.out_channels
    itemsize = _output_dtype(ops[0]).itemsize  # int8 models: 1-byte buffers
    return itemsize * (math.prod(padded_shape) + 2 * largest + logits)


class Workspace:
    """Every buffer of one forward pass for a fixed input shape, and the bound kernel calls.

    padded_input (N, 3, Hp, Wp) float32, zero borders: the stem conv reads it.
    input (N, 3, H, W): the interior view of padded_input; the caller copies its batch here.
    two ping-pong buffers, each as large as the largest intermediate activation: op i writes
    into buffer i % 2 and reads the other one.
    features (N, C) float32: the global pooling op's output (a view into a ping-pong buffer,
    or `logits` itself when pooling is the last op, as in a backbone); valid after run() or
    run_features().
    logits (N, K) float32: the last op's output, the classifier's logits (K = num_classes)
    or, for a backbone without classifier, the pooled features (K = channels).
    outputs: every op's output view, in order (a ping-pong view is overwritten two ops later).
    An int8 model's buffers are int8 (each op's output_dtype), and its padded input is
    bordered with the input zero point (the stem op's pad_value) instead of zeros.
    """

    def __init__(self, ops, n, height, width):
        padded_shape, top, left = ops[0].padded_input((n, 3, height, width))
        self.padded_input = _buffer(padded_shape, getattr(ops[0], "input_dtype", np.float32))
        self.padded_input[...] = getattr(ops[0], "pad_value", 0)  # (N, 3, Hp, Wp)
        self.input = self.padded_input[:, :, top:top + height, left:left + width]  # (N, 3, H, W)
        shapes = []
        shape = self.input.shape
        for op in ops:
            shape = op.output_shape(shape)
            shapes.append(shape)
        largest = max(int(np.prod(s)) for s in shapes[:-1])
        ping_pong = [_buffer(largest, _output_dtype(ops[0])) for _ in range(2)]
        self.logits = _buffer(shapes[-1], _output_dtype(ops[-1]))  # (N, K)
        self.calls = []  # (op, kernel, args) in execution order
        pooling = pooling_index(ops)
        self._features_end = pooling + 1  # calls up to and including the pooling op
        self.outputs = []  # op i's output view
        src = self.padded_input
        for index, (op, shape) in enumerate(zip(ops, shapes)):
            if index == len(ops) - 1:
                dst = self.logits
            else:
                dst = ping_pong[index % 2][:int(np.prod(shape))].reshape(shape)
            kernel, args = op.bind(src, dst)
            self.calls.append((op, kernel, args))
            if index == pooling:
                self.features = dst  # (N, C)
            self.outputs.append(dst)
            src = dst
        self.block_calls, self._block_features_end = self._block_plan(ops, shapes,
                                                                       ping_pong, pooling)

    def _block_plan(self, ops, shapes, ping_pong, pooling):
        """(calls, how many of them end at the pooling) for run() and run_features(): the
        calls with each op that runs together with the next one (an int8 depthwise +
        pointwise block on VNNI: op.fuses_with, op.bind_block) as one call, which does not
        write the first op's output. A block cannot write its input's buffer (its tasks read
        rows around theirs), so the plan alternates the ping-pong buffers per call, not per
        op; `features` is the plan's pooling output."""
        steps, index = [], 0
        while index < len(ops):
            fuses = getattr(ops[index], "fuses_with", None)
            width = (2 if fuses is not None and index + 1 < len(ops)
                     and fuses(ops[index + 1], shapes[index]) else 1)
            steps.append(range(index, index + width))
            index += width
        if len(steps) == len(ops):
            return self.calls, self._features_end
        calls, features_end = [], None
        src = self.padded_input
        for step_index, step in enumerate(steps):
            last = step[-1]
            if last == len(ops) - 1:
                dst = self.logits
            else:
                shape = shapes[last]
                dst = ping_pong[step_index % 2][:int(np.prod(shape))].reshape(shape)
            if len(step) == 2:
                kernel, args = ops[step[0]].bind_block(ops[last], src, dst)
            else:
                kernel, args = ops[last].bind(src, dst)
            calls.append((ops[step[0]], kernel, args))
            if last == pooling:
                self.features, features_end = dst, len(calls)  # (N, C)
            src = dst
        return calls, features_end

    def run(self):
        """Run the forward pass (blocks fused where an op offers it); the result is in
        self.logits."""
        for _, kernel, args in self.block_calls:
            kernel(*args)

    def run_features(self):
        """Run the forward pass up to and including global pooling; the result is in
        self.features (the ops after it, the classifier, are skipped)."""
        for _, kernel, args in self.block_calls[:self._block_features_end]:
            kernel(*args)

    def run_keeping(self, indices):
        """Run op by op (no fused blocks: every output is written) and return {op index: copy
        of its output} for `indices`: each copy is taken right after its op, before a later
        op reuses the ping-pong buffer."""
        kept = {}
        for index, (_, kernel, args) in enumerate(self.calls):
            kernel(*args)
            if index in indices:
                kept[index] = self.outputs[index].copy()
        return kept

    def run_layers(self):
        """Run op by op, yielding (op, its output buffer) after each op (calibration reads
        every activation; the buffer is reused two ops later)."""
        for op, kernel, args in self.calls:
            kernel(*args)
            yield op, args[-1]

    def run_profiled(self):
        """Run op by op (no fused blocks, so every layer has its time) and return
        [(op, seconds)] per op, timed with perf_counter."""
        timings = []
        for op, kernel, args in self.calls:
            start = time.perf_counter()
            kernel(*args)
            timings.append((op, time.perf_counter() - start))
        return timings


def _buffer(shape, dtype):
    """An aligned zeroed buffer of `shape` and `dtype` (float32 buffers as before)."""
    if np.dtype(dtype) == np.float32:
        return aligned_zeros(shape)
    from .kernels.qcommon import aligned_empty

    buffer = aligned_empty(shape, dtype)
    buffer[...] = 0
    return buffer
