"""Read a frozen TensorFlow GraphDef (`.pb`) without TensorFlow or protobuf.

A frozen graph is one protobuf message, GraphDef, whose nodes hold the trained variables as
`Const` ops. This module decodes just the part of the protobuf wire format and of TensorFlow's
schema (tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto) that
a reader of constants needs:

    GraphDef     node = 1 (NodeDef, repeated)
    NodeDef      name = 1, op = 2, input = 3 (repeated), attr = 5 (map<string, AttrValue>)
    AttrValue    s = 2, i = 3, f = 4, b = 5, type = 6, tensor = 8
    TensorProto  dtype = 1, tensor_shape = 2, tensor_content = 4, float_val = 5,
                 double_val = 6, int_val = 7, int64_val = 10, half_val = 13
    TensorShapeProto  dim = 2 (Dim: size = 1)

Every other field is skipped by its wire type, as protobuf readers do. A byte sequence that
is not a well-formed message (truncated, a varint running past the end, an impossible wire
type) raises GraphDefError with the byte offset, so a wrong or damaged file fails with one
line instead of a traceback.
"""
import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import CheckpointError, check_regular_file

# Wire types of the protobuf encoding.
VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = range(6)

# TensorFlow DataType enum values this reader decodes, and their little-endian numpy dtypes.
NUMPY_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 9: "<i8", 19: "<f2"}
# The TensorProto field listing each of those dtypes' values when tensor_content is absent.
VALUE_FIELDS = {1: 5, 2: 6, 3: 7, 9: 10, 19: 13}

# A graph file larger than this is not a MobileNet (the 1.0 model is 17 MB in float32).
MAX_GRAPH_BYTES = 2 ** 31
# Nor is a constant of more elements than this (filled constants can claim any shape).
MAX_TENSOR_ELEMENTS = 2 ** 28


class GraphDefError(CheckpointError):
    """The bytes are not a well-formed GraphDef."""


@dataclass
class Node:
    """One NodeDef: its name, op type, inputs and decoded attributes.

    attrs maps an attribute name to a Python value: str (s), int (i, type), float (f),
    bool (b), or a numpy array (tensor). Attributes of other kinds (lists, shapes,
    functions) are left out.
    """

    name: str
    op: str
    inputs: list = field(default_factory=list)
    attrs: dict = field(default_factory=dict)


def read_graphdef(path):
    """The nodes of the GraphDef in the file `path`, in file order.

    Raises CheckpointError naming the file when it is missing, unreadable, not a GraphDef,
    or a GraphDef without nodes.
    """
    path = os.fspath(path)
    check_regular_file(path, CheckpointError, "a GraphDef")
    if os.path.getsize(path) > MAX_GRAPH_BYTES:
        raise CheckpointError(f"{path}: {os.path.getsize(path)} bytes, too large for a "
                              f"MobileNet GraphDef")
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        nodes = parse_graphdef(data)
    except GraphDefError as error:
        raise CheckpointError(f"{path}: not a readable TensorFlow GraphDef ({error})") from None
    if not nodes:
        raise CheckpointError(f"{path}: not a TensorFlow GraphDef (no nodes)")
    return nodes


def parse_graphdef(data):
    """[Node] of a serialized GraphDef; raises GraphDefError for malformed bytes."""
    view = memoryview(data)
    nodes = []
    for number, wire, value in _fields(view, 0, len(view)):
        if number == 1:
            _expect(wire, LENGTH_DELIMITED, "GraphDef.node")
            nodes.append(_parse_node(view, *value))
    return nodes


def constants(nodes):
    """{name: ndarray} of every `Const` node whose tensor this reader can decode."""
    found = {}
    for node in nodes:
        value = node.attrs.get("value")
        if node.op == "Const" and isinstance(value, np.ndarray):
            found[node.name] = value
    return found


# ------------------------------------------------------------------------- the wire format

def _varint(view, offset, end):
    """(value, next offset) of the base-128 varint at offset."""
    result = 0
    shift = 0
    while True:
        if offset >= end:
            raise GraphDefError(f"truncated varint at byte {offset}")
        byte = view[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, offset
        shift += 7
        if shift >= 70:
            raise GraphDefError(f"varint longer than 10 bytes at byte {offset}")


def _fields(view, start, end):
    """Yield (field number, wire type, value) of the message in view[start:end].

    value is an int for VARINT, FIXED64 and FIXED32 (the raw bits), and the (start, end)
    byte range of the payload for LENGTH_DELIMITED. Groups (deprecated) are refused.
    """
    offset = start
    while offset < end:
        key_offset = offset
        key, offset = _varint(view, offset, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise GraphDefError(f"field number 0 at byte {key_offset}")
        if wire == VARINT:
            value, offset = _varint(view, offset, end)
        elif wire == FIXED64 or wire == FIXED32:
            size = 8 if wire == FIXED64 else 4
            if offset + size > end:
                raise GraphDefError(f"truncated fixed-size field at byte {offset}")
            value = int.from_bytes(view[offset:offset + size], "little")
            offset += size
        elif wire == LENGTH_DELIMITED:
            length, offset = _varint(view, offset, end)
            if offset + length > end:
                raise GraphDefError(f"field {number} at byte {key_offset} claims {length} "
                                    f"bytes, past the end of its message at byte {end}")
            value = (offset, offset + length)
            offset += length
        else:
            raise GraphDefError(f"unsupported wire type {wire} at byte {key_offset}")
        yield number, wire, value


def _expect(wire, expected, what):
    if wire != expected:
        raise GraphDefError(f"{what} has wire type {wire}, expected {expected}")


def _text(view, span, what):
    try:
        return bytes(view[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise GraphDefError(f"{what} at byte {span[0]} is not UTF-8") from None


# ------------------------------------------------------------------------ TensorFlow schema

def _parse_node(view, start, end):
    node = Node(name="", op="")
    for number, wire, value in _fields(view, start, end):
        if number in (1, 2, 3):
            _expect(wire, LENGTH_DELIMITED, "NodeDef string")
            text = _text(view, value, "NodeDef string")
            if number == 1:
                node.name = text
            elif number == 2:
                node.op = text
            else:
                node.inputs.append(text)
        elif number == 5:
            _expect(wire, LENGTH_DELIMITED, "NodeDef.attr")
            name, attr = _parse_attr_entry(view, *value)
            if attr is not None:
                node.attrs[name] = attr
    return node


def _parse_attr_entry(view, start, end):
    """(key, decoded AttrValue or None) of one map<string, AttrValue> entry."""
    key, attr = "", None
    for number, wire, value in _fields(view, start, end):
        if number == 1:
            _expect(wire, LENGTH_DELIMITED, "attr key")
            key = _text(view, value, "attr key")
        elif number == 2:
            _expect(wire, LENGTH_DELIMITED, "AttrValue")
            attr = _parse_attr_value(view, *value)
    return key, attr


def _parse_attr_value(view, start, end):
    result = None
    for number, wire, value in _fields(view, start, end):
        if number == 2 and wire == LENGTH_DELIMITED:
            result = bytes(view[value[0]:value[1]]).decode("utf-8", "replace")
        elif number == 3 and wire == VARINT:
            result = _signed64(value)
        elif number == 4 and wire == FIXED32:
            result = struct.unpack("<f", value.to_bytes(4, "little"))[0]
        elif number in (5, 6) and wire == VARINT:
            result = bool(value) if number == 5 else value
        elif number == 8 and wire == LENGTH_DELIMITED:
            result = _parse_tensor(view, *value)
    return result


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_tensor(view, start, end):
    """A numpy array for a TensorProto of a numeric dtype this reader knows, else None."""
    dtype, shape, content = 0, (), None
    values = {}  # field number -> list of numbers (the repeated *_val fields)
    for number, wire, value in _fields(view, start, end):
        if number == 1:
            _expect(wire, VARINT, "TensorProto.dtype")
            dtype = value
        elif number == 2:
            _expect(wire, LENGTH_DELIMITED, "TensorProto.tensor_shape")
            shape = _parse_shape(view, *value)
        elif number == 4:
            _expect(wire, LENGTH_DELIMITED, "TensorProto.tensor_content")
            content = view[value[0]:value[1]]
        elif number in (5, 6, 7, 10, 13):
            values.setdefault(number, []).extend(_repeated(view, number, wire, value))
    if dtype not in NUMPY_DTYPES:
        return None
    numpy_dtype = np.dtype(NUMPY_DTYPES[dtype])
    size = math.prod(shape)
    if size > MAX_TENSOR_ELEMENTS:
        raise GraphDefError(f"tensor at byte {start} has shape {shape}, more than "
                            f"{MAX_TENSOR_ELEMENTS} elements")
    if content is not None:
        if len(content) != size * numpy_dtype.itemsize:
            raise GraphDefError(f"tensor_content at byte {start} holds {len(content)} bytes, "
                                f"but a {numpy_dtype.name} tensor of shape {shape} needs "
                                f"{size * numpy_dtype.itemsize}")
        return np.frombuffer(content, dtype=numpy_dtype).reshape(shape).copy()
    listed = values.get(VALUE_FIELDS[dtype], [])
    if len(listed) > size:
        raise GraphDefError(f"tensor at byte {start} lists {len(listed)} values for shape "
                            f"{shape}")
    try:
        if dtype == 19:  # half_val carries the float16 bit patterns as int32
            array = np.asarray(listed, dtype=np.uint16).view(np.float16)
        else:
            array = np.asarray(listed, dtype=numpy_dtype)
    except OverflowError:
        raise GraphDefError(f"tensor at byte {start} lists a value out of range for "
                            f"{numpy_dtype.name}") from None
    # TensorFlow repeats the last listed value to fill the shape (all zeros when none).
    full = np.zeros(size, dtype=numpy_dtype)
    full[:len(array)] = array
    if 0 < len(array) < size:
        full[len(array):] = array[-1]
    return full.reshape(shape)


def _repeated(view, number, wire, value):
    """The numbers of one occurrence of a repeated scalar field, packed or not."""
    fixed = {5: ("<f4", FIXED32), 6: ("<f8", FIXED64)}
    if number in fixed:
        dtype, element_wire = fixed[number]
        if wire == LENGTH_DELIMITED:
            payload = view[value[0]:value[1]]
            if len(payload) % np.dtype(dtype).itemsize:
                raise GraphDefError(f"packed field {number} at byte {value[0]} has "
                                    f"{len(payload)} bytes")
            return np.frombuffer(payload, dtype=dtype).tolist()
        _expect(wire, element_wire, f"TensorProto field {number}")
        size = np.dtype(dtype).itemsize
        return np.frombuffer(value.to_bytes(size, "little"), dtype=dtype).tolist()
    if wire == LENGTH_DELIMITED:
        numbers = []
        offset, end = value
        while offset < end:
            item, offset = _varint(view, offset, end)
            numbers.append(item)
    else:
        _expect(wire, VARINT, f"TensorProto field {number}")
        numbers = [value]
    return [_signed64(n) for n in numbers] if number in (7, 10) else numbers


def _parse_shape(view, start, end):
    dims = []
    for number, wire, value in _fields(view, start, end):
        if number == 2:
            _expect(wire, LENGTH_DELIMITED, "TensorShapeProto.dim")
            size = 0
            for dim_number, dim_wire, dim_value in _fields(view, *value):
                if dim_number == 1:
                    _expect(dim_wire, VARINT, "Dim.size")
                    size = _signed64(dim_value)
            if size < 0 or size > 2 ** 31:
                raise GraphDefError(f"tensor dimension {size} at byte {value[0]}")
            dims.append(size)
        elif number == 3 and wire == VARINT and value:
            raise GraphDefError(f"constant of unknown rank at byte {start}")
    return tuple(dims)
