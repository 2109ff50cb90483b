"""The mobinumba HDF5 weight file: write, read, validate; fold batch norm.

The file is framework-neutral and keeps the source's own tensors (OIHW convolutions, unfolded
batch-norm statistics), so the runtime's private layout can change without re-converting.
docs/format.md is the specification; this module is its only reader and writer.

Reading validates everything a kernel will later rely on (Numba runs without bounds checks):
every attribute's type and range, every dataset's dtype, rank and shape, the channel chain
between consecutive layers, and finiteness of every weight. Any violation raises FormatError
naming the file, the layer and the dataset or attribute.
"""
import os
import secrets
from dataclasses import dataclass, field

import h5py
import numpy as np

from .architecture import KINDS, PADDINGS, LayerSpec
from .errors import FormatError

FORMAT_NAME = "mobinumba"
FORMAT_VERSION = 1
ARCH = "mobilenet_v1"
ACTIVATIONS = ("relu", "relu6")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming", "bilinear_tf")
RESIZE_MODES = ("shorter_side", "central_crop")
BN_FIELDS = ("gamma", "beta", "mean", "var")

# Refuse datasets whose declared size is absurd before reading them: no real MobileNet layer
# comes near 2**26 elements (a 1024 x 21843 ImageNet-21k classifier is 2**24.4).
MAX_DATASET_ELEMENTS = 2 ** 26
MAX_CHANNELS = 65536
MAX_CLASSES = 1_000_000


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
    format_version: int = FORMAT_VERSION


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
    """

    name: str
    kind: str
    stride: int
    weight: np.ndarray
    bias: np.ndarray | None = None
    bn: BatchNorm | None = None
    source_name: str = ""

    @property
    def spec(self):
        """The LayerSpec (kind, channels, stride) this record's shapes describe."""
        out_channels = self.weight.shape[0]
        in_channels = out_channels if self.kind == "dwconv" else self.weight.shape[1]
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
    """Write `model` (a ModelFile) to `path` atomically: a temp file beside it, then a rename.

    Refuses to replace an existing file unless `overwrite`. `verify(temp_path)`, when given,
    runs on the complete temp file before the rename and may raise to abandon the write. On
    any failure, including KeyboardInterrupt, the temp file is removed and `path` is left as
    it was.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FormatError(f"{path}: file exists (use --force to overwrite)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FormatError(f"{path}: directory {directory} does not exist")
    temp_path = _create_temp_file(directory, os.path.basename(path))
    try:
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
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise


def _create_temp_file(directory, name):
    """Create an empty, new `.name.XXXX.tmp` in directory; returns its path.

    Unlike tempfile.mkstemp (always mode 0600), the file gets the usual 0666 & ~umask, so
    the renamed output is readable like any other file the user writes.
    """
    while True:
        temp_path = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return temp_path
        except FileExistsError:
            continue


def _write_root(h5, info):
    h5.attrs["format"] = FORMAT_NAME
    h5.attrs["format_version"] = np.int64(info.format_version)
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


def _write_layer(group, layer):
    group.attrs["kind"] = layer.kind
    group.attrs["stride"] = np.int64(layer.stride)
    group.attrs["source_name"] = layer.source_name
    group.create_dataset("weight", data=np.asarray(layer.weight, dtype=np.float32))
    if layer.bias is not None:
        group.create_dataset("bias", data=np.asarray(layer.bias, dtype=np.float32))
    if layer.bn is not None:
        for name in BN_FIELDS:
            group.create_dataset(name, data=np.asarray(getattr(layer.bn, name), np.float32))
        group.create_dataset("eps", data=np.float32(layer.bn.eps))


# --------------------------------------------------------------------------------- reading

def read_model_file(path):
    """Read and fully validate a weight file; returns a ModelFile or raises FormatError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FormatError(f"{path}: no such file")
    if os.path.isdir(path):
        raise FormatError(f"{path}: is a directory, not a weight file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        raise FormatError(f"{path}: not a readable HDF5 file ({_first_line(error)})") from None
    try:
        with h5:
            return _read(h5, path)
    except FormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        # h5py raises these for corrupt internals (bad B-tree, truncated chunk, ...).
        raise FormatError(f"{path}: corrupt HDF5 file ({_first_line(error)})") from None


def _read(h5, path):
    where = f"{path}"
    fmt = _str_attr(h5, "format", where)
    if fmt != FORMAT_NAME:
        raise FormatError(f"{where}: attribute 'format' is {fmt!r}, expected {FORMAT_NAME!r}")
    version = _int_attr(h5, "format_version", where, 1, 10 ** 6)
    if version > FORMAT_VERSION:
        raise FormatError(f"{where}: format_version {version} is newer than this mobinumba "
                          f"supports ({FORMAT_VERSION}); upgrade mobinumba")
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
        resize=(_choice_attr(h5, "resize", RESIZE_MODES, where) if "resize" in h5.attrs
                else "shorter_side"),
        source_file=_str_attr(h5, "source_file", where),
        source_sha256=_str_attr(h5, "source_sha256", where),
        source_layout=_str_attr(h5, "source_layout", where),
        converter_version=_str_attr(h5, "converter_version", where),
    )
    layers = _read_layers(h5, where)
    _check_chain(layers, info, where)
    labels = _read_labels(h5, info.num_classes, where)
    return ModelFile(info=info, layers=layers, labels=labels, path=path)


def _read_layers(h5, where):
    group = h5.get("layers")
    if not isinstance(group, h5py.Group):
        raise FormatError(f"{where}: missing group 'layers'")
    names = list(group.keys())
    if not names:
        raise FormatError(f"{where}: group 'layers' is empty")
    ordered = {}
    for key in names:
        prefix, _, name = key.partition("_")
        if not (prefix.isdigit() and name):
            raise FormatError(f"{where}: layer group {key!r} is not named 'NN_name'")
        ordered[int(prefix)] = (key, name)
    if sorted(ordered) != list(range(len(names))):
        raise FormatError(f"{where}: layer indices {sorted(ordered)} are not 0..{len(names) - 1}")
    records = []
    for index in range(len(names)):
        key, name = ordered[index]
        layer_group = group[key]
        if not isinstance(layer_group, h5py.Group):
            raise FormatError(f"{where}: layers/{key} is not a group")
        records.append(_read_layer(layer_group, name, f"{where}: layers/{key}"))
    return records


def _read_layer(group, name, where):
    kind = _choice_attr(group, "kind", KINDS, where)
    stride = _int_attr(group, "stride", where, 1, 2)
    source_name = _str_attr(group, "source_name", where, required=False)
    weight = _read_array(group, "weight", where)
    expected_rank = 2 if kind == "dense" else 4
    if weight.ndim != expected_rank:
        raise FormatError(f"{where}/weight: rank {weight.ndim} (shape {weight.shape}), "
                          f"expected {expected_rank} for a {kind} layer")
    if any(dim < 1 for dim in weight.shape) or weight.shape[0] > MAX_CHANNELS * 16:
        raise FormatError(f"{where}/weight: invalid shape {weight.shape}")
    out_channels = weight.shape[0]
    if kind != "dense":
        kernel = 1 if kind == "pwconv" else 3
        if weight.shape[2:] != (kernel, kernel):
            raise FormatError(f"{where}/weight: shape {weight.shape}, expected a "
                              f"{kernel}x{kernel} kernel for a {kind} layer")
        if kind == "dwconv" and weight.shape[1] != 1:
            raise FormatError(f"{where}/weight: shape {weight.shape}, a depthwise weight "
                              f"must be (C, 1, 3, 3)")
        if out_channels > MAX_CHANNELS or weight.shape[1] > MAX_CHANNELS:
            raise FormatError(f"{where}/weight: shape {weight.shape} exceeds {MAX_CHANNELS} "
                              f"channels")
    if kind == "dense" and stride != 1:
        raise FormatError(f"{where}: attribute 'stride' is {stride}, a dense layer has 1")
    bias = None
    if "bias" in group or kind == "dense":
        bias = _read_array(group, "bias", where, shape=(out_channels,))
    bn = None
    if kind != "dense":
        arrays = {f: _read_array(group, f, where, shape=(out_channels,)) for f in BN_FIELDS}
        eps = _read_array(group, "eps", where, shape=())
        if not 0.0 < float(eps) < 1.0:
            raise FormatError(f"{where}/eps: {float(eps)} is not in (0, 1)")
        if (arrays["var"] < 0).any():
            raise FormatError(f"{where}/var: negative variance")
        bn = BatchNorm(eps=float(eps), **arrays)
    return LayerRecord(name=name, kind=kind, stride=stride, weight=weight, bias=bias, bn=bn,
                       source_name=source_name)


def _check_chain(layers, info, where):
    """Layer kinds in a runnable order, and each layer's input = the previous one's output."""
    first, last = layers[0], layers[-1]
    if first.kind != "conv":
        raise FormatError(f"{where}: first layer {first.name!r} is {first.kind}, expected conv")
    if first.spec.in_channels != 3:
        raise FormatError(f"{where}: first layer {first.name!r} takes {first.spec.in_channels} "
                          f"input channels, expected 3 (RGB)")
    if last.kind != "dense":
        raise FormatError(f"{where}: last layer {last.name!r} is {last.kind}, expected dense")
    for layer in layers[1:-1]:
        if layer.kind not in ("dwconv", "pwconv"):
            raise FormatError(f"{where}: layer {layer.name!r} is {layer.kind}; between the "
                              f"stem and the classifier only dwconv and pwconv are supported")
    for previous, layer in zip(layers, layers[1:]):
        if layer.spec.in_channels != previous.spec.out_channels:
            raise FormatError(
                f"{where}: layer {layer.name!r} expects {layer.spec.in_channels} input "
                f"channels but {previous.name!r} produces {previous.spec.out_channels} "
                f"(weight shapes {layer.weight.shape} after {previous.weight.shape})")
    if last.spec.out_channels != info.num_classes:
        raise FormatError(f"{where}: classifier {last.name!r} has {last.spec.out_channels} "
                          f"outputs but num_classes is {info.num_classes}")


def _read_labels(h5, num_classes, where):
    if "labels" not in h5:
        return None
    dataset = h5["labels"]
    if not isinstance(dataset, h5py.Dataset) or dataset.shape != (num_classes,):
        shape = getattr(dataset, "shape", None)
        raise FormatError(f"{where}/labels: shape {shape}, expected ({num_classes},)")
    if dataset.dtype.kind not in ("O", "S", "U"):
        raise FormatError(f"{where}/labels: dtype {dataset.dtype}, expected strings")
    labels = []
    for value in dataset[()]:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"{where}/labels: a label is not valid UTF-8") from None
        labels.append(str(value))
    return labels


def _read_array(group, key, where, shape=None):
    """A float dataset as a float32 array, checked for shape, size and finiteness."""
    if key not in group:
        raise FormatError(f"{where}: missing dataset '{key}'")
    dataset = group[key]
    if not isinstance(dataset, h5py.Dataset):
        raise FormatError(f"{where}/{key}: is a group, expected a dataset")
    if dataset.dtype.kind != "f":
        raise FormatError(f"{where}/{key}: dtype {dataset.dtype}, expected floating point")
    if shape is not None and dataset.shape != shape:
        raise FormatError(f"{where}/{key}: shape {dataset.shape}, expected {shape}")
    if dataset.size > MAX_DATASET_ELEMENTS:
        raise FormatError(f"{where}/{key}: {dataset.size} elements exceeds the limit of "
                          f"{MAX_DATASET_ELEMENTS}")
    array = np.asarray(dataset[()], dtype=np.float32)
    if not np.isfinite(array).all():
        raise FormatError(f"{where}/{key}: contains NaN or Inf")
    return array


# ------------------------------------------------------------------------------ attributes

def _attr(obj, key, where):
    if key not in obj.attrs:
        raise FormatError(f"{where}: missing attribute '{key}'")
    return obj.attrs[key]


def _str_attr(obj, key, where, required=True):
    if not required and key not in obj.attrs:
        return ""
    value = _attr(obj, key, where)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: attribute '{key}' is not valid UTF-8") from None
    if not isinstance(value, str):
        raise FormatError(f"{where}: attribute '{key}' is {_describe(value)}, expected a string")
    return value


def _choice_attr(obj, key, choices, where):
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
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ---------------------------------------------------------------------------- BN folding

def fold_batch_norm(record):
    """(weight, bias) of a conv record with its batch norm folded in, float32.

    weight' = weight * gamma / sqrt(var + eps) per output channel,
    bias'   = beta + (bias - mean) * gamma / sqrt(var + eps); computed in float64.
    """
    bn = record.bn
    scale = bn.gamma.astype(np.float64) / np.sqrt(bn.var.astype(np.float64) + bn.eps)
    conv_bias = 0.0 if record.bias is None else record.bias.astype(np.float64)
    weight = record.weight.astype(np.float64) * scale[:, None, None, None]
    bias = bn.beta.astype(np.float64) + (conv_bias - bn.mean.astype(np.float64)) * scale
    weight, bias = weight.astype(np.float32), bias.astype(np.float32)
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise FormatError(f"layer {record.name!r}: folding batch norm overflows float32 "
                          f"(a variance near zero with a large gamma?)")
    return weight, bias
