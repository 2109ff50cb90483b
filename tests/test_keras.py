"""Keras MobileNets: files written by Keras 3 here, converted, run, compared with Keras.

Models (random conv weights, randomized batch-norm statistics), written once per session:
- top: keras.applications.MobileNet(alpha=0.5, 161x161, 7 classes), the original top
  (conv_preds), saved as .h5 (Keras 3 names) and .keras, and rewritten with h5py into the
  tf.keras 2 layout (TF 2.21 ships Keras 3 only, which cannot write it): weight names with
  `:0`, a depthwise kernel named `depthwise_kernel:0`, Keras 2 `inbound_nodes` lists and
  `batch_input_shape`, as keras 2's legacy saving (hdf5_format.save_weights_to_hdf5_group)
  wrote them.
- tuned: include_top=False base (alpha 1.0, 224) + GlobalAveragePooling2D -> Dropout ->
  Dense(5, softmax), .keras and .h5.
- small: alpha 0.25, 97x97 + GlobalAveragePooling2D -> Dense(3) linear: the wrong-padding
  check and the refusals.
- nested (the TensorFlow transfer-learning tutorial's shapes): one include_top=False base
  (alpha 0.25, 97x97) used as a nested model in a Functional `input -> preprocess_input ->
  base(x, training=False) -> GAP -> Dropout -> Dense(1)` (a binary classifier's logit, as
  the tutorial's) and in a `Sequential([Input,
  Rescaling(1/255), RandomFlip, base, GAP, Dense(4)])`, each as .keras, Keras 3 .h5 and the
  tf.keras 2 .h5 (nested weights under the nested model's group). Keras gets raw pixels
  (0..255); the in-graph scaling must become the stored mean/std, applied once.
Parity: our logits against Keras's (conv_preds / the linear Dense) or our softmax against
Keras's softmax, on the same preprocessed input, max |difference| / max(1, max |Keras|).
"""
import json
import shutil

import h5py
import numpy as np
import pytest

import mobinumba
from conftest import run_cli
from mobinumba.convert import convert_checkpoint
from mobinumba.errors import CheckpointError

keras = pytest.importorskip("keras")

TOLERANCE = 1e-4  # float32 against float32 over 28 layers, relative to the logit scale


def randomize_batch_norms(model, seed):
    """Randomized batch norms that keep the signal alive: the moving statistics are those
    of a calibration batch (one training-mode call with momentum 0), then perturbed, and
    gamma, beta random. With Keras's defaults (mean 0, var 1) and Glorot kernels every
    image gives the same logits, a comparison that could not fail on most weights."""
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    size = model.input_shape[1]
    model(images(size, seed + 100, batch=8), training=True)
    for layer in norms:
        _, _, mean, var = layer.get_weights()
        c = mean.shape[0]
        layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                           mean + rng.normal(0, 0.1, c) * np.sqrt(var),
                           var * rng.uniform(0.7, 1.3, c)])


def tuned_model(alpha, size, classes, activation, seed):
    keras.utils.set_random_seed(seed)
    base = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=alpha,
                                        weights=None, include_top=False)
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(classes, activation=activation)(x)
    model = keras.Model(base.input, x)
    randomize_batch_norms(model, seed)
    return model


def to_tf_keras_2(source, target):
    """Rewrite a Keras 3 legacy .h5 into tf.keras 2's layout (see the module docstring)."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as h5:
        config = json.loads(h5.attrs["model_config"])
        to_tf_keras_2_config(config["config"]["layers"])
        h5.attrs["model_config"] = json.dumps(config)
        h5.attrs["keras_version"] = "2.15.0"
        for group in h5["model_weights"].values():
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in group.attrs["weight_names"]]
            renamed = []
            for weight in names:  # "conv_dw_1/kernel" in the layer's (or nested model's) group
                new = weight + ":0"
                if weight.split("/")[-2].startswith("conv_dw_") and "_bn/" not in weight:
                    new = weight.replace("/kernel", "/depthwise_kernel") + ":0"
                group.move(weight, new)
                renamed.append(new.encode())
            if renamed:
                group.attrs["weight_names"] = renamed


def to_tf_keras_2_config(layers):
    """Keras 2 inbound_nodes and batch_input_shape, in nested models too; preprocess_input's
    TrueDivide / Subtract as the TFOpLambda layers tf.keras 2 made (function "math.truediv",
    the constant as keyword `y` of the inbound node)."""
    for layer in layers:
        nodes = layer.get("inbound_nodes", [])
        layer["inbound_nodes"] = [[[arg["config"]["keras_history"][0], 0, 0, {}]
                                   for arg in node["args"][:1]] for node in nodes]
        if layer["class_name"] in ("TrueDivide", "Subtract"):
            function = {"TrueDivide": "math.truediv", "Subtract": "math.subtract"}
            layer["config"]["function"] = function[layer["class_name"]]
            layer["class_name"] = "TFOpLambda"
            layer["inbound_nodes"] = [[[nodes[0]["args"][0]["config"]["keras_history"][0],
                                        0, 0, {"y": nodes[0]["args"][1], "name": None}]]]
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_input_shape"] = layer["config"].pop("batch_shape")
        if "layers" in layer["config"]:
            to_tf_keras_2_config(layer["config"]["layers"])


class KerasFiles:
    """The session's Keras files in `directory`, Keras's outputs on `x` (by input size)."""

    def __init__(self, directory):
        self.directory = directory
        self.x = {size: images(size) for size in (97, 161, 224)}
        self.expected = {}

    def write_small(self):
        small = tuned_model(0.25, 97, 3, None, 3)
        small.save(self.directory / "small.keras")
        small.save(self.directory / "small.h5")
        self.expected["small"] = np.asarray(small(self.x[97]))  # logits (linear head)

    def write_nested(self):
        keras.utils.set_random_seed(6)
        base = keras.applications.MobileNet(input_shape=(97, 97, 3), alpha=0.25,
                                            weights=None, include_top=False)
        randomize_batch_norms(base, 6)
        inputs = keras.Input((97, 97, 3))
        x = keras.applications.mobilenet.preprocess_input(inputs)  # x / 127.5 - 1 in graph
        x = base(x, training=False)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(0.2)(x)
        functional = keras.Model(inputs, keras.layers.Dense(1)(x))  # a binary logit
        sequential = keras.Sequential([keras.Input((97, 97, 3)),
                                       keras.layers.Rescaling(1 / 255),
                                       keras.layers.RandomFlip("horizontal"), base,
                                       keras.layers.GlobalAveragePooling2D(),
                                       keras.layers.Dense(4)])
        self.pixels = np.rint((self.x[97] + 1) * 127.5).astype(np.uint8)  # (2, 97, 97, 3)
        for name, model in (("functional", functional), ("sequential", sequential)):
            model.save(self.directory / f"{name}.keras")
            model.save(self.directory / f"{name}.h5")
            to_tf_keras_2(self.directory / f"{name}.h5", self.directory / f"{name}_tf2.h5")
            self.expected[name] = np.asarray(model(self.pixels.astype(np.float32),
                                                   training=False))  # RandomFlip off

    def write_large(self):
        keras.utils.set_random_seed(1)
        top = keras.applications.MobileNet(input_shape=(161, 161, 3), alpha=0.5,
                                           weights=None, classes=7)
        randomize_batch_norms(top, 1)
        top.save(self.directory / "top.h5")
        top.save(self.directory / "top.keras")
        to_tf_keras_2(self.directory / "top.h5", self.directory / "top_tf2.h5")
        # the logits are conv_preds' output (before Reshape and softmax)
        self.expected["top"] = np.asarray(keras.Model(
            top.input, top.get_layer("conv_preds").output)(self.x[161])).reshape(2, -1)
        tuned = tuned_model(1.0, 224, 5, "softmax", 2)
        tuned.save(self.directory / "tuned.keras")
        tuned.save(self.directory / "tuned.h5")
        self.expected["tuned"] = np.asarray(tuned(self.x[224]))  # softmax probabilities


def images(size, seed=0, batch=2):
    """Preprocessed NHWC images in [-1, 1] unlike each other at large scale (white noise
    would average out: every image would give the same pooled features)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (batch, 4, 4, 3))
    index = np.arange(size) * 4 // size
    smooth = coarse[:, index][:, :, index]
    return np.clip(smooth + rng.normal(0, 0.2, smooth.shape), -1, 1).astype(np.float32)


@pytest.fixture(scope="session")
def small_files(tmp_path_factory):
    """The fast tier's file (alpha 0.25, 97x97, linear Dense head), .keras and .h5."""
    files = KerasFiles(tmp_path_factory.mktemp("keras"))
    files.write_small()
    return files


@pytest.fixture(scope="session")
def nested_files(small_files):
    """The nested models (one base, two wrappers, three formats each: ~5 s)."""
    small_files.write_nested()
    return small_files


@pytest.fixture(scope="session")
def files(small_files):
    """Also the slow tier's: the original top at alpha 0.5, 161x161 in three formats, and
    a fine-tuned alpha 1.0, 224x224 softmax head (~10 s to build, save and run in Keras)."""
    small_files.write_large()
    return small_files


def converted(files, name, **options):
    output = files.directory / f"{name}.mobinumba.h5"
    convert_checkpoint(files.directory / name, output, force=True, check=True, **options)
    return mobinumba.load(output)


def ours(model, x):
    return model(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def relative_difference(actual, expected):
    # Not a degenerate comparison: the two images give different outputs.
    assert np.abs(expected[0] - expected[1]).max() > 0.05 * np.abs(expected).max()
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


@pytest.mark.slow  # the session's larger models
@pytest.mark.parametrize("name", ["top.h5", "top.keras", "top_tf2.h5"])
def test_original_top_matches_keras_at_an_odd_size(files, name):
    model = converted(files, name)
    assert (model.info.padding, model.info.activation, model.info.input_size) == \
        ("keras", "relu6", 161)
    assert model.info.width_multiplier == 0.5 and model.info.num_classes == 7
    logits = ours(model, files.x[161])
    assert np.abs(files.expected["top"]).max() > 0.1  # not a degenerate comparison
    assert relative_difference(logits, files.expected["top"]) < TOLERANCE


@pytest.mark.slow  # alpha 1.0 at 224
@pytest.mark.parametrize("name", ["tuned.keras", "tuned.h5"])
def test_fine_tuned_softmax_head_matches_keras(files, name):
    model = converted(files, name)
    assert model.info.num_classes == 5 and model.info.width_multiplier == 1.0
    logits = ours(model, files.x[224]).astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    assert relative_difference(probabilities, files.expected["tuned"]) < TOLERANCE


@pytest.mark.parametrize("name", ["small.keras", "small.h5"])
def test_linear_head_and_preprocessing(small_files, name):
    files = small_files
    model = converted(files, name)
    assert relative_difference(ours(model, files.x[97]), files.expected["small"]) < TOLERANCE
    info = model.info
    assert (info.mean, info.std, info.resize, info.crop_pct, info.interpolation) == \
        ((0.5,) * 3, (0.5,) * 3, "central_crop", 1.0, "bilinear")
    assert info.source_layout == "keras"


NESTED = {"functional": (0.5, 0.5, 2), "sequential": (0.0, 1.0, 4)}  # mean, std, classes


@pytest.mark.parametrize("name", [
    "functional.keras", "sequential_tf2.h5",
    pytest.param("functional.h5", marks=pytest.mark.slow),
    pytest.param("functional_tf2.h5", marks=pytest.mark.slow),
    pytest.param("sequential.keras", marks=pytest.mark.slow),
    pytest.param("sequential.h5", marks=pytest.mark.slow)])
def test_nested_base_with_in_graph_preprocessing_matches_keras(nested_files, name):
    """Keras on raw pixels against ours on the same images through the stored
    preprocessing: equal only if the in-graph scaling became mean/std and runs once. The
    functional model's one logit z becomes two classes (0, z)."""
    files = nested_files
    model = converted(files, name)
    model_name = name.split("_")[0].split(".")[0]
    mean, std, classes = NESTED[model_name]
    info = model.info
    assert (info.mean, info.std, info.input_size, info.num_classes) == \
        ((mean,) * 3, (std,) * 3, 97, classes)
    from PIL import Image
    x = np.stack([model.preprocess(Image.fromarray(image)) for image in files.pixels])
    logits, expected = model(x), files.expected[model_name]
    if classes == 2:
        assert np.all(logits[:, 0] == 0)
        assert relative_difference(logits[:, 1:], expected) < TOLERANCE
        sigmoid = 1 / (1 + np.exp(-expected[:, 0].astype(np.float64)))
        probabilities = [[p.probability for p in sorted(row, key=lambda p: p.index)]
                         for row in model.top_k(logits, 2)]
        assert np.abs(np.asarray(probabilities)[:, 1] - sigmoid).max() < TOLERANCE
    else:
        assert relative_difference(logits, expected) < TOLERANCE


def test_forcing_tf_same_padding_on_an_odd_size_fails_the_self_check(small_files, tmp_path):
    files = small_files
    output = tmp_path / "wrong.h5"
    with pytest.raises(CheckpointError, match="self-check failed"):
        convert_checkpoint(files.directory / "small.keras", output, padding="tf_same",
                           check=True)
    assert not output.exists()
    # The same override without the check writes a model that disagrees with Keras: the
    # check is what catches it.
    convert_checkpoint(files.directory / "small.keras", output, padding="tf_same",
                       check=False)
    wrong = ours(mobinumba.load(output), files.x[97])
    assert relative_difference(wrong, files.expected["small"]) > 100 * TOLERANCE


def test_forcing_relu_fails_the_self_check(small_files, tmp_path):
    files = small_files
    with pytest.raises(CheckpointError, match="self-check failed"):
        convert_checkpoint(files.directory / "small.keras", tmp_path / "relu.h5",
                           activation="relu", check=True)


def _refusal(path, tmp_path):
    with pytest.raises(CheckpointError) as error:
        convert_checkpoint(path, tmp_path / "out.h5", check=False)
    assert not (tmp_path / "out.h5").exists()
    return str(error.value)


@pytest.mark.slow  # builds three more Keras models (~10 s)
def test_refusals_name_what_the_model_is(files, tmp_path):
    keras.utils.set_random_seed(4)
    v2 = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)
    v2.save(tmp_path / "v2.keras")
    message = _refusal(tmp_path / "v2.keras", tmp_path)
    assert "'mobilenetv2_0.35_96' is not keras.applications' MobileNetV1" in message
    keras.Sequential([keras.Input((96, 96, 3)), v2]).save(tmp_path / "v2_nested.keras")
    message = _refusal(tmp_path / "v2_nested.keras", tmp_path)
    assert "of nested model 'mobilenetv2_0.35_96'" in message

    sigmoid = tuned_model(0.25, 97, 3, "sigmoid", 5)
    sigmoid.save(tmp_path / "sigmoid.keras")
    assert "activation 'sigmoid'" in _refusal(tmp_path / "sigmoid.keras", tmp_path)

    base = keras.applications.MobileNet(input_shape=(97, 97, 3), alpha=0.25, weights=None,
                                        include_top=False)
    base.save(tmp_path / "base.h5")
    assert "without a classifier" in _refusal(tmp_path / "base.h5", tmp_path)

    base.save_weights(tmp_path / "base.weights.h5")
    assert "save the whole model" in _refusal(tmp_path / "base.weights.h5", tmp_path)


def test_predict_and_inspect_say_convert_first(small_files, capsys):
    directory = small_files.directory
    for command in (["predict", "--weights", directory / "small.h5", directory / "small.h5"],
                    ["inspect", directory / "small.keras"]):
        assert run_cli(*command) == 1
        error = capsys.readouterr().err
        assert "this is a Keras" in error and "convert it first: mobinumba convert" in error


def test_cli_converts_a_keras_file(small_files, tmp_path, capsys):
    output = tmp_path / "cli.h5"
    assert run_cli("convert", small_files.directory / "small.h5", "-o", output, "--labels",
                   "none") == 0
    out = capsys.readouterr().out
    assert "keras layout" in out and "padding keras" in out and "self-check" in out
    assert mobinumba.load(output).info.input_size == 97


def test_inputs_too_small_for_keras_padding_are_refused(small_files, tmp_path):
    """ZeroPadding2D((0, 1)) + "valid" at stride 2 turns a 1-pixel map into an empty one:
    under 31 pixels the network has no output (Keras refuses under 32); not a crash."""
    model = converted(small_files, "small.keras")
    with pytest.raises(mobinumba.InputError, match="30x30 pixels is too small .* block12_dw"):
        model(np.zeros((1, 3, 30, 30), np.float32))
    assert np.isfinite(model(np.zeros((1, 3, 31, 31), np.float32))).all()
