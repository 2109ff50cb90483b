"""Keras model files read without Keras: the model's config and each layer's weight arrays.

Only h5py, zipfile and json are used. Two containers:

- legacy HDF5, `model.save("x.h5")` by tf.keras 2 or Keras 3: root attribute `model_config`
  (the model's JSON config); group `model_weights/<layer name>` per layer, whose attribute
  `weight_names` lists its weights in order, each a path inside that group (tf.keras 2
  `conv1/kernel:0`, Keras 3 `conv1/kernel`). Keras's own loader reads them in that order
  (keras/src/legacy/saving/legacy_h5_format.py, load_weights_from_hdf5_group).
- Keras v3 archive, `model.save("x.keras")`: a zip holding config.json and model.weights.h5,
  where a layer's weights are `layers/<name>/vars/0, 1, ...` and <name> is not the layer's
  name but its class in snake case, numbered among earlier layers of the same class in the
  config's order: `conv2d`, `conv2d_1`, ... (keras/src/saving/saving_lib.py,
  _save_container_state with naming.to_snake_case).

Everything is bounded before it is read (archive members, attribute and dataset sizes), and
a damaged file is a CheckpointError naming what could not be read.
"""
import io
import json
import math
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import CheckpointError, FormatError
from ..hdf5_guard import check_global_heaps, check_global_heaps_in
from ..weights import (ATTRIBUTE_TYPES, MAX_TOTAL_ELEMENTS, _H5PY_ERRORS, _float_dataset,
                       _member, _read_values, _reading)

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
MAX_CONFIG_BYTES = 64 * 2 ** 20  # MobileNet's config is ~100 KB
MAX_WEIGHTS_BYTES = 2 ** 31  # MobileNet 1.0's weights are ~17 MB
MAX_WEIGHTS_PER_LAYER = 16  # a BatchNormalization has 4
# What zipfile raises for a damaged archive (as filetype.py lists, and zlib's error for
# damaged compressed data).
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, IndexError,
               KeyError, OverflowError, NotImplementedError, UnicodeDecodeError, zlib.error)


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the config: its class, name, config dict and the layers feeding it."""

    class_name: str
    name: str
    config: dict
    inbound: tuple  # names of the layers whose outputs it takes


@dataclass
class KerasModel:
    """A Keras model file opened for reading: the model's class and name, its layers in
    config order, and `weights(index)`: the arrays of layer `index`, in Keras's order."""

    class_name: str
    name: str
    layers: list
    weights: object  # callable(index) -> [np.ndarray]


def open_keras_model(path, archive):
    """(KerasModel, close) for the legacy .h5 (archive False) or .keras zip (archive True)
    at `path`; call close() when done with its weights."""
    with _as_checkpoint_error():
        model, close = _open_archive(path) if archive else _open_legacy(path)
    read = model.weights
    total = [0]  # elements read so far: a file cannot make the reader allocate without bound

    def weights(index):
        with _as_checkpoint_error():
            arrays = read(index)
        total[0] += sum(array.size for array in arrays)
        if total[0] > MAX_TOTAL_ELEMENTS:
            raise CheckpointError(f"{path}: the weights hold more than {MAX_TOTAL_ELEMENTS} "
                                  f"values, far more than a MobileNet")
        return arrays

    model.weights = weights
    return model, close


class _as_checkpoint_error:
    """Turn the FormatError of weights.py's shared HDF5 readers into a CheckpointError."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, FormatError):
            raise CheckpointError(str(error)) from None
        return False


# ----------------------------------------------------------------------------- legacy .h5

def _open_legacy(path):
    check_global_heaps(path)
    try:
        h5 = h5py.File(path, "r", locking=False)
    except _H5PY_ERRORS as error:
        raise CheckpointError(f"{path}: not a readable HDF5 file ({_first_line(error)})") \
            from None
    try:
        config = _parse_config(_text_attr(h5, "model_config", path), f"{path}: model_config")
        group = _member(h5, "model_weights", path, h5py.Group)
        model = _model_from_config(config, f"{path}: model_config")

        def weights(index):
            name = model.layers[index].name
            where = f"{path}: model_weights"
            with _reading(f"{where}/{name}"):
                present = name in group
            if not present:
                return []
            layer_group = _member(group, name, where, h5py.Group)
            names = _names_attr(layer_group, "weight_names", f"{where}/{name}")
            return [_array(layer_group, weight, f"{where}/{name}") for weight in names]

        model.weights = weights
        return model, h5.close
    except BaseException:
        h5.close()
        raise


def _text_attr(h5, key, where):
    """A string attribute (model_config: JSON text of any length), type-checked first."""
    with _reading(f"{where}: attribute '{key}'"):
        if key not in h5.attrs:
            raise CheckpointError(f"{where}: missing attribute '{key}' (not a whole Keras "
                                  f"model: save it with model.save(...))")
        datatype = h5.attrs.get_id(key).get_type()
        if not isinstance(datatype, h5py.h5t.TypeStringID):
            raise CheckpointError(f"{where}: attribute '{key}' is not a string")
        value = h5.attrs[key]
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise CheckpointError(f"{where}: attribute '{key}' is not a string")
    return value


def _names_attr(group, key, where):
    """A list-of-strings attribute (weight_names), of at most MAX_WEIGHTS_PER_LAYER names."""
    with _reading(f"{where}: attribute '{key}'"):
        if key not in group.attrs:
            raise CheckpointError(f"{where}: missing attribute '{key}'")
        attribute = group.attrs.get_id(key)
        if not isinstance(attribute.get_type(), ATTRIBUTE_TYPES) or (
                attribute.shape is not None
                and math.prod(attribute.shape) > MAX_WEIGHTS_PER_LAYER):
            raise CheckpointError(f"{where}: attribute '{key}' is not a short list of names")
        value = np.atleast_1d(group.attrs[key])
    if value.size == 0:
        return []
    names = [item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
             for item in value.tolist()]
    if not all(isinstance(name, str) and name for name in names):
        raise CheckpointError(f"{where}: attribute '{key}' is not a list of names")
    return names


# --------------------------------------------------------------------------- .keras (zip)

def _open_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            config_text = _member_bytes(archive, CONFIG_MEMBER, MAX_CONFIG_BYTES, path)
            weight_bytes = _member_bytes(archive, WEIGHTS_MEMBER, MAX_WEIGHTS_BYTES, path)
    except CheckpointError:
        raise
    except _ZIP_ERRORS as error:
        raise CheckpointError(f"{path}: not a readable .keras archive "
                              f"({_first_line(error)})") from None
    config = _parse_config(config_text.decode("utf-8", errors="replace"),
                           f"{path}: {CONFIG_MEMBER}")
    model = _model_from_config(config, f"{path}: {CONFIG_MEMBER}")
    where = f"{path}: {WEIGHTS_MEMBER}"
    check_global_heaps_in(weight_bytes, where)
    try:
        h5 = h5py.File(io.BytesIO(weight_bytes), "r")
    except _H5PY_ERRORS as error:
        raise CheckpointError(f"{where}: not a readable HDF5 file ({_first_line(error)})") \
            from None
    names = _v3_names(model.layers)

    def weights(index):
        group_path = f"layers/{names[index]}/vars"
        with _reading(f"{where}: {group_path}"):
            present = group_path in h5
        if not present:
            return []
        group = _member(_member(_member(h5, "layers", where, h5py.Group), names[index],
                                f"{where}: layers", h5py.Group),
                        "vars", f"{where}: layers/{names[index]}", h5py.Group)
        with _reading(f"{where}: {group_path}"):
            count = len(group)
        if count > MAX_WEIGHTS_PER_LAYER:
            raise CheckpointError(f"{where}: {group_path} holds {count} arrays")
        return [_array(group, str(i), f"{where}: {group_path}") for i in range(count)]

    model.weights = weights
    return model, h5.close


def _member_bytes(archive, name, limit, path):
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: the .keras archive has no {name}") from None
    if info.file_size > limit:
        raise CheckpointError(f"{path}: {name} is {info.file_size} bytes, more than the "
                              f"{limit} a MobileNet needs")
    with archive.open(info) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise CheckpointError(f"{path}: {name} is larger than its directory entry says")
    return data


def _v3_names(layers):
    """The group name of each layer in model.weights.h5 (see the module docstring)."""
    used, names = {}, []
    for layer in layers:
        name = snake_case(layer.class_name)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        names.append(name)
    return names


def snake_case(class_name):
    """Keras's naming.to_snake_case: "DepthwiseConv2D" -> "depthwise_conv2d"."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---------------------------------------------------------------------------------- config

def _parse_config(text, where):
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CheckpointError(f"{where}: not valid JSON ({_first_line(error)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: not a Keras model config (a JSON object)")
    return config


def _model_from_config(config, where):
    """A KerasModel (weights not yet attached) from a model's JSON config."""
    class_name = config.get("class_name")
    body = config.get("config")
    if not isinstance(class_name, str) or not isinstance(body, dict):
        raise CheckpointError(f"{where}: not a Keras model config (no class_name/config)")
    layers = body.get("layers")
    if not isinstance(layers, list):
        raise CheckpointError(f"{where}: the {class_name} model config lists no layers (a "
                              f"subclassed model? mobinumba reads Functional and Sequential "
                              f"models)")
    parsed = []
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str) \
                or not isinstance(layer.get("config"), dict):
            raise CheckpointError(f"{where}: layer {index} is not a layer config")
        name = layer.get("name", layer["config"].get("name"))
        if not isinstance(name, str):
            raise CheckpointError(f"{where}: layer {index} has no name")
        parsed.append(KerasLayer(layer["class_name"], name, layer["config"],
                                 tuple(_inbound_names(layer.get("inbound_nodes", [])))))
    name = body.get("name")
    return KerasModel(class_name, name if isinstance(name, str) else "?", parsed, None)


def _inbound_names(nodes, depth=0):
    """Names of the layers a layer's `inbound_nodes` refer to, in either format: Keras 3
    ({"args": [{"config": {"keras_history": [name, 0, 0]}}]}) or tf.keras 2
    ([[[name, 0, 0, {}]]])."""
    if depth > 16:
        return []
    if isinstance(nodes, dict):
        history = nodes.get("keras_history")
        if isinstance(history, list) and history and isinstance(history[0], str):
            return [history[0]]
        return [name for value in nodes.values() for name in _inbound_names(value, depth + 1)]
    if isinstance(nodes, list):
        if len(nodes) >= 3 and isinstance(nodes[0], str) and isinstance(nodes[1], int):
            return [nodes[0]]
        return [name for value in nodes for name in _inbound_names(value, depth + 1)]
    return []


# ---------------------------------------------------------------------------------- arrays

def _array(group, key, where):
    """A finite float weight array; dtype, size (MAX_DATASET_ELEMENTS) and storage checked
    by weights.py's reader before anything is read."""
    return _read_values(_float_dataset(group, key, where), f"{where}/{key}")


def _first_line(error):
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
