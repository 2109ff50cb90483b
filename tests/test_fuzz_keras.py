"""Fuzzing the Keras reader: damaged .keras archives and legacy .h5 model files.

Seeds (tests/test_keras.py's nested models, written by Keras 3 with randomized batch norms):
the Functional with preprocess_input and a nested base as .keras and as a Keras 3 .h5, and
the Sequential with Rescaling as a tf.keras 2 .h5. Cases edit the model's JSON config (any
layer's settings, nested ones included; layers dropped, duplicated, swapped, renamed or
retyped; inbound nodes; the model's structure), the weights' HDF5 (datasets dropped,
reshaped, retyped, poisoned; weight_names attributes), the zip archive (members missing,
duplicated, lying about their size, damaged) and the bytes. Each case runs
`convert_checkpoint` in the isolated worker and must end in a one-line CheckpointError that
starts with the file and names what is wrong, or convert and agree with a float64 reference
read from the file by the worker itself (by weight name in .h5, by position in .keras).
"""
import io
import json
import struct
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import (STATS, FuzzWorker, Timer, apply_byte_edits, at_least, check_answer,
                     examples, structural_byte_edits)

pytest.importorskip("keras")
from test_keras import KerasFiles  # noqa: E402 - needs keras

# What a refusal names: a quoted layer / member / attribute, a state-dict key, the part of
# the file that cannot be read; or, for a file whose Keras attributes a flip destroyed, that
# it is an HDF5 file (no longer recognisable as a Keras model).
NAMING = (r"'[^']+'|\b\w+(\.\w+)+\b|not a readable|\.keras archive|config\.json|"
          r"model\.weights\.h5|model_config|model_weights|not a Keras model config|more than|"
          r"nested|global heap|this is an HDF5 file;")
pytestmark = pytest.mark.slow  # a fuzzer: ~900 cases in a worker process
SEEDS = ("functional.keras", "functional.h5", "sequential_tf2.h5")


class Seeds:
    """The seeds' bytes, their config and their weights HDF5 (a .keras archive's member)."""

    def __init__(self, directory):
        self.directory = directory
        KerasFiles(directory).write_nested()
        self.data = {name: (directory / name).read_bytes() for name in SEEDS}

    def config(self, name):
        if name.endswith(".keras"):
            with zipfile.ZipFile(io.BytesIO(self.data[name])) as archive:
                return json.loads(archive.read("config.json"))
        with h5py.File(io.BytesIO(self.data[name]), "r") as h5:
            return json.loads(h5.attrs["model_config"])

    def write(self, name, path, config=None, edit_weights=None):
        """Write seed `name` to `path` with another config and/or its weights HDF5 edited by
        edit_weights(h5py.File) (the .h5 itself, or the archive's model.weights.h5)."""
        text = None if config is None else json.dumps(config)
        if name.endswith(".keras"):
            with zipfile.ZipFile(io.BytesIO(self.data[name])) as archive:
                members = {info.filename: archive.read(info) for info in archive.infolist()}
            if text is not None:
                members["config.json"] = text.encode()
            if edit_weights is not None:
                members["model.weights.h5"] = _edited_h5(members["model.weights.h5"],
                                                         edit_weights)
            with zipfile.ZipFile(path, "w") as archive:
                for member, data in members.items():
                    archive.writestr(member, data)
        else:
            data = self.data[name]
            if edit_weights is not None:
                data = _edited_h5(data, lambda h5: edit_weights(h5["model_weights"]))
            path.write_bytes(data)
            if text is not None:
                with h5py.File(path, "r+") as h5:
                    h5.attrs["model_config"] = text


def _edited_h5(data, edit):
    stream = io.BytesIO(data)
    with h5py.File(stream, "r+") as h5:
        edit(h5)
    return stream.getvalue()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return Seeds(tmp_path_factory.mktemp("fuzz_keras"))


@pytest.fixture(scope="module")
def worker(seeds):
    directory = seeds.directory
    process = FuzzWorker({"target": "keras", "path": str(directory / SEEDS[0]),
                          "output": str(directory / "warmup.h5")})
    yield process
    process.close()


def run_keras_case(worker, seeds, path):
    with Timer("keras"):
        answer = worker.run({"target": "keras", "path": str(path),
                             "output": str(seeds.directory / "out.h5")})
    check_answer("keras", answer, str(path), ("CheckpointError",), NAMING,
                 str(seeds.directory / "failures"))
    # A damaged .keras or .h5 is reported as one, not as a PyTorch checkpoint torch could
    # not read (the reader convert picks by name for files it does not recognise).
    assert "PyTorch checkpoint (" not in answer.get("message", ""), answer
    return answer


def test_seeds_convert_and_match_the_reference(seeds, worker):
    for name in SEEDS:
        answer = run_keras_case(worker, seeds, seeds.directory / name)
        assert answer["outcome"] == "ok" and answer["comparison"] == "compared", answer


# ------------------------------------------------------------------------- config edits

def _nested(layer):
    """Whether a layer dict is a model holding layers (as the reader and Keras see it)."""
    return isinstance(layer, dict) and layer.get("class_name") in ("Functional", "Sequential",
                                                                   "Model") \
        and isinstance(layer.get("config"), dict) and isinstance(layer["config"].get("layers"),
                                                                 list)


def containers(config):
    """Every list of layers (the model's, each nested model's)."""
    found = [config["config"]["layers"]]
    for layer in config["config"]["layers"]:
        if _nested(layer):
            found += containers(layer)
    return found


def layer_configs(config):
    """Every layer dict of a model config, nested models' layers included."""
    return [layer for layers in containers(config) for layer in layers
            if isinstance(layer, dict)]


SETTINGS = ["kernel_size", "strides", "padding", "activation", "units", "use_bias", "epsilon",
            "max_value", "axis", "data_format", "depth_multiplier", "dilation_rate",
            "batch_shape", "batch_input_shape", "scale", "offset", "negative_slope",
            "filters", "center", "threshold", "groups", "function", "name", "layers",
            "output_layers"]
VALUES = [None, 0, -1, 1, 2, 3, 6, 2 ** 40, 1e308, float("nan"), "same", "valid", "x", "relu",
          "sigmoid", "softmax", "linear", "math.truediv", True, False, [], {}, [1, 1], [2, 2],
          [3, 3], [0, 0], [-1, 1], [2 ** 31, 2 ** 31], [[0, 1], [0, 1]], [[1, 1], [1, 1]],
          [None, 24, 24, 3], [None, 97, 96, 3], [None, 2 ** 40, 2 ** 40, 3],
          [None, 97, 97, 1], [None, 33, 33, 3], [0.5, 2.0, 1.0], ["conv1", 0, 0]]
CLASSES = ["Functional", "Sequential", "Lambda", "TFOpLambda", "Conv2D", "DepthwiseConv2D",
           "Dense", "ReLU", "ZeroPadding2D", "BatchNormalization", "InputLayer", "Rescaling",
           "TrueDivide", "Subtract", "RandomFlip", "Dropout", "Activation", "Softmax"]
NODES = [[], "x", [[["nope", 0, 0, {}]]], [{"args": [{"config": {"keras_history": ["conv1",
                                                                                   0, 0]}}]}],
         [{"args": [{"config": {"keras_history": ["nope", 0, 0]}}, 127.5]}],
         [[["input_layer", 0, 0, {"y": "x"}]]], [[[[[[[[[]]]]]]]]]]


@st.composite
def config_edits(draw, layer_count, container_count):
    """1-3 edits of a config: (kind, layer index or container index, argument)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "set", "set", "drop-setting", "drop", "duplicate",
                                     "swap", "retype", "rename", "nodes", "layer-not-dict",
                                     "config-not-dict", "nest", "model"]))
        index = draw(st.integers(0, layer_count - 1))
        if kind == "set":
            edits.append((kind, index, (draw(st.sampled_from(SETTINGS)),
                                        draw(st.sampled_from(VALUES)))))
        elif kind == "drop-setting":
            edits.append((kind, index, draw(st.sampled_from(SETTINGS))))
        elif kind in ("drop", "duplicate", "swap"):
            edits.append((kind, draw(st.integers(0, container_count - 1)),
                          draw(st.integers(0, 200))))
        elif kind == "retype":
            edits.append((kind, index, draw(st.sampled_from(CLASSES))))
        elif kind == "rename":
            edits.append((kind, index, draw(st.sampled_from(["conv1", "x", "", 5,
                                                             "conv_dw_1_bn"]))))
        elif kind == "nodes":
            edits.append((kind, index, draw(st.sampled_from(NODES))))
        elif kind == "nest":  # wrap the whole model in Functionals
            edits.append((kind, None, draw(st.sampled_from([1, 5, 50]))))
        elif kind == "model":
            edits.append((kind, None, draw(st.sampled_from(
                ["class_name", "no-layers", "layers-not-list", "list", "string", "deep"]))))
        else:
            edits.append((kind, index, None))
    return edits


DEEP = "[" * 100000 + "]" * 100000  # JSON nested past json's recursion limit


def apply_config_edits(config, edits):
    """The edited config (a JSON value: not always a dict), or DEEP."""
    config = json.loads(json.dumps(config))
    for kind, index, argument in edits:
        if not (isinstance(config, dict) and isinstance(config.get("config"), dict)
                and isinstance(config["config"].get("layers"), list)):
            break
        layers = layer_configs(config)
        layer = layers[index % len(layers)] if layers and index is not None else {}
        if kind == "set" and isinstance(layer.get("config"), dict):
            layer["config"][argument[0]] = argument[1]
        elif kind == "drop-setting" and isinstance(layer.get("config"), dict):
            layer["config"].pop(argument, None)
        elif kind in ("drop", "duplicate", "swap"):
            found = containers(config)
            container = found[index % len(found)]
            if not container:
                continue
            at = argument % len(container)
            if kind == "drop":
                del container[at]
            elif kind == "duplicate":
                container.insert(at, json.loads(json.dumps(container[at])))
            elif at + 1 < len(container):
                container[at], container[at + 1] = container[at + 1], container[at]
        elif kind == "retype":
            layer["class_name"] = argument
        elif kind == "rename":
            layer["name"] = argument
            if isinstance(layer.get("config"), dict):
                layer["config"]["name"] = argument
        elif kind == "nodes":
            layer["inbound_nodes"] = argument
        elif kind == "layer-not-dict":
            layer.clear()
        elif kind == "config-not-dict":
            layer["config"] = [1, 2]
        elif kind == "nest":
            for _ in range(argument):
                config = {"class_name": "Functional",
                          "config": {"name": "outer", "layers": [
                              {**config, "name": "inner", "inbound_nodes": []}]}}
        elif kind == "model":
            if argument == "class_name":
                config["class_name"] = 5
            elif argument == "no-layers":
                config["config"].pop("layers", None)
            elif argument == "layers-not-list":
                config["config"]["layers"] = {"a": 1}
            elif argument == "list":
                config = [config]
            elif argument == "string":
                config = "model"
            else:
                return DEEP
    return config


@pytest.mark.parametrize("name,count", [("functional.keras", 200), ("functional.h5", 120),
                                        ("sequential_tf2.h5", 120)])
def test_config_mutations(seeds, worker, name, count):
    config = seeds.config(name)
    layer_count, container_count = len(layer_configs(config)), len(containers(config))
    path = seeds.directory / f"config-{name}"

    @examples(count)
    @given(edits=config_edits(layer_count, container_count))
    def case(edits):
        edited = apply_config_edits(config, edits)
        if edited is DEEP:  # json.dumps could not write it: the text as it is
            seeds.write(name, path, config=None)
            _replace_config_text(seeds, name, path, DEEP)
        else:
            seeds.write(name, path, config=edited)
        run_keras_case(worker, seeds, path)

    with STATS.watching() as seen:
        case()
    outcomes = seen.outcomes["keras"]
    assert outcomes["refused"] >= at_least(count // 2) and outcomes["ok"] >= at_least(3), \
        (outcomes, sorted(seen.classes["keras"]))
    assert len(seen.classes["keras"]) >= at_least(15), sorted(seen.classes["keras"])


def _replace_config_text(seeds, name, path, text):
    if name.endswith(".keras"):
        with zipfile.ZipFile(io.BytesIO(seeds.data[name])) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        members["config.json"] = text.encode()
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, data)
    else:
        with h5py.File(path, "r+") as h5:
            h5.attrs["model_config"] = text


# --------------------------------------------------------------------- weights HDF5 edits

def datasets(h5):
    found = []
    h5.visititems(lambda key, item: found.append(key) if isinstance(item, h5py.Dataset)
                  else None)
    return sorted(found)


def groups_with_names(h5):
    found = [""] if "weight_names" in h5.attrs else []
    h5.visititems(lambda key, item: found.append(key) if isinstance(item, h5py.Group)
                  and "weight_names" in item.attrs else None)
    return sorted(found)


SHAPES = [(), (0,), (1,), (7,), (3, 3, 3, 8), (3, 3, 8, 1), (1, 1, 8, 16), (256, 4),
          (3, 3, 3, 8, 1), (2 ** 14, 2 ** 14)]


@st.composite
def weight_edits(draw):
    """1-3 edits of the weights HDF5: (kind, which dataset or group (an index), argument)."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "reshape", "dtype", "poison", "to-group",
                                     "string", "names", "drop-group"]))
        which = draw(st.integers(0, 10 ** 6))
        if kind == "reshape":
            argument = draw(st.sampled_from(SHAPES))
        elif kind == "dtype":
            argument = draw(st.sampled_from(["float16", "float64", "int32", "uint8",
                                             "complex64"]))
        elif kind == "poison":
            argument = draw(st.sampled_from([float("nan"), float("inf"), 3e38, -1.0, 0.0]))
        elif kind == "names":
            argument = draw(st.sampled_from(["missing", "ints", "empty", "huge", "reversed",
                                             "unknown", "scalar"]))
        else:
            argument = None
        edits.append((kind, which, argument))
    return edits


def apply_weight_edits(h5, edits):
    for kind, which, argument in edits:
        keys = datasets(h5)
        key = keys[which % len(keys)] if keys else None
        if kind == "drop" and key:
            del h5[key]
        elif kind == "reshape" and key:
            del h5[key]
            if argument == (2 ** 14, 2 ** 14):  # 1 GiB declared, nothing written
                h5.create_dataset(key, shape=argument, dtype="float32")
            else:
                h5[key] = np.random.default_rng(which).standard_normal(argument) \
                    .astype(np.float32)
        elif kind == "dtype" and key:
            value = h5[key][()]
            del h5[key]
            h5[key] = np.asarray(value).astype(argument)
        elif kind == "poison" and key and h5[key].size:
            value = np.array(h5[key][()], np.float32)
            value.reshape(-1)[which % value.size] = argument
            h5[key][...] = value
        elif kind == "to-group" and key:
            del h5[key]
            h5.create_group(key)
        elif kind == "string" and key:
            del h5[key]
            h5[key] = "weights"
        elif kind == "drop-group" and key and "/" in key:
            del h5[key.rsplit("/", 1)[0]]
        elif kind == "names":
            named = groups_with_names(h5)
            if not named:
                continue
            group = h5[named[which % len(named)]] if named[which % len(named)] else h5
            names = list(group.attrs["weight_names"])
            if argument == "missing":
                del group.attrs["weight_names"]
            elif argument == "ints":
                group.attrs["weight_names"] = np.arange(4)
            elif argument == "empty":
                group.attrs["weight_names"] = np.array([], dtype="S1")
            elif argument == "huge":
                group.attrs["weight_names"] = np.array([b"a/b"] * 5000)
            elif argument == "reversed":
                group.attrs["weight_names"] = names[::-1]
            elif argument == "unknown":
                group.attrs["weight_names"] = [b"nope/kernel"] + names[1:]
            else:
                group.attrs["weight_names"] = b"conv1/kernel"


@pytest.mark.parametrize("name,count", [("functional.keras", 120), ("functional.h5", 80),
                                        ("sequential_tf2.h5", 80)])
def test_weight_mutations(seeds, worker, name, count):
    path = seeds.directory / f"weights-{name}"

    @examples(count)
    @given(edits=weight_edits())
    def case(edits):
        seeds.write(name, path, edit_weights=lambda h5: apply_weight_edits(h5, edits))
        run_keras_case(worker, seeds, path)

    with STATS.watching() as seen:
        case()
    outcomes = seen.outcomes["keras"]
    assert outcomes["refused"] >= at_least(count // 2), \
        (outcomes, sorted(seen.classes["keras"]))


# ---------------------------------------------------------------------------- bytes, zip

def zip_structure(data):
    """Offsets of a zip outside its members' data: local headers and the central directory."""
    is_data = np.zeros(len(data), bool)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
            start = info.header_offset + 30 + name_length + extra_length
            is_data[start:start + info.compress_size] = True
    return np.flatnonzero(~is_data)


@pytest.mark.parametrize("name,count", [("functional.keras", 120), ("functional.h5", 80)])
def test_byte_mutations(seeds, worker, name, count):
    data = seeds.data[name]
    # The .h5's first 8 KiB hold its superblock, root group and model_config attribute.
    structure = zip_structure(data) if name.endswith(".keras") else np.arange(8192)
    path = seeds.directory / f"bytes-{name}"

    @examples(count)
    @given(edits=structural_byte_edits(len(data), structure))
    def case(edits):
        path.write_bytes(apply_byte_edits(data, edits))
        run_keras_case(worker, seeds, path)

    with STATS.watching() as seen:
        case()
    outcomes = seen.outcomes["keras"]
    assert outcomes["refused"] >= at_least(count // 5) and outcomes["ok"] >= at_least(5), \
        (outcomes, sorted(seen.classes["keras"]))


def _archive(members, compression=zipfile.ZIP_STORED):
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", compression) as archive:
        for member, data in members:
            archive.writestr(member, data)
    return stream.getvalue()


def _directory_entry(data, name):
    """Offset of the central directory entry of member `name` (its name at offset 46)."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(name)] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    return at


def _listed_archives(seeds):
    with zipfile.ZipFile(io.BytesIO(seeds.data["functional.keras"])) as archive:
        config = archive.read("config.json")
        weights = archive.read("model.weights.h5")
        metadata = ("metadata.json", archive.read("metadata.json"))
    deflated = _archive([("config.json", config), ("model.weights.h5", weights)],
                        zipfile.ZIP_DEFLATED)
    lying = bytearray(deflated)
    entry = _directory_entry(deflated, b"config.json")
    lying[entry + 24:entry + 28] = struct.pack("<I", 2 ** 31)  # its uncompressed size
    corrupt = bytearray(deflated)
    corrupt[60:70] = b"\xff" * 10  # inside config.json's compressed data
    return {
        "no config.json": (_archive([metadata, ("model.weights.h5", weights)]),
                           "the .keras archive has no config.json"),
        "no weights": (_archive([metadata, ("config.json", config)]),
                       "the .keras archive has no model.weights.h5"),
        "config.json claims 2 GiB": (bytes(lying), "config.json is 2147483648 bytes"),
        "damaged deflate data": (bytes(corrupt), "not a readable .keras archive"),
        "weights not HDF5": (_archive([("config.json", config),
                                       ("model.weights.h5", b"not hdf5" * 100)]),
                             "model.weights.h5: not a readable HDF5 file"),
        "config not JSON": (_archive([("config.json", b"{"), ("model.weights.h5", weights)]),
                            "config.json: not valid JSON"),
        "deflated converts": (deflated, None),
        "duplicated member (the last wins, as in zipfile)": (
            _archive([("config.json", b"{}"), ("config.json", config),
                      ("model.weights.h5", weights)]), None),
    }


def test_listed_archive_problems(seeds, worker):
    path = seeds.directory / "listed.keras"
    for case, (data, expected) in _listed_archives(seeds).items():
        path.write_bytes(data)
        answer = run_keras_case(worker, seeds, path)
        if expected is None:
            assert answer["outcome"] == "ok" and answer["comparison"] == "compared", \
                (case, answer)
        else:
            assert answer["outcome"] == "refused" and expected in answer["message"], \
                (case, answer)


def test_truncated_files(seeds, worker):
    """Every seed cut at 30 points: always refused, never converted."""
    for name in SEEDS:
        data = seeds.data[name]
        path = seeds.directory / f"cut-{name}"
        for offset in np.linspace(0, len(data) - 1, 30, dtype=int):
            path.write_bytes(data[:offset])
            answer = run_keras_case(worker, seeds, path)
            assert answer["outcome"] == "refused", (name, offset, answer)
