"""`mobinumba export --tflite`: a mobinumba weight file as a float32 TensorFlow Lite model.

The graph is the TF-slim shape that LiteRT's XNNPACK delegate runs whole:

    CONV_2D 3x3 -> DEPTHWISE_CONV_2D 3x3 / CONV_2D 1x1 ... -> MEAN (1, 2) -> FULLY_CONNECTED

with batch norm folded into each convolution (ops/base.fold_batch_norm, the runtime's own
folding), the activation fused, and each 3x3 convolution's zeros as the file's padding rule
gives them at the file's input size: SAME where TensorFlow's rule gives the same zeros, else
an explicit PAD before a VALID convolution. The output is the logits (no SOFTMAX), input
(1, S, S, 3) NHWC float32. Written with the `flatbuffers` package (a dependency of
ai-edge-litert); the bench uses it to run LiteRT on the very weights mobinumba runs.
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
FLOAT32, INT32 = 0, 2
CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, PAD, MEAN = 3, 4, 9, 34, 40
CONV_OPTIONS, DEPTHWISE_OPTIONS, FC_OPTIONS, PAD_OPTIONS, REDUCER_OPTIONS = 1, 2, 8, 22, 27
SAME, VALID = 0, 1
FUSED = {"relu": 1, "relu6": 3}
BUFFER_ALIGNMENT = 16  # TFLite aligns constant buffers so kernels may read them in place


def export_tflite(weights, output, *, check=None, tolerance=1e-4, force=False):
    """Write the weight file `weights` as the `.tflite` file `output`, atomically.

    check=None compares the written file, run by LiteRT's reference kernels, with the
    runtime when ai-edge-litert is installed (check=True requires it); a difference over
    tolerance * max(1, max |logit|) leaves nothing at `output`. Returns (max difference,
    allowed) or None when unchecked.
    """
    from .convert.check import check_against_litert, litert_available

    try:
        import flatbuffers  # noqa: F401
    except ImportError:
        raise CheckpointError("export --tflite needs flatbuffers (pip install "
                              "'mobinumba[tflite]')") from None
    if check and not litert_available():
        raise CheckpointError("--check needs ai-edge-litert (pip install 'mobinumba[tflite]')")
    model_file = read_model_file(weights)
    if model_file.info.precision != "float32":
        raise CheckpointError(f"{weights}: an {model_file.info.precision} model; export "
                              f"--tflite writes float32 models (export its float32 source)")
    data, logits_tensor = tflite_bytes(model_file)
    result = None
    with atomic_output(os.fspath(output), force) as temp_path:
        with open(temp_path, "wb") as stream:
            stream.write(data)
        if check or (check is None and litert_available()):
            result = check_against_litert(weights, temp_path, logits_tensor, model_file.info,
                                          tolerance)
    return result


def tflite_bytes(model_file):
    """(the `.tflite` bytes of a ModelFile, index of its logits tensor)."""
    graph = _Graph()
    info = model_file.info
    size = info.input_size
    current = graph.tensor("input", (1, size, size, 3))
    inputs = current
    for record in model_file.layers:
        kind = kind_of(record.kind)
        if kind is DENSE:
            axes = graph.tensor("mean_axes", (2,), np.array([1, 2], np.int32), INT32)
            channels = record.weight.shape[1]
            pooled = graph.tensor("pool", (1, channels))
            graph.operator(MEAN, (current, axes), pooled, REDUCER_OPTIONS, [("bool", 0, False)])
            weight = graph.tensor(f"{record.name}/weight", record.weight.shape,
                                  record.weight.astype(np.float32))
            bias = graph.tensor(f"{record.name}/bias", record.bias.shape,
                                record.bias.astype(np.float32))
            logits = graph.tensor("logits", (1, record.weight.shape[0]))
            graph.operator(FULLY_CONNECTED, (pooled, weight, bias), logits, FC_OPTIONS,
                           [("i8", 0, 0)])
            current = logits
            continue
        if kind.flat_output or kind.weight_rank != 4:
            raise CheckpointError(f"layer {record.name!r}: kind {record.kind} has no TensorFlow "
                                  f"Lite form here")
        current, size = _convolution(graph, record, kind, current, size, info)
    return graph.finish(inputs, current), current


def _convolution(graph, record, kind, current, size, info):
    """Add one folded convolution (and its PAD when needed); (output tensor, output size)."""
    weight, bias = fold_batch_norm(record) if record.bn is not None else (
        record.weight.astype(np.float32), record.bias.astype(np.float32))
    k = kind.kernel_size
    stride = record.stride
    out_size, _ = conv_output_size(size, k, stride, info.padding)
    zeros = pads(size, k, stride, info.padding)
    padding = SAME
    if zeros != tf_same_pads(size, k, stride):
        amounts = np.array([[0, 0], list(zeros), list(zeros), [0, 0]], np.int32)
        padded = graph.tensor(f"{record.name}/padded",
                              (1, size + sum(zeros), size + sum(zeros), weight.shape[1]
                               if kind is not DEPTHWISE else weight.shape[0]))
        graph.operator(PAD, (current, graph.tensor(f"{record.name}/pads", (4, 2), amounts,
                                                   INT32)), padded, PAD_OPTIONS, [])
        current, padding = padded, VALID
    activation = FUSED[info.activation]
    channels = weight.shape[0]
    output = graph.tensor(record.name, (1, out_size, out_size, channels))
    bias_tensor = graph.tensor(f"{record.name}/bias", (channels,), bias)
    if kind is DEPTHWISE:
        # (C, 1, k, k) -> (1, k, k, C)
        tensor = graph.tensor(f"{record.name}/weight", (1, k, k, channels),
                              weight.transpose(1, 2, 3, 0))
        graph.operator(DEPTHWISE_CONV_2D, (current, tensor, bias_tensor), output,
                       DEPTHWISE_OPTIONS,
                       [("i8", 0, padding), ("i32", 1, stride), ("i32", 2, stride),
                        ("i32", 3, 1), ("i8", 4, activation), ("i32", 5, 1), ("i32", 6, 1)])
    else:
        # OIHW -> OHWI
        tensor = graph.tensor(f"{record.name}/weight", (channels, k, k, weight.shape[1]),
                              weight.transpose(0, 2, 3, 1))
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

    def tensor(self, name, shape, data=None, kind=FLOAT32):
        """Index of a new tensor; `data` makes it a constant."""
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"))
                                .tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name, tuple(int(dim) for dim in shape), kind, buffer))
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
    def _tensor(builder, name, shape, kind, buffer):
        shape_vector = _int_vector(builder, shape)
        name_string = builder.CreateString(name)
        builder.StartObject(5)
        builder.PrependUOffsetTRelativeSlot(0, shape_vector, 0)
        builder.PrependInt8Slot(1, kind, 0)
        builder.PrependUint32Slot(2, buffer, 0)
        builder.PrependUOffsetTRelativeSlot(3, name_string, 0)
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

