"""`mobinumba export --tflite`: a mobinumba weight file as a TensorFlow Lite model.

For a float32 file the graph is the TF-slim shape that LiteRT's XNNPACK delegate runs whole:

    CONV_2D 3x3 -> DEPTHWISE_CONV_2D 3x3 / CONV_2D 1x1 ... -> MEAN (1, 2) -> FULLY_CONNECTED

with batch norm folded into each convolution (ops/base.fold_batch_norm, the runtime's own
folding), the activation fused, and each 3x3 convolution's zeros as the file's padding rule
gives them at the file's input size: SAME where TensorFlow's rule gives the same zeros, else
an explicit PAD before a VALID convolution. The output is the logits (no SOFTMAX), input
(1, S, S, 3) NHWC float32. Written with the `flatbuffers` package (a dependency of
ai-edge-litert); the bench uses it to run LiteRT on the very weights mobinumba runs. An int8
file (format_version 2) becomes TFLite's fully quantized graph of the same integer arithmetic
(see tflite_bytes).
"""
import os

import numpy as np

from .atomic import atomic_output
from .errors import CheckpointError
from .ops import kind_of
from .ops.base import fold_batch_norm
from .ops.dense import KIND as DENSE
from .ops.depthwise import KIND as DEPTHWISE
from .padding import conv_output_size, pads, tf_same_pads
from .weights import read_model_file

# schema.fbs enums and builtin codes used here.
FLOAT32, INT32, INT8 = 0, 2, 9
AVERAGE_POOL_2D, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE, FULLY_CONNECTED = 1, 3, 4, 6, 9
PAD, MEAN, QUANTIZE = 34, 40, 114
CONV_OPTIONS, DEPTHWISE_OPTIONS, POOL_OPTIONS, FC_OPTIONS = 1, 2, 5, 8
PAD_OPTIONS, REDUCER_OPTIONS = 22, 27
SAME, VALID = 0, 1
FUSED = {"relu": 1, "relu6": 3}
BUFFER_ALIGNMENT = 16  # TFLite aligns constant buffers so kernels may read them in place


def export_tflite(weights, output, *, check=None, tolerance=1e-4, force=False):
    """Write the weight file `weights` as the `.tflite` file `output`, atomically.

    check=None compares the written file, run by LiteRT's reference kernels, with the
    runtime when ai-edge-litert is installed (check=True requires it); a difference over
    tolerance * max(1, max |logit|) (float32), or int8 logits off by more than 1 or on more
    than 0.1% of them (int8), leaves nothing at `output`. Returns (max difference, allowed)
    or None when unchecked.
    """
    from .convert.check import (check_against_litert, check_int8_against_litert,
                                litert_available)
    from .convert.tflite_file import parse_tflite

    try:
        import flatbuffers  # noqa: F401
    except ImportError:
        raise CheckpointError("export --tflite needs flatbuffers (pip install "
                              "'mobinumba[tflite]')") from None
    if check and not litert_available():
        raise CheckpointError("--check needs ai-edge-litert (pip install 'mobinumba[tflite]')")
    model_file = read_model_file(weights)
    data, logits_tensor = tflite_bytes(model_file)
    result = None
    with atomic_output(os.fspath(output), force) as temp_path:
        with open(temp_path, "wb") as stream:
            stream.write(data)
        if not (check or (check is None and litert_available())):
            pass
        elif model_file.info.precision == "int8":
            graph = parse_tflite(data)
            quantize = graph.operators[0]  # QUANTIZE: its output is what the stem reads
            result = check_int8_against_litert(weights, temp_path, quantize.outputs[0],
                                               logits_tensor, model_file.info)
        else:
            result = check_against_litert(weights, temp_path, logits_tensor, model_file.info,
                                          tolerance)
    return result


def tflite_bytes(model_file):
    """(the `.tflite` bytes of a ModelFile, index of its logits tensor).

    A float32 file gives the float graph above. An int8 file (the int8 runtime's records)
    gives TensorFlow Lite's fully quantized form of the same arithmetic: float32 input ->
    QUANTIZE (the file's input quantization) -> int8 convolutions with per-channel weight
    scales and int32 biases -> AVERAGE_POOL_2D or MEAN as the classifier's pool_op says ->
    FULLY_CONNECTED -> int8 logits (the logits tensor) -> DEQUANTIZE -> float32 output.
    """
    graph = _Graph()
    info = model_file.info
    int8 = info.precision == "int8"
    size = info.input_size
    source = graph.tensor("input", (1, size, size, 3))
    current, quantization = source, None
    if int8:
        quantization = info.input_quantization
        current = graph.tensor("input_int8", (1, size, size, 3), kind=INT8,
                               quant=_per_tensor(quantization))
        graph.operator(QUANTIZE, (source,), current, 0, [])
    logits = None
    for record in model_file.layers:
        kind = kind_of(record.kind)
        if kind is DENSE:
            current, quantization = _pool(graph, record, current, size, quantization)
            logits = _dense(graph, record, current, quantization)
            current = logits
            continue
        if kind.flat_output or kind.weight_rank != 4:
            raise CheckpointError(f"layer {record.name!r}: kind {record.kind} has no TensorFlow "
                                  f"Lite form here")
        current, size = _convolution(graph, record, kind, current, size, info, quantization)
        quantization = record.quant.output if int8 else None
    output = logits
    if int8:
        output = graph.tensor("logits_float", graph.tensors[logits][1])
        graph.operator(DEQUANTIZE, (logits,), output, 0, [])
    return graph.finish(source, output), logits


def _per_tensor(quantization):
    """The (scales, zero points, axis) of a per-tensor Quantization."""
    return (np.array([quantization.scale], np.float32),
            np.array([quantization.zero_point], np.int64), 0)


def _pool(graph, record, current, size, quantization):
    """The global pooling before the classifier; (pooled tensor, its quantization)."""
    channels = record.weight.shape[1]
    if quantization is None:  # float32: MEAN to (1, C)
        axes = graph.tensor("mean_axes", (2,), np.array([1, 2], np.int32), INT32)
        pooled = graph.tensor("pool", (1, channels))
        graph.operator(MEAN, (current, axes), pooled, REDUCER_OPTIONS, [("bool", 0, False)])
        return pooled, None
    pooled_quantization = record.quant.pooled
    keep_dims = record.quant.pool_op != "mean_flat"  # LiteRT computes the two differently
    pooled = graph.tensor("pool", (1, 1, 1, channels) if keep_dims else (1, channels),
                          kind=INT8, quant=_per_tensor(pooled_quantization))
    if record.quant.pool_op == "average":
        graph.operator(AVERAGE_POOL_2D, (current,), pooled, POOL_OPTIONS,
                       [("i8", 0, VALID), ("i32", 1, 1), ("i32", 2, 1), ("i32", 3, size),
                        ("i32", 4, size), ("i8", 5, 0)])
    else:
        axes = graph.tensor("mean_axes", (2,), np.array([1, 2], np.int32), INT32)
        graph.operator(MEAN, (current, axes), pooled, REDUCER_OPTIONS,
                       [("bool", 0, keep_dims)])
    return pooled, pooled_quantization


def _dense(graph, record, current, quantization):
    """The classifier, FULLY_CONNECTED; its output (logits) tensor."""
    classes = record.weight.shape[0]
    if quantization is None:
        weight = graph.tensor(f"{record.name}/weight", record.weight.shape,
                              record.weight.astype(np.float32))
        bias = graph.tensor(f"{record.name}/bias", (classes,), record.bias.astype(np.float32))
        logits = graph.tensor("logits", (1, classes))
    else:
        weight, bias = _int8_weights(graph, record, record.weight, quantization, axis=0)
        logits = graph.tensor("logits", (1, classes), kind=INT8,
                              quant=_per_tensor(record.quant.output))
    graph.operator(FULLY_CONNECTED, (current, weight, bias), logits, FC_OPTIONS,
                   [("i8", 0, 0)])
    return logits


def _int8_weights(graph, record, weight, input_quantization, axis):
    """(weight tensor, bias tensor) of an int8 record: weights (already in TFLite's layout)
    symmetric per channel along `axis`, bias int32 with scale input_scale * weight_scale."""
    scales = np.asarray(record.quant.weight_scale, np.float32)
    zeros = np.zeros(len(scales), np.int64)
    weight_tensor = graph.tensor(f"{record.name}/weight", weight.shape,
                                 np.ascontiguousarray(weight, np.int8), INT8,
                                 quant=(scales, zeros, axis))
    bias_scales = (np.float64(np.float32(input_quantization.scale)) * scales).astype(np.float32)
    bias_tensor = graph.tensor(f"{record.name}/bias", (len(scales),),
                               np.asarray(record.bias, np.int32), INT32,
                               quant=(bias_scales, zeros, 0))
    return weight_tensor, bias_tensor


def _convolution(graph, record, kind, current, size, info, quantization):
    """Add one folded convolution (and its PAD when needed); (output tensor, output size).
    `quantization`: the input's, for an int8 record; None for float32."""
    if quantization is not None:
        weight, bias = record.weight, record.bias  # int8 (folded), int32
    elif record.bn is not None:
        weight, bias = fold_batch_norm(record)
    else:
        weight, bias = record.weight.astype(np.float32), record.bias.astype(np.float32)
    int8 = quantization is not None
    activation_tensor = dict(kind=INT8, quant=_per_tensor(quantization)) if int8 else {}
    k = kind.kernel_size
    stride = record.stride
    out_size, _ = conv_output_size(size, k, stride, info.padding)
    zeros = pads(size, k, stride, info.padding)
    padding = SAME
    if zeros != tf_same_pads(size, k, stride):
        amounts = np.array([[0, 0], list(zeros), list(zeros), [0, 0]], np.int32)
        padded = graph.tensor(f"{record.name}/padded",
                              (1, size + sum(zeros), size + sum(zeros), weight.shape[1]
                               if kind is not DEPTHWISE else weight.shape[0]),
                              **activation_tensor)
        graph.operator(PAD, (current, graph.tensor(f"{record.name}/pads", (4, 2), amounts,
                                                   INT32)), padded, PAD_OPTIONS, [])
        current, padding = padded, VALID
    activation = FUSED[info.activation]
    channels = weight.shape[0]
    output = graph.tensor(record.name, (1, out_size, out_size, channels),
                          **(dict(kind=INT8, quant=_per_tensor(record.quant.output))
                             if int8 else {}))
    # TFLite's layouts: depthwise (C, 1, k, k) -> (1, k, k, C), per channel along axis 3;
    # conv OIHW -> OHWI, per channel along axis 0.
    tflite_weight = (weight.transpose(1, 2, 3, 0) if kind is DEPTHWISE
                     else weight.transpose(0, 2, 3, 1))
    if int8:
        tensor, bias_tensor = _int8_weights(graph, record, tflite_weight, quantization,
                                            axis=3 if kind is DEPTHWISE else 0)
    else:
        tensor = graph.tensor(f"{record.name}/weight", tflite_weight.shape, tflite_weight)
        bias_tensor = graph.tensor(f"{record.name}/bias", (channels,), bias)
    if kind is DEPTHWISE:
        graph.operator(DEPTHWISE_CONV_2D, (current, tensor, bias_tensor), output,
                       DEPTHWISE_OPTIONS,
                       [("i8", 0, padding), ("i32", 1, stride), ("i32", 2, stride),
                        ("i32", 3, 1), ("i8", 4, activation), ("i32", 5, 1), ("i32", 6, 1)])
    else:
        graph.operator(CONV_2D, (current, tensor, bias_tensor), output, CONV_OPTIONS,
                       [("i8", 0, padding), ("i32", 1, stride), ("i32", 2, stride),
                        ("i8", 3, activation), ("i32", 4, 1), ("i32", 5, 1)])
    return output, out_size


class _Graph:
    """Tensors, constant buffers and operators collected before the FlatBuffer is built."""

    def __init__(self):
        self.tensors = []    # (name, shape, type, buffer index)
        self.buffers = [b""]  # buffer 0 is the empty buffer, by convention
        self.operators = []  # (builtin code, inputs, output, options type, options fields)

    def tensor(self, name, shape, data=None, kind=FLOAT32, quant=None):
        """Index of a new tensor; `data` makes it a constant; `quant` is (scales, zero
        points, quantized dimension)."""
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"))
                                .tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name, tuple(int(dim) for dim in shape), kind, buffer, quant))
        return len(self.tensors) - 1

    def operator(self, code, inputs, output, options_type, fields):
        self.operators.append((code, tuple(inputs), output, options_type, fields))

    def finish(self, graph_input, graph_output):
        """The FlatBuffer bytes (schema version 3, identifier TFL3)."""
        import flatbuffers

        builder = flatbuffers.Builder(1024)
        buffers = [self._buffer(builder, data) for data in self.buffers]
        tensors = [self._tensor(builder, *tensor) for tensor in self.tensors]
        codes = sorted({op[0] for op in self.operators})
        operators = [self._operator(builder, codes.index(op[0]), *op[1:])
                     for op in self.operators]
        subgraph_tensors = _table_vector(builder, tensors)
        subgraph_inputs = _int_vector(builder, [graph_input])
        subgraph_outputs = _int_vector(builder, [graph_output])
        subgraph_operators = _table_vector(builder, operators)
        name = builder.CreateString("main")
        builder.StartObject(5)
        builder.PrependUOffsetTRelativeSlot(0, subgraph_tensors, 0)
        builder.PrependUOffsetTRelativeSlot(1, subgraph_inputs, 0)
        builder.PrependUOffsetTRelativeSlot(2, subgraph_outputs, 0)
        builder.PrependUOffsetTRelativeSlot(3, subgraph_operators, 0)
        builder.PrependUOffsetTRelativeSlot(4, name, 0)
        subgraph = builder.EndObject()
        code_tables = []
        for code in codes:
            builder.StartObject(4)
            builder.PrependInt8Slot(0, min(code, 127), 0)
            builder.PrependInt32Slot(2, 1, 1)
            builder.PrependInt32Slot(3, code, 0)
            code_tables.append(builder.EndObject())
        model_codes = _table_vector(builder, code_tables)
        model_subgraphs = _table_vector(builder, [subgraph])
        description = builder.CreateString("mobinumba export")
        model_buffers = _table_vector(builder, buffers)
        builder.StartObject(5)
        builder.PrependUint32Slot(0, 3, 0)
        builder.PrependUOffsetTRelativeSlot(1, model_codes, 0)
        builder.PrependUOffsetTRelativeSlot(2, model_subgraphs, 0)
        builder.PrependUOffsetTRelativeSlot(3, description, 0)
        builder.PrependUOffsetTRelativeSlot(4, model_buffers, 0)
        builder.Finish(builder.EndObject(), file_identifier=b"TFL3")
        return bytes(builder.Output())

    @staticmethod
    def _buffer(builder, data):
        vector = None
        if data:
            builder.StartVector(1, len(data), BUFFER_ALIGNMENT)
            builder.head -= len(data)
            builder.Bytes[builder.head:builder.head + len(data)] = data
            vector = builder.EndVector()
        builder.StartObject(1)
        if vector is not None:
            builder.PrependUOffsetTRelativeSlot(0, vector, 0)
        return builder.EndObject()

    @staticmethod
    def _tensor(builder, name, shape, kind, buffer, quant):
        shape_vector = _int_vector(builder, shape)
        name_string = builder.CreateString(name)
        quantization = None
        if quant is not None:
            scales, zero_points, axis = quant
            scale_vector = builder.CreateNumpyVector(np.asarray(scales, "<f4"))
            zero_vector = builder.CreateNumpyVector(np.asarray(zero_points, "<i8"))
            builder.StartObject(7)
            builder.PrependUOffsetTRelativeSlot(2, scale_vector, 0)
            builder.PrependUOffsetTRelativeSlot(3, zero_vector, 0)
            builder.PrependInt32Slot(6, axis, 0)
            quantization = builder.EndObject()
        builder.StartObject(5)
        builder.PrependUOffsetTRelativeSlot(0, shape_vector, 0)
        builder.PrependInt8Slot(1, kind, 0)
        builder.PrependUint32Slot(2, buffer, 0)
        builder.PrependUOffsetTRelativeSlot(3, name_string, 0)
        if quantization is not None:
            builder.PrependUOffsetTRelativeSlot(4, quantization, 0)
        return builder.EndObject()

    @staticmethod
    def _operator(builder, code_index, inputs, output, options_type, fields):
        prepend = {"i8": builder.PrependInt8Slot, "i32": builder.PrependInt32Slot,
                   "bool": builder.PrependBoolSlot}
        builder.StartObject(1 + max((slot for _, slot, _ in fields), default=0))
        for kind, slot, value in fields:
            prepend[kind](slot, value, 0 if kind != "bool" else False)
        options = builder.EndObject()
        input_vector = _int_vector(builder, inputs)
        output_vector = _int_vector(builder, [output])
        builder.StartObject(5)
        builder.PrependUint32Slot(0, code_index, 0)
        builder.PrependUOffsetTRelativeSlot(1, input_vector, 0)
        builder.PrependUOffsetTRelativeSlot(2, output_vector, 0)
        builder.PrependUint8Slot(3, options_type, 0)
        builder.PrependUOffsetTRelativeSlot(4, options, 0)
        return builder.EndObject()


def _int_vector(builder, values):
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependInt32(int(value))
    return builder.EndVector()


def _table_vector(builder, offsets):
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()

