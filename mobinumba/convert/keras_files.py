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

A nested model (the base of a fine-tuned MobileNet: `Sequential([base, GAP, Dense])`, or
`base(x)` in a Functional) is flattened into its layers, in config order, so that the
layers read as one chain: the nested model's first layer takes what the nested model takes,
and the layers after it take its output layer's. Its weights are where Keras puts them: in
legacy .h5, all in the group of the outermost nested model, each named `<layer>/<weight>`
(tf.keras 2 and Keras 3 alike, Keras's legacy_h5_format saves a nested model's weights as
one list); in .keras, under the nested model's own path, `layers/functional/layers/conv2d/
vars/0`, numbered per container.

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
MAX_NESTED_WEIGHTS = 4096  # a nested MobileNetV1 lists 135 (weight_names of its group)
MAX_NESTING = 4  # model in model in ...: the tutorial's is 1 deep
MAX_LAYERS = 4096  # after flattening; MobileNetV1 has 90
NESTED_MODELS = ("Functional", "Sequential", "Model")
# What zipfile raises for a damaged archive (as filetype.py lists, and zlib's error for
# damaged compressed data).
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, IndexError,
               KeyError, OverflowError, NotImplementedError, UnicodeDecodeError, zlib.error)


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the (flattened) config: its class, name, config dict, the layers feeding
    it and where its weights are."""

    class_name: str
    name: str
    config: dict
    inbound: tuple  # names of the layers whose outputs it takes; None: the previous one's
    nodes: object  # its raw inbound_nodes (the constant operands of TrueDivide etc.)
    h5_group: str  # legacy .h5: its group under model_weights (a nested model's, if in one)
    nested: bool  # legacy .h5: in a nested model, so its weights are `<name>/...` there
    v3_path: str  # .keras: its group in model.weights.h5, "layers/conv2d" ...
    container: object = None  # the name of the nested model it is in (innermost), if any


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
            layer = model.layers[index]
            name, where = layer.h5_group, f"{path}: model_weights"
            with _reading(f"{where}/{name}"):
                present = name in group
            if not present:
                return []
            layer_group = _member(group, name, where, h5py.Group)
            limit = MAX_NESTED_WEIGHTS if layer.nested else MAX_WEIGHTS_PER_LAYER
            names = _names_attr(layer_group, "weight_names", f"{where}/{name}", limit)
            if layer.nested:  # "conv1/kernel" (Keras 3), "conv1/kernel:0" (tf.keras 2)
                names = [weight for weight in names
                         if weight.split("/")[-2:-1] == [layer.name]]
                if len(names) > MAX_WEIGHTS_PER_LAYER:
                    raise CheckpointError(f"{where}/{name}: attribute 'weight_names' lists "
                                          f"{len(names)} weights of layer {layer.name!r}")
            return [_array(layer_group, weight, f"{where}/{name}") for weight in names]

        model.weights = weights
        return model, h5.close
    except BaseException:
        h5.close()
        raise


# Inside `_reading` a refusal is a FormatError, which it passes on (and _as_checkpoint_error
# turns into a CheckpointError); a CheckpointError, a ValueError, would be reported as
# h5py's, "unreadable, the file is corrupt (...)".

def _text_attr(h5, key, where):
    """A string attribute (model_config: JSON text of any length), type-checked first."""
    with _reading(f"{where}: attribute '{key}'"):
        if key not in h5.attrs:
            raise FormatError(f"{where}: missing attribute '{key}' (not a whole Keras "
                              f"model: save it with model.save(...))")
        datatype = h5.attrs.get_id(key).get_type()
        if not isinstance(datatype, h5py.h5t.TypeStringID):
            raise FormatError(f"{where}: attribute '{key}' is not a string")
        value = h5.attrs[key]
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise CheckpointError(f"{where}: attribute '{key}' is not a string")
    return value


def _names_attr(group, key, where, limit):
    """A list-of-strings attribute (weight_names), of at most `limit` names."""
    with _reading(f"{where}: attribute '{key}'"):
        if key not in group.attrs:
            raise FormatError(f"{where}: missing attribute '{key}'")
        attribute = group.attrs.get_id(key)
        if not isinstance(attribute.get_type(), ATTRIBUTE_TYPES) or (
                attribute.shape is not None
                and math.prod(attribute.shape) > limit):
            raise FormatError(f"{where}: attribute '{key}' is not a short list of names")
        value = np.atleast_1d(group.attrs[key])
    if value.size == 0:
        return []
    names = [item.decode("utf-8", errors="replace") if isinstance(item, bytes) else item
             for item in value.tolist()]
    if not all(isinstance(name, str) and name for name in names):
        raise CheckpointError(f"{where}: attribute '{key}' is not a list of names")
    return names


def hdf5_problem(path):
    """Why the HDF5 file at `path` cannot be opened (a damaged or truncated Keras .h5 is not
    recognisable as one), as a one-line message; None when it opens."""
    try:
        check_global_heaps(path)
        with h5py.File(path, "r", locking=False) as h5:
            h5.attrs.keys()
    except (CheckpointError, FormatError) as error:  # the heap guard's refusal
        return str(error)
    except _H5PY_ERRORS as error:
        return f"{path}: not a readable HDF5 file ({_first_line(error)})"
    return None


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

    def weights(index):
        group_path = f"{model.layers[index].v3_path}/vars"
        with _reading(f"{where}: {group_path}"):
            present = group_path in h5
        if not present:
            return []
        group, inside = h5, where
        for part in group_path.split("/"):
            group = _member(group, part, inside, h5py.Group)
            inside = f"{where}: {group_path[:group_path.index(part) + len(part)]}"
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
    """A KerasModel (weights not yet attached) from a model's JSON config, nested models
    flattened (see the module docstring)."""
    class_name = config.get("class_name")
    body = config.get("config")
    if not isinstance(class_name, str) or not isinstance(body, dict):
        raise CheckpointError(f"{where}: not a Keras model config (no class_name/config)")
    layers = body.get("layers")
    if not isinstance(layers, list):
        raise CheckpointError(f"{where}: the {class_name} model config lists no layers (a "
                              f"subclassed model? mobinumba reads Functional and Sequential "
                              f"models)")
    flat = []
    _flatten(layers, class_name, _Container(where, "layers", None, None), flat, {}, 0)
    name = body.get("name")
    return KerasModel(class_name, name if isinstance(name, str) else "?", flat, None)


@dataclass(frozen=True)
class _Container:
    """Where a list of layer configs sits: for messages, in model.weights.h5 (.keras), in
    model_weights (the outermost nested model's group, legacy .h5), what feeds it (the
    name of the layer its input layer stands for; None at the top) and its model's name."""

    where: str
    v3_prefix: str
    h5_group: object
    feed: object
    name: object = None  # the nested model's name; None at the top


def _flatten(layers, class_name, container, flat, aliases, depth):
    """Append the layers of one container to `flat`, nested models expanded in place.
    `aliases` maps a nested model's name to its output layer's and its input layer's name
    to the layer feeding it, so that every inbound name is a layer of `flat`."""
    used = {}  # .keras group names: class in snake case, numbered within the container
    sequential = class_name == "Sequential"
    for index, layer in enumerate(layers):
        where = container.where
        if not isinstance(layer, dict) or not isinstance(layer.get("class_name"), str) \
                or not isinstance(layer.get("config"), dict):
            raise CheckpointError(f"{where}: layer {index} is not a layer config")
        config = layer["config"]
        name = layer.get("name", config.get("name"))
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"{where}: layer {index} ({layer['class_name']}) has no "
                                  f"name")
        group = snake_case(layer["class_name"])
        used[group] = used.get(group, -1) + 1
        v3_path = f"{container.v3_prefix}/{group}" + (f"_{used[group]}" if used[group] else "")
        nodes = layer.get("inbound_nodes", [])
        inbound = None if sequential else tuple(aliases.get(source, source) for source in
                                                _inbound_names(nodes))
        if layer["class_name"] == "InputLayer" and container.feed is not None:
            aliases[name] = container.feed  # a nested model's input: what feeds that model
            continue
        if len(flat) >= MAX_LAYERS:
            raise CheckpointError(f"{where}: more than {MAX_LAYERS} layers")
        if layer["class_name"] in NESTED_MODELS and isinstance(config.get("layers"), list):
            if depth >= MAX_NESTING:
                raise CheckpointError(f"{where}: models nested more than {MAX_NESTING} deep")
            if inbound is None:  # in a Sequential: fed by the previous layer, if any
                feed = flat[-1].name if flat else None
            else:
                feed = inbound[0] if len(inbound) == 1 else f"{list(inbound)}"
            inner = _Container(f"{where}: nested model {name!r}", f"{v3_path}/layers",
                               container.h5_group or name, feed, name)
            start = len(flat)
            _flatten(config["layers"], layer["class_name"], inner, flat, aliases, depth + 1)
            output = _inbound_names(config.get("output_layers"))
            if len(output) == 1:
                aliases[name] = aliases.get(output[0], output[0])
            elif len(flat) > start:
                aliases[name] = flat[-1].name
            continue
        flat.append(KerasLayer(layer["class_name"], name, config, inbound, nodes,
                               container.h5_group or name, container.h5_group is not None,
                               v3_path, container.name))


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
