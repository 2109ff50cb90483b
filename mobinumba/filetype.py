"""Name what a file is from its first bytes and structure, for error messages.

    identify("model.h5")     -> KERAS_H5         (an HDF5 file with Keras's root attributes)
    identify("model.tflite") -> TFLITE           (a flatbuffer with file identifier TFL3)
    identify("notes.txt")    -> None             (nothing recognised)

Recognised: HDF5 (at byte 0 or after a user block of 512, 1024, 2048, ... bytes) and among
HDF5 files a mobinumba weight file, a Keras model or Keras weights; a Keras v3 `.keras` zip;
TensorFlow Lite; ONNX; a TensorFlow GraphDef; safetensors; a torch.save zip; a pickle (a
legacy torch.save file by its magic number). Nothing is ever unpickled, and nothing is
imported but h5py (for a file with an HDF5 signature), which mobinumba needs anyway.

identify() never raises: a file it cannot read, or whose structure is damaged, is simply not
recognised (or recognised only as far as its header goes). The callers keep their own
messages for files nothing here recognises.
"""
import os
import pickle
import re
import shlex
import struct
import zipfile
from dataclasses import dataclass

from .errors import FormatError


@dataclass(frozen=True)
class FileType:
    """A kind of file: `description` completes "this is ...", `name` is for programs."""

    name: str
    description: str
    convertible: bool  # whether `mobinumba convert` reads this kind


MOBINUMBA = FileType("mobinumba", "a mobinumba weight file", False)
KERAS_H5 = FileType("keras_h5", "a Keras HDF5 model", True)
KERAS_WEIGHTS = FileType("keras_weights", "a Keras HDF5 weights file (save_weights)", False)
KERAS_V3 = FileType("keras_v3", "a Keras v3 model archive (.keras)", True)
HDF5 = FileType("hdf5", "an HDF5 file", False)
TFLITE = FileType("tflite", "a TensorFlow Lite model", True)
ONNX = FileType("onnx", "an ONNX model", False)
GRAPHDEF = FileType("graphdef", "a TensorFlow GraphDef", True)
SAFETENSORS = FileType("safetensors", "a safetensors checkpoint", True)
TORCH_ZIP = FileType("torch_zip", "a PyTorch checkpoint", True)
TORCH_LEGACY = FileType("torch_legacy", "a PyTorch checkpoint (legacy torch.save format)",
                        True)
PICKLE = FileType("pickle", "a Python pickle (a torch.save checkpoint?)", True)

# Bytes read for everything but the HDF5 superblock search and the ONNX field walk.
HEAD_BYTES = 64
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
TFLITE_IDENTIFIER = b"TFL3"  # a flatbuffer's file identifier sits at bytes 4..8
# torch.save's legacy format starts with this number pickled at protocol 2 (torch's
# serialization.MAGIC_NUMBER); dumping an int is safe, and nothing is ever loaded.
TORCH_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
PICKLE_PROTOCOLS = range(2, 6)  # protocol 2+ pickles start with b"\x80" and the protocol
SAFETENSORS_MAX_HEADER = 100 * 2 ** 20  # the safetensors library's own limit
# ONNX ModelProto fields (number -> protobuf wire type; 0 varint, 2 length-delimited):
# ir_version, producer_name, producer_version, domain, model_version, doc_string, graph,
# opset_import, metadata_props, training_info, functions.
ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 21: 2}
ONNX_REPEATED = {8, 14, 20, 21}
ONNX_MAX_IR_VERSION = 64  # 11 in 2025; a larger first varint is not an ir_version
ONNX_MAX_FIELDS = 16  # onnx writes fields in order: the graph comes within the first 8
PROTOBUF_NAME = re.compile(rb"[A-Za-z0-9_./\-:>]+")  # a TF node name (printable, no spaces)
PROTOBUF_OP = re.compile(rb"[A-Za-z][A-Za-z0-9_]*")  # a TF op type ("Conv2D", "Const")
GRAPH_SUFFIX = ".pb"


def identify(path):
    """The FileType of the file at `path`, or None when nothing here recognises it."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            head = stream.read(HEAD_BYTES)
            if _hdf5_offset(stream, size) is not None:
                return _hdf5_type(path)
            return _by_header(path, stream, head, size)
    except OSError:  # unreadable, a directory, ...: the caller says so in its own words
        return None


def _by_header(path, stream, head, size):
    if head.startswith(ZIP_SIGNATURES):
        return _zip_type(path)
    if head[4:8] == TFLITE_IDENTIFIER and 8 <= _uint32(head, 0) < size:
        return TFLITE
    if _is_safetensors(head, size):
        return SAFETENSORS
    if head.startswith(TORCH_LEGACY_MAGIC):
        return TORCH_LEGACY
    if len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS:
        return PICKLE
    if _is_onnx(stream, size):
        return ONNX
    if _starts_like_graphdef(head) or (path.lower().endswith(GRAPH_SUFFIX)
                                       and head[:1] == b"\x0a"):
        return GRAPHDEF
    return None


# ------------------------------------------------------------------------------------ HDF5

def _hdf5_offset(stream, size):
    """Where the HDF5 superblock starts (0, 512, 1024, 2048, ...), or None."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
        stream.seek(offset)
        if stream.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _hdf5_type(path):
    """MOBINUMBA, KERAS_H5, KERAS_WEIGHTS or HDF5, from the root attributes and groups."""
    import h5py

    from .hdf5_guard import check_global_heaps

    try:
        check_global_heaps(path)  # a heap that would hang libhdf5: do not open the file
        with h5py.File(path, "r", locking=False) as h5:
            names = set(h5.attrs.keys())
            if "format" in names and _text(h5.attrs["format"]) == "mobinumba":
                return MOBINUMBA
            if "model_config" in names or "model_weights" in h5:
                return KERAS_H5
            # Keras 2's save_weights: root attributes; Keras 3's (.weights.h5): the groups
            # `layers` and `vars` of keras/src/saving/saving_lib.py, no attributes.
            if "keras_version" in names or "layer_names" in names or (
                    "layers" in h5 and "vars" in h5 and "format" not in names):
                return KERAS_WEIGHTS
    # What h5py raises for a damaged file (as weights.py lists), and the heap check's refusal.
    except (FormatError, OSError, KeyError, ValueError, TypeError, RuntimeError, UnicodeError,
            OverflowError):
        pass
    return HDF5


def _text(value):
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


# ------------------------------------------------------------------------------------- zip

def _zip_type(path):
    """KERAS_V3 or TORCH_ZIP from the archive's member names, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    # What zipfile raises for a damaged or truncated central directory.
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, IndexError,
            KeyError, OverflowError, NotImplementedError, UnicodeDecodeError):
        return None
    # Keras writes metadata.json, config.json and model.weights.h5: two of them say Keras,
    # so that one missing is reported by the Keras reader, not as a damaged PyTorch file.
    if len({"metadata.json", "config.json", "model.weights.h5"} & set(names)) >= 2 \
            or names == ["model.weights.h5"]:
        return KERAS_V3
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return TORCH_ZIP
    return None


# ------------------------------------------------------------------------------ flat bytes

def _uint32(data, offset):
    return struct.unpack_from("<I", data, offset)[0] if len(data) >= offset + 4 else -1


def _is_safetensors(head, size):
    """8-byte little-endian header length, then a JSON object that fits in the file."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack_from("<Q", head, 0)
    return 2 <= length <= min(size - 8, SAFETENSORS_MAX_HEADER)


def _starts_like_graphdef(head):
    """A GraphDef's first field is its first NodeDef (field 1), whose first two fields are
    the node's name (field 1) and op (field 2): 0a LEN 0a LEN name 12 LEN op."""
    node = _field(head, 0, 1, 2)
    if node is None:
        return False
    name = _field(head, node[0], 1, 2)
    if name is None or not PROTOBUF_NAME.fullmatch(head[name[0]:name[1]]):
        return False
    op = _field(head, name[1], 2, 2, partial=True)
    return op is not None and PROTOBUF_OP.fullmatch(head[op[0]:op[1]]) is not None


def _field(data, position, number, wire_type, partial=False):
    """(start, end) of the length-delimited field `number` at `position` in `data`, or None.
    With partial, the field may run past the end of `data` (then end is len(data))."""
    tag = _varint(data, position)
    if tag is None or tag[0] != (number << 3 | wire_type):
        return None
    length = _varint(data, tag[1])
    if length is None or length[0] == 0:
        return None
    start, end = length[1], length[1] + length[0]
    if end > len(data):
        if not partial:
            return None
        end = len(data)
    return start, end


def _varint(data, position, max_bytes=10):
    """(value, next position) of the protobuf varint at `position`, or None."""
    value = 0
    for index in range(max_bytes):
        if position + index >= len(data):
            return None
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value, position + index + 1
    return None


# ------------------------------------------------------------------------------------ ONNX

def _is_onnx(stream, size):
    """Conservatively: a ModelProto as onnx.save writes it. ir_version (field 1) first, then
    only ModelProto's own fields with their wire types, in increasing order (repeated ones
    may repeat), every length within the file, until the graph or an opset import."""
    position = 0
    previous = 0
    for _ in range(ONNX_MAX_FIELDS):
        stream.seek(position)
        chunk = stream.read(20)  # a tag and a varint fit in 20 bytes
        tag = _varint(chunk, 0)
        if tag is None:
            return False
        number, wire_type = tag[0] >> 3, tag[0] & 7
        if ONNX_FIELDS.get(number) != wire_type or number < previous or (
                number == previous and number not in ONNX_REPEATED):
            return False
        if (position == 0) != (number == 1):
            return False
        value = _varint(chunk, tag[1])
        if value is None:
            return False
        if number == 1 and not 1 <= value[0] <= ONNX_MAX_IR_VERSION:
            return False
        end = position + value[1]
        if wire_type == 2:
            end += value[0]
        if end > size:
            return False
        if number in (7, 8):
            return True
        previous, position = number, end
        if position == size:
            return False
    return False


# -------------------------------------------------------------------------------- messages

def convert_command(path):
    """The `mobinumba convert` command line that turns `path` into a weight file."""
    stem = path
    for suffix in (".tar", ".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".pb", ".tflite",
                   ".pkl", ".h5", ".keras"):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[:-len(suffix)]
    output = stem + ".h5" if stem + ".h5" != path else stem + ".mobinumba.h5"
    return f"mobinumba convert {shlex.quote(path)} -o {shlex.quote(output)}"


def not_a_weight_file(path, filetype):
    """The message for a file of `filetype` given where a mobinumba weight file belongs."""
    if filetype.convertible:
        return (f"{path}: this is {filetype.description}, not a mobinumba weight file; "
                f"convert it first: {convert_command(path)}")
    return (f"{path}: this is {filetype.description}, not a mobinumba weight file; mobinumba "
            f"reads only its own .h5 files, made by `mobinumba convert` from PyTorch "
            f"checkpoints (.pth/.safetensors), TF-slim frozen graphs (.pb), Keras models "
            f"(.h5/.keras) or TensorFlow Lite models (.tflite){_not_yet(filetype)}")


def not_a_checkpoint(path, filetype):
    """The message for a file of a kind `mobinumba convert` does not read."""
    if filetype is MOBINUMBA:
        return (f"{path}: is already a mobinumba weight file; use it as it is "
                f"(mobinumba predict --weights {shlex.quote(path)} ...)")
    return (f"{path}: this is {filetype.description}; mobinumba convert reads PyTorch "
            f"checkpoints (.pth/.safetensors), TF-slim frozen graphs (.pb), Keras models "
            f"(.h5/.keras) and TensorFlow Lite models (.tflite){_not_yet(filetype)}")


def _not_yet(filetype):
    if filetype is KERAS_WEIGHTS:
        return ("; Keras weights alone lack the model's config: save the whole model "
                "(model.save('model.keras')) and convert that")
    family = {ONNX: "ONNX"}.get(filetype)
    return f"; {family} files are not supported yet" if family else ""
