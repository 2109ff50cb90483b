"""The mobinumba HDF5 weight file: write, read, validate; fold batch norm.

The file is framework-neutral and keeps the source's own tensors (OIHW convolutions, unfolded
batch-norm statistics), so the runtime's private layout can change without re-converting.
docs/format.md is the specification; this module is its only reader and writer.

Reading validates everything a kernel will later rely on (Numba runs without bounds checks):
every attribute's type and range, every dataset's dtype, rank and shape, the channel chain
between consecutive layers, and finiteness of every weight. Any violation raises FormatError
naming the file, the layer and the dataset or attribute.
"""
import contextlib
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field

import h5py
import numpy as np

from .architecture import LayerSpec
from .atomic import atomic_output
from .errors import FormatError, check_regular_file
from .filetype import HDF5, MOBINUMBA, identify, not_a_weight_file
from .hdf5_guard import check_global_heaps
from .ops import STORED_KINDS, kind_of, kinds_where
from .ops.base import ACTIVATIONS, folding_overflows
from .padding import PADDINGS
from .quantization import (INT8_MAX, INT8_MIN, INT32_MAX, INT32_MIN, POOL_OPS, PRECISIONS,
                           LayerQuantization, Quantization)

FORMAT_NAME = "mobinumba"
# The newest version this reader knows. Float32 files are still written as version 1 (an
# older reader reads them correctly); int8 files are version 2, which older readers refuse.
FORMAT_VERSION = 2
FORMAT_VERSIONS = {"float32": 1, "int8": 2}
ARCH = "mobilenet_v1"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming", "bilinear_tf")
RESIZE_MODES = ("shorter_side", "central_crop")
BN_FIELDS = ("gamma", "beta", "mean", "var")

# Refuse datasets whose declared size is absurd before reading them: no real MobileNet layer
# comes near 2**26 elements (a 1024 x 21843 ImageNet-21k classifier is 2**24.4), nor a whole
# network near 2**27 (512 MiB of float32). A few hundred bytes of HDF5 can declare a dataset
# of any size (unwritten data reads as its fill value), so these bound what a file can make
# the reader allocate.
MAX_DATASET_ELEMENTS = 2 ** 26
MAX_TOTAL_ELEMENTS = 2 ** 27
MAX_ATTRIBUTE_ELEMENTS = 16
MAX_CHANNELS = 65536
MAX_CLASSES = 1_000_000
# int8 layers: the largest |input| a kernel multiplies a weight by, twice (see _read_int8_layer).
ACCUMULATOR_INPUTS = 2 * 255
# Layer groups: a decimal execution index, an underscore, an ASCII name.
LAYER_KEY = re.compile(r"([0-9]{1,6})_([A-Za-z0-9_]+)")


@dataclass(frozen=True)
class ModelInfo:
    """The root attributes of a weight file: architecture, preprocessing and provenance."""

    width_multiplier: float
    num_classes: int
    input_size: int
    activation: str
    padding: str
    mean: tuple
    std: tuple
    crop_pct: float
    interpolation: str
    resize: str = "shorter_side"
    source_file: str = ""
    source_sha256: str = ""
    source_layout: str = ""
    converter_version: str = ""
    arch: str = ARCH
    format_version: int = FORMAT_VERSIONS["float32"]
    # "float32", or "int8": TFLite-style quantized layers (LayerRecord.quant), whose input
    # (the normalised image) is quantized with input_quantization.
    precision: str = "float32"
    input_quantization: Quantization | None = None


@dataclass(frozen=True)
class BatchNorm:
    """Unfolded batch-norm parameters of one layer, each (C,), and its epsilon."""

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float


@dataclass
class LayerRecord:
    """One weight layer as stored: PyTorch tensors, before folding and packing.

    weight: conv (Cout, Cin, 3, 3), dwconv (C, 1, 3, 3), pwconv (Cout, Cin, 1, 1),
    dense (K, C). bias: (Cout,) or None (convolutions normally have none, dense has one).
    bn: BatchNorm for convolutions, None for dense.

    In an int8 model (ModelInfo.precision "int8") the same shapes hold folded, quantized
    tensors: weight int8 (batch norm folded in, symmetric per output channel), bias int32
    (Cout,) always present (scale input_scale * weight_scale[c]), bn None, and `quant` the
    layer's LayerQuantization (weight scales, output quantization; quantization.py).
    """

    name: str
    kind: str
    stride: int
    weight: np.ndarray
    bias: np.ndarray | None = None
    bn: BatchNorm | None = None
    source_name: str = ""
    quant: LayerQuantization | None = None

    @property
    def spec(self):
        """The LayerSpec (kind, channels, stride) this record's shapes describe."""
        in_channels, out_channels = kind_of(self.kind).channels(self.weight.shape)
        return LayerSpec(self.name, self.kind, in_channels, out_channels, self.stride)


@dataclass
class ModelFile:
    """A whole weight file in memory: metadata, layers in execution order, optional labels."""

    info: ModelInfo
    layers: list
    labels: list | None = None
    path: str = field(default="", compare=False)


# --------------------------------------------------------------------------------- writing

def write_model_file(path, model, overwrite=False, verify=None):
    """Write `model` (a ModelFile) to `path` atomically (see atomic.py).

    Refuses to replace an existing file unless `overwrite`. `verify(temp_path)`, when given,
    runs on the complete temp file before it is moved into place and may raise to abandon
    the write. On any failure, including Ctrl-C and SIGTERM, nothing is left behind and
    `path` is left as it was.
    """
    with atomic_output(path, overwrite) as temp_path:
        with h5py.File(temp_path, "w") as h5:
            _write_root(h5, model.info)
            layers = h5.create_group("layers")
            for index, layer in enumerate(model.layers):
                _write_layer(layers.create_group(f"{index:02d}_{layer.name}"), layer)
            if model.labels is not None:
                h5.create_dataset("labels", data=list(model.labels),
                                  dtype=h5py.string_dtype("utf-8"))
        if verify is not None:
            verify(temp_path)


def _write_root(h5, info):
    h5.attrs["format"] = FORMAT_NAME
    h5.attrs["format_version"] = np.int64(FORMAT_VERSIONS[info.precision])
    h5.attrs["arch"] = info.arch
    h5.attrs["width_multiplier"] = float(info.width_multiplier)
    h5.attrs["num_classes"] = np.int64(info.num_classes)
    h5.attrs["input_size"] = np.int64(info.input_size)
    h5.attrs["activation"] = info.activation
    h5.attrs["padding"] = info.padding
    h5.attrs["mean"] = np.asarray(info.mean, dtype=np.float64)
    h5.attrs["std"] = np.asarray(info.std, dtype=np.float64)
    h5.attrs["crop_pct"] = float(info.crop_pct)
    h5.attrs["interpolation"] = info.interpolation
    h5.attrs["resize"] = info.resize
    h5.attrs["source_file"] = info.source_file
    h5.attrs["source_sha256"] = info.source_sha256
    h5.attrs["source_layout"] = info.source_layout
    h5.attrs["converter_version"] = info.converter_version
    if info.precision != "float32":  # float32 files keep exactly their version-1 attributes
        h5.attrs["precision"] = info.precision
        _write_quantization(h5, "input", info.input_quantization)


def _write_quantization(obj, prefix, quantization):
    obj.attrs[f"{prefix}_scale"] = np.float32(quantization.scale)
    obj.attrs[f"{prefix}_zero_point"] = np.int64(quantization.zero_point)


def _write_layer(group, layer):
    group.attrs["kind"] = layer.kind
    group.attrs["stride"] = np.int64(layer.stride)
    group.attrs["source_name"] = layer.source_name
    if layer.quant is not None:
        _write_int8_layer(group, layer)
        return
    group.create_dataset("weight", data=np.asarray(layer.weight, dtype=np.float32))
    if layer.bias is not None:
        group.create_dataset("bias", data=np.asarray(layer.bias, dtype=np.float32))
    if layer.bn is not None:
        for name in BN_FIELDS:
            group.create_dataset(name, data=np.asarray(getattr(layer.bn, name), np.float32))
        group.create_dataset("eps", data=np.float32(layer.bn.eps))


def _write_int8_layer(group, layer):
    quant = layer.quant
    group.create_dataset("weight", data=np.asarray(layer.weight, dtype=np.int8))
    group.create_dataset("bias", data=np.asarray(layer.bias, dtype=np.int32))
    group.create_dataset("weight_scale", data=np.asarray(quant.weight_scale, np.float32))
    _write_quantization(group, "output", quant.output)
    if quant.pooled is not None:
        group.attrs["pool"] = quant.pool_op
        _write_quantization(group, "pool", quant.pooled)


# --------------------------------------------------------------------------------- reading

def read_model_file(path):
    """Read and fully validate a weight file; returns a ModelFile or raises FormatError.

    Reading happens in two passes so that a hostile file cannot make the reader allocate
    much: first every attribute and every dataset's dtype, shape and storage are checked
    (the channel chain and the size limits included) without reading any weights, then the
    weights are read and checked for finiteness.
    """
    path = os.fspath(path)
    check_regular_file(path, FormatError, "a weight file")
    check_global_heaps(path)
    try:
        # No file locking: a reader changes nothing, and some read-only or network
        # filesystems refuse locks.
        h5 = h5py.File(path, "r", locking=False)
    except _H5PY_ERRORS as error:
        _refuse_other_formats(path)
        raise FormatError(f"{path}: not a readable HDF5 file ({_first_line(error)})") from None
    try:
        with h5:
            return _read(h5, path)
    except FormatError:
        _refuse_other_formats(path)  # a Keras .h5 is HDF5 but has no 'format' attribute
        raise
    except _H5PY_ERRORS as error:
        # Every access below is wrapped in _reading(), which names the object; this is the
        # last resort for an error h5py raises outside those (closing the file, ...).
        raise FormatError(f"{path}: corrupt HDF5 file ({_first_line(error)})") from None


def _refuse_other_formats(path):
    """Raise FormatError saying what the file is when it is a known other format (a
    checkpoint to convert first, a Keras, TFLite or ONNX model); return if it is not."""
    filetype = identify(path)
    if filetype is not None and filetype not in (MOBINUMBA, HDF5):
        raise FormatError(not_a_weight_file(path, filetype)) from None


# What h5py raises for a corrupt file: OSError from the HDF5 library (bad B-tree, truncated
# data, ...), and KeyError / ValueError / TypeError / RuntimeError / UnicodeError from its
# conversion of damaged types and strings.
_H5PY_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, UnicodeError,
                OverflowError)


@contextlib.contextmanager
def _reading(what):
    """Turn an h5py error while reading `what` (a name in the file) into a FormatError."""
    try:
        yield
    except FormatError:
        raise
    except _H5PY_ERRORS as error:
        raise FormatError(f"{what}: unreadable, the file is corrupt "
                          f"({_first_line(error)})") from None


@dataclass
class _LayerHeader:
    """A layer group after the first pass: attributes read, datasets checked, no weights."""

    name: str
    kind: str
    stride: int
    source_name: str
    where: str  # "<path>: layers/NN_name", the prefix of every message about this layer
    datasets: dict  # dataset name -> h5py.Dataset, dtype, shape and storage checked
    quantizations: dict | None = None  # int8 only: output, pooled, pool_op (read, checked)

    @property
    def weight_shape(self):
        return self.datasets["weight"].shape

    @property
    def spec(self):
        in_channels, out_channels = kind_of(self.kind).channels(self.weight_shape)
        return LayerSpec(self.name, self.kind, in_channels, out_channels, self.stride)


def _read(h5, path):
    where = f"{path}"
    fmt = _str_attr(h5, "format", where)
    if fmt != FORMAT_NAME:
        raise FormatError(f"{where}: attribute 'format' is {fmt!r}, expected {FORMAT_NAME!r}")
    version = _int_attr(h5, "format_version", where, 1, 10 ** 6)
    if version > FORMAT_VERSION:
        raise FormatError(f"{where}: format_version {version} is newer than this mobinumba "
                          f"supports ({FORMAT_VERSION}); upgrade mobinumba")
    precision = _choice_attr(h5, "precision", PRECISIONS, where, default="float32")
    if version < FORMAT_VERSIONS[precision]:
        raise FormatError(f"{where}: precision {precision!r} needs format_version "
                          f"{FORMAT_VERSIONS[precision]}, the file says {version}")
    input_quantization = (_quantization_attrs(h5, "input", where)
                          if precision == "int8" else None)
    info = ModelInfo(
        arch=_choice_attr(h5, "arch", (ARCH,), where),
        format_version=version,
        width_multiplier=_float_attr(h5, "width_multiplier", where, 0.0, 100.0),
        num_classes=_int_attr(h5, "num_classes", where, 1, MAX_CLASSES),
        input_size=_int_attr(h5, "input_size", where, 1, 8192),
        activation=_choice_attr(h5, "activation", ACTIVATIONS, where),
        padding=_choice_attr(h5, "padding", PADDINGS, where),
        mean=_triple_attr(h5, "mean", where, positive=False),
        std=_triple_attr(h5, "std", where, positive=True),
        crop_pct=_float_attr(h5, "crop_pct", where, 0.0, 1.0),
        interpolation=_choice_attr(h5, "interpolation", INTERPOLATIONS, where),
        resize=_choice_attr(h5, "resize", RESIZE_MODES, where, default="shorter_side"),
        source_file=_str_attr(h5, "source_file", where),
        source_sha256=_str_attr(h5, "source_sha256", where),
        source_layout=_str_attr(h5, "source_layout", where),
        converter_version=_str_attr(h5, "converter_version", where),
        precision=precision,
        input_quantization=input_quantization,
    )
    headers = _read_layer_headers(h5, where, precision)
    _check_chain(headers, info, where)
    _check_total_size(headers, where)
    labels = _read_labels(h5, info.num_classes, where)
    layers = [_read_layer(header) for header in headers]
    if precision == "int8":
        _check_average_pool(layers, where)
    return ModelFile(info=info, layers=layers, labels=labels, path=path)


def _read_layer_headers(h5, where, precision):
    group = _member(h5, "layers", where, h5py.Group)
    with _reading(f"{where}: layers"):
        keys = list(group.keys())
    if not keys:
        raise FormatError(f"{where}: group 'layers' is empty")
    ordered = {}
    for key in keys:
        if not isinstance(key, str):  # h5py gives names that are not UTF-8 as bytes
            raise FormatError(f"{where}: layers: a layer group's name {key!r} is not valid "
                              f"UTF-8")
        match = LAYER_KEY.fullmatch(key)
        if match is None:
            raise FormatError(f"{where}: layer group {key!r} is not named 'NN_name'")
        ordered[int(match[1])] = (key, match[2])
    if sorted(ordered) != list(range(len(keys))):
        raise FormatError(f"{where}: layer indices {sorted(ordered)} are not "
                          f"0..{len(keys) - 1}")
    headers = []
    for index in range(len(keys)):
        key, name = ordered[index]
        layer_group = _member(group, key, f"{where}: layers", h5py.Group)  # "file: layers/k"
        headers.append(_read_layer_header(layer_group, name, f"{where}: layers/{key}",
                                          precision))
    return headers


def _read_layer_header(group, name, where, precision):
    kind_name = _choice_attr(group, "kind", STORED_KINDS, where)
    kind = kind_of(kind_name)
    stride = _int_attr(group, "stride", where, 1, 2)
    source_name = _str_attr(group, "source_name", where, required=False)
    int8 = precision == "int8"
    weight = (_dataset(group, "weight", where, "i1", "int8") if int8
              else _float_dataset(group, "weight", where))
    shape = weight.shape
    if len(shape) != kind.weight_rank:
        raise FormatError(f"{where}/weight: rank {len(shape)} (shape {shape}), "
                          f"expected {kind.weight_rank} for a {kind_name} layer")
    if any(dim < 1 for dim in shape) or shape[0] > MAX_CLASSES:
        raise FormatError(f"{where}/weight: invalid shape {shape}")
    problem = kind.weight_problem(shape)
    if problem is None and len(shape) == 4 and max(shape[:2]) > MAX_CHANNELS:
        problem = f"shape {shape} exceeds {MAX_CHANNELS} channels"
    if problem is not None:
        raise FormatError(f"{where}/weight: {problem}")
    if stride not in kind.strides:  # e.g. the runner has no strided 1x1 op
        raise FormatError(f"{where}: attribute 'stride' is {stride}, a {kind_name} layer has "
                          f"{' or '.join(map(str, kind.strides))}")
    _, out_channels = kind.channels(shape)
    datasets = {"weight": weight}
    if int8:
        return _read_int8_layer_header(group, name, kind, stride, source_name, where,
                                       datasets, out_channels)
    if kind.bias_required or _has_member(group, "bias", where):
        datasets["bias"] = _float_dataset(group, "bias", where, shape=(out_channels,))
    if kind.has_bn:
        for field_name in BN_FIELDS:
            datasets[field_name] = _float_dataset(group, field_name, where,
                                                  shape=(out_channels,))
        datasets["eps"] = _float_dataset(group, "eps", where, shape=())
    return _LayerHeader(name=name, kind=kind_name, stride=stride, source_name=source_name,
                        where=where, datasets=datasets)


def _read_int8_layer_header(group, name, kind, stride, source_name, where, datasets,
                            out_channels):
    """The rest of an int8 layer's header: int32 bias, float weight scales, the output
    quantization (and the pooled features' for the classifier); no batch norm."""
    for field_name in (*BN_FIELDS, "eps"):
        if _has_member(group, field_name, where):
            raise FormatError(f"{where}/{field_name}: an int8 layer has its batch norm folded "
                              f"into weight and bias; remove the batch-norm datasets")
    datasets["bias"] = _dataset(group, "bias", where, "i", "integer",
                                shape=(out_channels,))
    datasets["weight_scale"] = _float_dataset(group, "weight_scale", where,
                                              shape=(out_channels,))
    quantizations = {"output": _quantization_attrs(group, "output", where)}
    if kind.flat_input:
        quantizations["pooled"] = _quantization_attrs(group, "pool", where)
        quantizations["pool_op"] = _choice_attr(group, "pool", POOL_OPS, where)
    return _LayerHeader(name=name, kind=kind.name, stride=stride, source_name=source_name,
                        where=where, datasets=datasets, quantizations=quantizations)


def _quantization_attrs(obj, prefix, where):
    """Quantization from attributes `<prefix>_scale` (a float32 > 0) and
    `<prefix>_zero_point` (an int8 value)."""
    key = f"{prefix}_scale"
    scale = _float_attr(obj, key, where, 0.0, float(np.finfo(np.float32).max))
    if not np.float32(scale) > 0:  # below float32's smallest subnormal
        raise FormatError(f"{where}: attribute '{key}' is {scale}, which is 0 in float32")
    zero_point = _int_attr(obj, f"{prefix}_zero_point", where, INT8_MIN, INT8_MAX)
    return Quantization(float(np.float32(scale)), zero_point)


def _check_average_pool(layers, where):
    """TFLite's AVERAGE_POOL_2D keeps its input's quantization: a classifier reading
    'average' pooled features must say the quantization of the layer before it."""
    for previous, layer in zip(layers, layers[1:]):
        quant = layer.quant
        if quant.pooled is not None and quant.pool_op == "average" and (
                quant.pooled != previous.quant.output):
            raise FormatError(
                f"{where}: layers/{layer.name}: pool 'average' keeps its input's quantization "
                f"but pool_scale/pool_zero_point ({quant.pooled.scale}, "
                f"{quant.pooled.zero_point}) differ from {previous.name!r}'s output "
                f"({previous.quant.output.scale}, {previous.quant.output.zero_point}); "
                f"use pool 'mean' for a requantizing pool")


def _check_chain(headers, info, where):
    """Layer kinds in a runnable order, and each layer's input = the previous one's output."""
    first, last = headers[0], headers[-1]
    if not kind_of(first.kind).first:
        raise FormatError(f"{where}: first layer {first.name!r} is {first.kind}, expected "
                          f"{' or '.join(kinds_where('first'))}")
    if first.spec.in_channels != 3:
        raise FormatError(f"{where}: first layer {first.name!r} takes {first.spec.in_channels} "
                          f"input channels, expected 3 (RGB)")
    if not kind_of(last.kind).last:
        raise FormatError(f"{where}: last layer {last.name!r} is {last.kind}, expected "
                          f"{' or '.join(kinds_where('last'))}")
    for layer in headers[1:-1]:
        if not kind_of(layer.kind).body:
            raise FormatError(f"{where}: layer {layer.name!r} is {layer.kind}; between the "
                              f"stem and the classifier only "
                              f"{' and '.join(kinds_where('body'))} are supported")
    for previous, layer in zip(headers, headers[1:]):
        if layer.spec.in_channels != previous.spec.out_channels:
            raise FormatError(
                f"{where}: layer {layer.name!r} expects {layer.spec.in_channels} input "
                f"channels but {previous.name!r} produces {previous.spec.out_channels} "
                f"(weight shapes {layer.weight_shape} after {previous.weight_shape})")
    if last.spec.out_channels != info.num_classes:
        raise FormatError(f"{where}: classifier {last.name!r} has {last.spec.out_channels} "
                          f"outputs but num_classes is {info.num_classes}")


def _check_total_size(headers, where):
    total = sum(dataset.size for header in headers for dataset in header.datasets.values())
    if total > MAX_TOTAL_ELEMENTS:
        raise FormatError(f"{where}: the layers hold {total} values in all, more than the "
                          f"limit of {MAX_TOTAL_ELEMENTS}")


def _read_layer(header):
    """The LayerRecord of a checked header: read every dataset, check values."""
    where = header.where
    if header.quantizations is not None:
        return _read_int8_layer(header)
    arrays = {key: _read_values(dataset, f"{where}/{key}")
              for key, dataset in header.datasets.items()}
    bn = None
    if kind_of(header.kind).has_bn:
        eps = float(arrays["eps"])
        if not 0.0 < eps < 1.0:
            raise FormatError(f"{where}/eps: {eps} is not in (0, 1)")
        if (arrays["var"] < 0).any():
            raise FormatError(f"{where}/var: negative variance")
        bn = BatchNorm(eps=eps, **{key: arrays[key] for key in BN_FIELDS})
    record = LayerRecord(name=header.name, kind=header.kind, stride=header.stride,
                         weight=arrays["weight"], bias=arrays.get("bias"), bn=bn,
                         source_name=header.source_name)
    if bn is not None and folding_overflows(record):
        raise FormatError(f"{where}: folding batch norm overflows float32 (gamma / "
                          f"sqrt(var + eps) is too large for these weights)")
    return record


def _read_int8_layer(header):
    """The LayerRecord of a checked int8 header: int8 weight, int32 bias, weight scales
    finite, > 0 and float32."""
    where, datasets = header.where, header.datasets
    with _reading(f"{where}/weight"):
        weight = np.asarray(datasets["weight"][()], dtype=np.int8)
    with _reading(f"{where}/bias"):
        bias = np.asarray(datasets["bias"][()])
    if bias.size and (bias.min() < INT32_MIN or bias.max() > INT32_MAX):
        raise FormatError(f"{where}/bias: values outside the int32 range")
    # Every kernel's int32 accumulator holds the bias plus at most 2 * 255 * sum |w| (the
    # VNNI GEMM adds its +128 correction to the bias): refuse what could overflow it.
    reach = np.abs(bias.astype(np.int64)) + ACCUMULATOR_INPUTS * np.abs(
        weight.astype(np.int64)).reshape(len(bias), -1).sum(axis=1)
    if reach.size and reach.max() > INT32_MAX:
        raise FormatError(f"{where}/bias: bias and weights could overflow the int32 "
                          f"accumulators (up to {int(reach.max())})")
    weight_scale = _read_values(datasets["weight_scale"], f"{where}/weight_scale")
    if not (weight_scale > 0).all():
        raise FormatError(f"{where}/weight_scale: scales must be > 0 (in float32)")
    quantizations = header.quantizations
    quant = LayerQuantization(weight_scale=weight_scale, output=quantizations["output"],
                              pooled=quantizations.get("pooled"),
                              pool_op=quantizations.get("pool_op", "average"))
    return LayerRecord(name=header.name, kind=header.kind, stride=header.stride,
                       weight=weight, bias=bias.astype(np.int32), bn=None,
                       source_name=header.source_name, quant=quant)


def _read_labels(h5, num_classes, where):
    if not _has_member(h5, "labels", where):
        return None
    dataset = _member(h5, "labels", where, h5py.Dataset)
    what = f"{where}: labels"
    with _reading(what):
        shape, dtype = dataset.shape, dataset.dtype
        is_string = h5py.check_string_dtype(dtype) is not None
    if shape != (num_classes,):
        raise FormatError(f"{what}: shape {shape}, expected ({num_classes},)")
    if not is_string:
        raise FormatError(f"{what}: dtype {dtype}, expected strings")
    _check_storage(dataset, what)
    with _reading(what):
        values = dataset[()]
    labels = []
    for index, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"{what}: label {index} is not valid UTF-8") from None
        if not isinstance(value, str):
            raise FormatError(f"{what}: label {index} is {_describe(value)}, expected a "
                              f"string")
        labels.append(_check_text(value, f"{what}: label {index}"))
    return labels


# ----------------------------------------------------------------- members and datasets

def _has_member(group, key, where):
    """True when `group` has a member (or a link) named `key`."""
    with _reading(_child(group, key, where)):
        return group.get(key, getlink=True) is not None


def _child(group, key, where):
    """How messages name member `key` of `group` (named `where`): "file: layers",
    "file: layers/05_block03_dw/var"."""
    return f"{where}: {key}" if group.name == "/" else f"{where}/{key}"


def _member(group, key, where, cls):
    """group[key], which must be a hard-linked h5py.Group or h5py.Dataset (`cls`).

    Soft and external links are refused: an external link would make the reader open
    another file named by the weight file.
    """
    noun = "group" if cls is h5py.Group else "dataset"
    what = _child(group, key, where)
    with _reading(what):
        link = group.get(key, getlink=True)
        if link is None:
            raise FormatError(f"{where}: missing {noun} '{key}'")
        if not isinstance(link, h5py.HardLink):
            raise FormatError(f"{what}: is a {type(link).__name__}, expected a "
                              f"{noun} (links are not allowed)")
        member = group[key]
    if not isinstance(member, cls):
        found = {h5py.Group: "group", h5py.Dataset: "dataset"}.get(type(member),
                                                                   "named datatype")
        raise FormatError(f"{what}: is a {found}, expected a {noun}")
    return member


def _float_dataset(group, key, where, shape=None):
    """The dataset `key`, checked for a floating-point dtype, shape, size and storage."""
    return _dataset(group, key, where, "f", "floating point", shape)


def _dataset(group, key, where, dtype_code, dtype_name, shape=None):
    """The dataset `key`, checked for its dtype (`dtype_code`: a numpy kind 'f' / 'i', or
    'i1' for exactly int8), shape, size and storage."""
    dataset = _member(group, key, where, h5py.Dataset)
    what = _child(group, key, where)
    with _reading(what):
        actual_shape, dtype = dataset.shape, dataset.dtype
    if actual_shape is None:
        raise FormatError(f"{what}: has no dataspace (an empty dataset)")
    matches = (dtype.kind == "i" and dtype.itemsize == 1 if dtype_code == "i1"
               else dtype.kind == dtype_code)
    if not matches:
        raise FormatError(f"{what}: dtype {dtype}, expected {dtype_name}")
    if shape is not None and actual_shape != shape:
        raise FormatError(f"{what}: shape {actual_shape}, expected {shape}")
    size = math.prod(actual_shape)
    if size > MAX_DATASET_ELEMENTS:
        raise FormatError(f"{what}: {size} elements exceeds the limit of "
                          f"{MAX_DATASET_ELEMENTS}")
    _check_storage(dataset, what)
    return dataset


def _check_storage(dataset, what):
    """Refuse data kept outside the file: external raw files and virtual datasets."""
    with _reading(what):
        external = dataset.external
        virtual = dataset.is_virtual
    if external:
        raise FormatError(f"{what}: data is stored in an external file "
                          f"({external[0][0]!r}), which is not allowed")
    if virtual:
        raise FormatError(f"{what}: is a virtual dataset, which is not allowed")


def _read_values(dataset, what):
    """A checked dataset's values as a float32 array, which must be finite."""
    with _reading(what), np.errstate(over="ignore"):  # float64 beyond float32 -> inf
        array = np.asarray(dataset[()], dtype=np.float32)
    if not np.isfinite(array).all():
        raise FormatError(f"{what}: contains NaN or Inf")
    return array


# ------------------------------------------------------------------------------ attributes

# The HDF5 datatypes an attribute may have. Reading others is refused before it starts:
# libhdf5 / h5py crash (SIGSEGV) converting some of them, e.g. a variable-length sequence
# where a variable-length string was (one flipped bit in the datatype message, found by
# fuzzing).
ATTRIBUTE_TYPES = (h5py.h5t.TypeStringID, h5py.h5t.TypeIntegerID, h5py.h5t.TypeFloatID)


def _attr(obj, key, where):
    """The value of attribute `key`, after checking that it is a string or numbers, and few."""
    with _reading(f"{where}: attribute '{key}'"):
        if key not in obj.attrs:
            raise FormatError(f"{where}: missing attribute '{key}'")
        attribute = obj.attrs.get_id(key)
        datatype = attribute.get_type()
        if not isinstance(datatype, ATTRIBUTE_TYPES):
            raise FormatError(f"{where}: attribute '{key}' has an HDF5 datatype of class "
                              f"{datatype.get_class()} ({type(datatype).__name__}), expected "
                              f"a string or numbers")
        shape = attribute.shape
        if shape is not None and math.prod(shape) > MAX_ATTRIBUTE_ELEMENTS:
            raise FormatError(f"{where}: attribute '{key}' has shape {shape}, expected at "
                              f"most {MAX_ATTRIBUTE_ELEMENTS} values")
        return obj.attrs[key]


def _attr_exists(obj, key, where):
    with _reading(f"{where}: attribute '{key}'"):
        return key in obj.attrs


def _str_attr(obj, key, where, required=True):
    if not required and not _attr_exists(obj, key, where):
        return ""
    value = _attr(obj, key, where)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: attribute '{key}' is not valid UTF-8") from None
    if not isinstance(value, str):
        raise FormatError(f"{where}: attribute '{key}' is {_describe(value)}, expected a string")
    return _check_text(value, f"{where}: attribute '{key}'")


def _check_text(value, what):
    """`value`, or FormatError when text_problem() finds one."""
    problem = text_problem(value)
    if problem:
        raise FormatError(f"{what} {problem}")
    return value


def text_problem(value):
    """Why a string may not be stored (it gets printed), or None: it must be valid UTF-8
    (h5py keeps undecodable bytes as lone surrogates) without control characters other
    than tab (no escape sequences, carriage returns or newlines)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if any(unicodedata.category(char) == "Cc" and char != "\t" for char in value):
        return "contains control characters"
    return None


def _choice_attr(obj, key, choices, where, default=None):
    """A string attribute that must be one of `choices`; `default` when it is optional and
    absent."""
    if default is not None and not _attr_exists(obj, key, where):
        return default
    value = _str_attr(obj, key, where)
    if value not in choices:
        raise FormatError(f"{where}: attribute '{key}' is {value!r}, expected one of "
                          f"{', '.join(choices)}")
    return value


def _int_attr(obj, key, where, low, high):
    value = _attr(obj, key, where)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise FormatError(f"{where}: attribute '{key}' is {_describe(value)}, expected an "
                          f"integer")
    if not low <= int(value) <= high:
        raise FormatError(f"{where}: attribute '{key}' is {int(value)}, expected {low}..{high}")
    return int(value)


def _float_attr(obj, key, where, low, high):
    """A finite float in (low, high]."""
    value = _attr(obj, key, where)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise FormatError(f"{where}: attribute '{key}' is {_describe(value)}, expected a number")
    value = float(value)
    if not (np.isfinite(value) and low < value <= high):
        raise FormatError(f"{where}: attribute '{key}' is {value}, expected a number in "
                          f"({low}, {high}]")
    return value


def _triple_attr(obj, key, where, positive):
    value = _attr(obj, key, where)
    array = np.asarray(value)
    if array.shape != (3,) or array.dtype.kind not in "fiu":
        raise FormatError(f"{where}: attribute '{key}' is {_describe(value)}, expected 3 "
                          f"numbers (one per RGB channel)")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or (positive and (array <= 0).any()):
        raise FormatError(f"{where}: attribute '{key}' is {array.tolist()}, expected finite"
                          f"{' positive' if positive else ''} numbers")
    return tuple(float(v) for v in array)


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"an array of {value.dtype} with shape {value.shape}"
    return f"{type(value).__name__} {value!r}"[:80]


def _first_line(error):
    # str() of a KeyError is the repr of its argument: take the argument itself.
    text = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
    text = text.strip().splitlines()
    return text[0][:200] if text else type(error).__name__
