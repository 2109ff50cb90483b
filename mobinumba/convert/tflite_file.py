"""TensorFlow Lite model files (`.tflite`): the schema subset MobileNetV1 needs, read strictly.

A `.tflite` file is a FlatBuffer of TensorFlow Lite's schema
(tensorflow/compiler/mlir/lite/schema/schema.fbs). read_tflite parses its one subgraph into
plain Python objects: tensors (shape, type, quantization, constant data) and operators
(builtin code, inputs, outputs, options), checking every index, shape and buffer size, so
that what it returns can be trusted by the layout code in tflite.py. Field numbers below are
the schema's field ids.
"""
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import CheckpointError, check_regular_file
from .flatbuffer import FlatBufferError, root_table

# A MobileNetV1 has ~35 operators and ~100 tensors; these bound what a hostile file can make
# the reader build before the graph is checked. Files over 2 GiB cannot be FlatBuffers.
MAX_OPERATORS = 4096
MAX_TENSORS = 16384
MAX_BUFFERS = 16384
MAX_OPERATOR_CODES = 1024
MAX_SUBGRAPHS = 64
MAX_RANK = 8
MAX_FILE_BYTES = 2 ** 31

# BuiltinOperator codes (schema.fbs), and names for messages about other networks.
OP_NAMES = {0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D",
            4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 14: "LOGISTIC",
            17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 21: "RELU6", 22: "RESHAPE",
            23: "RESIZE_BILINEAR", 25: "SOFTMAX", 28: "TANH", 34: "PAD", 36: "GATHER",
            39: "TRANSPOSE", 40: "MEAN", 41: "SUB", 43: "SQUEEZE", 45: "STRIDED_SLICE",
            49: "SPLIT", 53: "CAST", 54: "PRELU", 55: "MAXIMUM", 57: "MINIMUM", 60: "PADV2",
            65: "SLICE", 67: "TRANSPOSE_CONV", 70: "EXPAND_DIMS", 77: "SHAPE", 83: "PACK",
            98: "LEAKY_RELU", 114: "QUANTIZE", 117: "HARD_SWISH", 126: "BATCH_MATMUL"}
CODES = {name: code for code, name in OP_NAMES.items()}
CUSTOM = 32  # BuiltinOperator.CUSTOM: the op is named by custom_code

# TensorType -> NumPy dtype, for the types a MobileNetV1 file holds.
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8,
          7: np.int16}
TYPE_NAMES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
              6: "bool", 7: "int16", 9: "int8", 10: "float64", 17: "int4", 18: "bfloat16"}

# ActivationFunctionType and Padding enums.
ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
PADDINGS = {0: "SAME", 1: "VALID"}

# Options tables: BuiltinOptions type -> (name, {field id: (option, scalar kind, default)}).
OPTIONS = {
    1: ("Conv2DOptions", {0: ("padding", "i8", 0), 1: ("stride_w", "i32", 0),
                          2: ("stride_h", "i32", 0), 3: ("activation", "i8", 0),
                          4: ("dilation_w", "i32", 1), 5: ("dilation_h", "i32", 1)}),
    2: ("DepthwiseConv2DOptions", {0: ("padding", "i8", 0), 1: ("stride_w", "i32", 0),
                                   2: ("stride_h", "i32", 0), 3: ("depth_multiplier", "i32", 0),
                                   4: ("activation", "i8", 0), 5: ("dilation_w", "i32", 1),
                                   6: ("dilation_h", "i32", 1)}),
    5: ("Pool2DOptions", {0: ("padding", "i8", 0), 1: ("stride_w", "i32", 0),
                          2: ("stride_h", "i32", 0), 3: ("filter_width", "i32", 0),
                          4: ("filter_height", "i32", 0), 5: ("activation", "i8", 0)}),
    8: ("FullyConnectedOptions", {0: ("activation", "i8", 0), 1: ("weights_format", "i8", 0),
                                  2: ("keep_num_dims", "bool", False)}),
    9: ("SoftmaxOptions", {0: ("beta", "f32", 0.0)}),
    27: ("ReducerOptions", {0: ("keep_dims", "bool", False)}),
}


@dataclass
class Quantization:
    """A tensor's quantization: real = scale * (q - zero_point), per tensor or per channel
    along `axis` (scale and zero_point then have one entry per channel)."""

    scale: np.ndarray       # (1,) or (channels,) float32
    zero_point: np.ndarray  # same length, int64
    axis: int


@dataclass
class Tensor:
    """One tensor of the subgraph; `data` is its constant value (None for activations)."""

    index: int
    name: str
    shape: tuple
    type: int
    quantization: Quantization | None
    data: np.ndarray | None

    @property
    def type_name(self):
        """The tensor type's name ('float32', 'int8', ...)."""
        return TYPE_NAMES.get(self.type, f"type {self.type}")


@dataclass
class Operator:
    """One operator: its name ('CONV_2D', or 'op 123' / 'custom Foo'), tensor indices
    (-1 = an optional input left out) and options by name."""

    index: int
    name: str
    inputs: tuple
    outputs: tuple
    options: dict = field(default_factory=dict)


@dataclass
class TfliteGraph:
    """The one subgraph of a `.tflite` file: tensors, operators in execution order, and the
    indices of the graph's inputs and outputs."""

    tensors: list
    operators: list
    inputs: tuple
    outputs: tuple
    description: str = ""


def read_tflite(path):
    """The TfliteGraph of the `.tflite` file at `path`; CheckpointError naming the problem."""
    check_regular_file(path, CheckpointError, "a TensorFlow Lite model")
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: {size} bytes is larger than a TensorFlow Lite file "
                              f"can be (2 GiB)")
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return parse_tflite(data)
    except (FlatBufferError, TfliteError) as error:
        raise CheckpointError(f"{path}: not a valid TensorFlow Lite model: {error}") from None


class TfliteError(ValueError):
    """The FlatBuffer is well formed but its contents break the TFLite schema's rules."""


def parse_tflite(data):
    """The TfliteGraph of the bytes `data` (TfliteError / FlatBufferError when malformed)."""
    if data[4:8] != b"TFL3":
        raise TfliteError("no TFL3 file identifier at bytes 4..8")
    model = root_table(data, "model")
    version = model.scalar(0, "u32")
    if version != 3:
        raise TfliteError(f"schema version {version}; mobinumba reads version 3")
    codes = [_operator_name(code) for code in
             model.tables(1, "operator code", MAX_OPERATOR_CODES)]
    subgraphs = model.tables(2, "subgraph", MAX_SUBGRAPHS)
    if len(subgraphs) != 1:
        raise TfliteError(f"{len(subgraphs)} subgraphs; a MobileNetV1 file has exactly one")
    buffers = model.tables(4, "buffer", MAX_BUFFERS)
    graph = subgraphs[0]
    tensors = [_tensor(index, table, buffers)
               for index, table in enumerate(graph.tables(0, "tensor", MAX_TENSORS))]
    inputs = _indices(graph.vector(1, "i32", "subgraph inputs"), len(tensors), "graph input")
    outputs = _indices(graph.vector(2, "i32", "subgraph outputs"), len(tensors), "graph output")
    operators = [_operator(index, table, codes, len(tensors))
                 for index, table in enumerate(graph.tables(3, "operator", MAX_OPERATORS))]
    return TfliteGraph(tensors=tensors, operators=operators, inputs=inputs, outputs=outputs,
                       description=model.string(3, "model description"))


def _operator_name(table):
    # schema.fbs: the builtin code is max(deprecated_builtin_code, builtin_code), because
    # files from before code 127 only fill the int8 deprecated field.
    code = max(table.scalar(0, "i8"), table.scalar(3, "i32"))
    if code == CUSTOM:
        return f"custom {table.string(1, 'custom op name')[:40]}"
    return OP_NAMES.get(code, f"op {code}")


def _indices(values, count, what, optional=False):
    for value in values:
        if not (0 <= value < count or (optional and value == -1)):
            raise TfliteError(f"{what} names tensor {value}; the subgraph has {count}")
    return tuple(int(value) for value in values)


def _tensor(index, table, buffers):
    what = f"tensor {index}"
    shape = table.vector(0, "i32", f"{what} shape")
    if len(shape) > MAX_RANK or (shape < 0).any():
        raise TfliteError(f"{what} has shape {shape.tolist()}")
    shape = tuple(int(dim) for dim in shape)
    kind = table.scalar(1, "i8")
    name = table.string(3, f"{what} name")[:200]
    quantization = _quantization(table.table(4, f"{what} quantization"), shape, what)
    buffer_index = table.scalar(2, "u32")
    if buffer_index >= len(buffers):
        raise TfliteError(f"{what} names buffer {buffer_index}; the file has {len(buffers)}")
    data = _constant(buffers[buffer_index], shape, kind, what) if buffer_index else None
    return Tensor(index=index, name=name, shape=shape, type=kind, quantization=quantization,
                  data=data)


def _quantization(table, shape, what):
    """The tensor's Quantization, or None when it has no scales."""
    if table is None:
        return None
    scale = table.vector(2, "f32", f"{what} scales").astype(np.float32)
    zero_point = table.vector(3, "i64", f"{what} zero points").astype(np.int64)
    axis = table.scalar(6, "i32")
    if len(scale) == 0:
        return None
    if len(zero_point) != len(scale):
        raise TfliteError(f"{what} has {len(scale)} scales and {len(zero_point)} zero points")
    if len(scale) > 1 and not (0 <= axis < len(shape) and shape[axis] == len(scale)):
        raise TfliteError(f"{what} has {len(scale)} scales along axis {axis} of shape "
                          f"{list(shape)}")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise TfliteError(f"{what} has a scale that is not a positive finite number")
    return Quantization(scale=scale, zero_point=zero_point, axis=axis)


def _constant(buffer, shape, kind, what):
    """The buffer's data as an array of `shape`, or None for an empty buffer."""
    if buffer.scalar(1, "u64") or buffer.scalar(2, "u64"):
        raise TfliteError(f"{what}'s data lies outside the FlatBuffer (a model over 2 GiB); "
                          f"mobinumba reads only self-contained files")
    raw = buffer.bytes(0, f"{what} data")
    if len(raw) == 0:
        return None
    if kind not in DTYPES:
        raise TfliteError(f"{what} holds {TYPE_NAMES.get(kind, f'type {kind}')} data")
    dtype = np.dtype(DTYPES[kind]).newbyteorder("<")
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise TfliteError(f"{what} has {len(raw)} bytes of data; shape {list(shape)} of "
                          f"{TYPE_NAMES[kind]} needs {expected}")
    return np.frombuffer(raw, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _operator(index, table, codes, num_tensors):
    what = f"operator {index}"
    code_index = table.scalar(0, "u32")
    if code_index >= len(codes):
        raise TfliteError(f"{what} has operator code {code_index}; the file has {len(codes)}")
    inputs = _indices(table.vector(1, "i32", f"{what} inputs"), num_tensors, f"{what}'s input",
                      optional=True)
    outputs = _indices(table.vector(2, "i32", f"{what} outputs"), num_tensors,
                       f"{what}'s output")
    options = {}
    options_type = table.scalar(3, "u8")
    if options_type in OPTIONS:
        _, fields = OPTIONS[options_type]
        options_table = table.table(4, f"{what} options")
        for field_id, (option, kind, default) in fields.items():
            options[option] = (default if options_table is None
                               else options_table.scalar(field_id, kind, default))
        options["type"] = OPTIONS[options_type][0]
    return Operator(index=index, name=codes[code_index], inputs=inputs, outputs=outputs,
                    options=options)
