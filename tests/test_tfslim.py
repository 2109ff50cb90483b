"""TF-slim frozen graphs: the GraphDef reader, the tf-slim layout, and TF "SAME" padding.

Graphs are synthetic (tfslim_graphs.py writes them with TensorFlow's protobuf classes, not
with mobinumba's reader), at width 0.25 so that converting and running them is quick. The
reference is a float64 NumPy forward pass in TensorFlow's own conventions that pads
explicitly.
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import mobinumba
from conftest import random_batch, run_cli
from mobinumba.convert.graphdef import GraphDefError, constants, parse_graphdef
from tfslim_graphs import (DT_HALF, DT_INT32, const_node, mobilenet_graph, random_variables,
                           tensor_proto, tf_reference_logits)
from tensorboardX.proto import graph_pb2

TOLERANCE = 1e-4
# (height, width) of the runner tests: even and odd sides, so that every stride-2 layer
# meets both parities somewhere in the network, plus tiny and non-square inputs.
SIZES = [(224, 224), (225, 225), (97, 97), (96, 130), (33, 50), (1, 1)]


def assert_logits_close(actual, expected, what):
    difference = float(np.abs(actual - expected).max())
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    assert difference <= allowed, f"{what}: max |logit difference| {difference} > {allowed}"
    np.testing.assert_array_equal(actual.argmax(axis=1), expected.argmax(axis=1), err_msg=what)


@pytest.fixture(scope="module")
def variables():
    return random_variables(width=0.25, seed=5)


@pytest.fixture(scope="module")
def graph_file(variables, tmp_path_factory):
    """A width-0.25 frozen graph with a non-default epsilon, so reading it is visible."""
    path = tmp_path_factory.mktemp("graphs") / "mobilenet_v1_0.25.pb"
    path.write_bytes(mobilenet_graph(variables, eps=0.01))
    return path


@pytest.fixture(scope="module")
def converted(graph_file, tmp_path_factory):
    """The graph converted with no options: everything detected from the file."""
    output = tmp_path_factory.mktemp("converted") / "tf.h5"
    assert run_cli("convert", graph_file, "-o", output) == 0
    return mobinumba.load(output)


# ----------------------------------------------------------------------------- the reader

def test_reader_returns_every_constant_exactly(variables):
    data = mobilenet_graph(variables)
    found = constants(parse_graphdef(data))
    for name, array in variables.items():
        np.testing.assert_array_equal(found[name], array, err_msg=name)
        assert found[name].dtype == np.float32
    np.testing.assert_array_equal(found["MobilenetV1/Logits/SpatialSqueeze/shape"], [-1, 1001])
    assert found["MobilenetV1/Logits/SpatialSqueeze/shape"].dtype == np.int32


def test_reader_decodes_value_lists_halves_and_filled_constants():
    graph = graph_pb2.GraphDef()
    values = np.arange(-3, 3, dtype=np.float32).reshape(2, 3) / 4
    graph.node.extend([
        const_node("listed", values, as_values=True),
        const_node("halves", np.array([0.5, -2.0, 65504.0], np.float16), DT_HALF),
        const_node("ints", np.array([[-7, 2**31 - 1]], np.int32), DT_INT32, as_values=True),
        const_node("scalar", np.float32(0.001), as_values=True),
    ])
    filled = tensor_proto(np.zeros((2, 2), np.float32), as_values=True)
    del filled.float_val[:]
    filled.float_val.extend([1.5, 2.5])  # fewer values than elements: TF repeats the last
    graph.node.append(const_node("filled", None, proto=filled))
    found = constants(parse_graphdef(graph.SerializeToString()))
    np.testing.assert_array_equal(found["listed"], values)
    np.testing.assert_array_equal(found["halves"], np.array([0.5, -2.0, 65504.0], np.float16))
    np.testing.assert_array_equal(found["ints"], [[-7, 2**31 - 1]])
    assert found["scalar"].shape == () and found["scalar"] == np.float32(0.001)
    np.testing.assert_array_equal(found["filled"], [[1.5, 2.5], [2.5, 2.5]])


def test_reader_never_fails_with_anything_but_a_graphdef_error():
    """Truncations and byte flips of a small valid graph: a result, or GraphDefError."""
    graph = graph_pb2.GraphDef()
    graph.node.extend([const_node("w", np.ones((2, 3), np.float32)),
                       const_node("v", np.arange(4, dtype=np.float32), as_values=True),
                       const_node("i", np.array([1, -2], np.int32), DT_INT32, as_values=True),
                       const_node("h", np.array([1.0], np.float16), DT_HALF)])
    data = graph.SerializeToString()
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(600):
        mutated = bytearray(data[:rng.integers(1, len(data))] if trial % 3 == 0 else data)
        for _ in range(rng.integers(1, 4)):
            mutated[rng.integers(len(mutated))] = rng.integers(256)
        try:
            parse_graphdef(bytes(mutated))
            outcomes.add("parsed")
        except GraphDefError:
            outcomes.add("refused")
    assert outcomes == {"parsed", "refused"}


def test_reader_keeps_node_ops_inputs_and_attributes(variables):
    nodes = parse_graphdef(mobilenet_graph(variables))
    conv = next(node for node in nodes if node.op == "DepthwiseConv2dNative")
    assert conv.attrs["padding"] == "SAME" and conv.attrs["data_format"] == "NHWC"
    assert conv.inputs[1] == "MobilenetV1/Conv2d_1_depthwise/depthwise_weights"
    assert nodes[0].op == "Placeholder" and nodes[0].name == "input"


# -------------------------------------------------------------------------- the converter

def test_graph_is_detected_and_its_settings_are_read(converted, graph_file, capsys):
    info = converted.info
    assert info.source_layout == "tf-slim" and info.padding == "tf_same"
    assert (info.activation, info.mean, info.std, info.interpolation, info.crop_pct,
            info.resize) == ("relu6", (0.5,) * 3, (0.5,) * 3, "bilinear_tf", 0.875, "central_crop")
    assert info.width_multiplier == 0.25 and info.num_classes == 1001
    assert converted.labels[:3] == ["background", "tench", "goldfish"]
    assert converted.labels[1000] == "toilet tissue"
    assert info.source_file == "mobilenet_v1_0.25.pb" and len(info.source_sha256) == 64
    with h5py.File(converted.path) as h5:
        assert float(h5["layers/03_block02_dw/eps"][()]) == pytest.approx(0.01)
        assert h5["layers/00_conv_stem"].attrs["source_name"] == "MobilenetV1/Conv2d_0"


def test_convert_prints_settings_and_ignored_head(graph_file, tmp_path, capsys):
    assert run_cli("convert", graph_file, "-o", tmp_path / "m.h5", "--layout", "tf-slim") == 0
    out = capsys.readouterr().out
    assert "tf-slim layout, width 0.25, 1001 classes, 28 weight layers, relu6" in out
    assert "padding tf_same, bn eps 0.01" in out
    assert "ignored 2 constant(s) outside the MobileNetV1 scope: " \
           "final_training_ops/biases/final_biases" in out
    assert "self-check against PyTorch" in out


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tf_same_runner_matches_explicit_padding_reference(converted, variables, size):
    x = np.random.default_rng(size[0]).standard_normal((2, 3, *size)).astype(np.float32)
    expected = tf_reference_logits(variables, x, eps=0.01)
    assert_logits_close(converted(x), expected, f"tf_same {size}")


def test_forced_torch_padding_is_honoured_and_changes_the_logits(converted, graph_file,
                                                                 variables, tmp_path):
    output = tmp_path / "torch_padding.h5"
    assert run_cli("convert", graph_file, "-o", output, "--padding", "torch") == 0
    forced = mobinumba.load(output)
    assert forced.info.padding == "torch"
    x = random_batch(2, 224, seed=11)
    assert_logits_close(forced(x), tf_reference_logits(variables, x, 0.01, "symmetric"),
                        "forced torch padding")
    # Same weights, different padding: on a 224 input every stride-2 layer meets an even side.
    difference = np.abs(forced(x) - converted(x)).max()
    assert difference > 0.05 * np.abs(converted(x)).max(), difference


def test_fused_batch_norm_epsilon_and_explicit_padding_graphs(variables, tmp_path):
    fused = tmp_path / "fused.pb"
    fused.write_bytes(mobilenet_graph(variables, eps=0.002, fused=True))
    assert run_cli("convert", fused, "-o", tmp_path / "fused.h5") == 0
    model = mobinumba.load(tmp_path / "fused.h5")
    x = random_batch(1, 64, seed=2)
    assert_logits_close(model(x), tf_reference_logits(variables, x, 0.002), "fused eps")
    explicit = tmp_path / "explicit.pb"
    explicit.write_bytes(mobilenet_graph(variables, padding="VALID"))
    assert run_cli("convert", explicit, "-o", tmp_path / "explicit.h5") == 0
    model = mobinumba.load(tmp_path / "explicit.h5")
    assert model.info.padding == "torch"
    assert_logits_close(model(x), tf_reference_logits(variables, x, 1e-3, "symmetric"),
                        "explicit padding")


def test_options_override_what_the_graph_states(graph_file, tmp_path):
    output = tmp_path / "m.h5"
    assert run_cli("convert", graph_file, "-o", output, "--bn-eps", "0.001", "--activation",
                   "relu", "--labels", "none", "--interpolation", "bicubic", "--no-check") == 0
    info = mobinumba.load(output).info
    assert (info.activation, info.interpolation) == ("relu", "bicubic")
    assert mobinumba.load(output).labels is None
    with h5py.File(output) as h5:
        assert float(h5["layers/00_conv_stem/eps"][()]) == pytest.approx(0.001)


def _bad_graphs(directory, variables):
    """(name, path, words expected in the message) for each kind of bad graph."""
    cases = []

    def save(name, data):
        (directory / name).write_bytes(data)
        return directory / name

    good = mobilenet_graph(variables)
    cases.append(("truncated", save("truncated.pb", good[:len(good) // 2]),
                  "not a readable TensorFlow GraphDef"))
    cases.append(("garbage", save("garbage.pb", np.random.default_rng(0).bytes(4096)),
                  "not a readable TensorFlow GraphDef"))
    cases.append(("text", save("notes.pb", b"this is not a graph\n"), "notes.pb: not a"))
    cases.append(("empty", save("empty.pb", b""), "no nodes"))
    resnet = graph_pb2.GraphDef()
    resnet.node.extend([const_node("resnet_v1_50/conv1/weights", np.zeros((7, 7, 3, 64))),
                        const_node("resnet_v1_50/logits/biases", np.zeros(1000))])
    cases.append(("not a MobileNetV1", save("resnet.pb", resnet.SerializeToString()),
                  "not a TF-slim MobileNetV1 graph (no constant MobilenetV1/Conv2d_0/weights; "
                  "constants: resnet_v1_50/conv1/weights"))
    missing = {k: v for k, v in variables.items() if "Conv2d_7_pointwise/BatchNorm/gamma" not in k}
    cases.append(("missing variable", save("missing.pb", mobilenet_graph(missing)),
                  "missing key 'MobilenetV1/Conv2d_7_pointwise/BatchNorm.weight'"))
    wrong = dict(variables)
    wrong["MobilenetV1/Conv2d_3_depthwise/depthwise_weights"] = np.zeros((3, 3, 8, 1),
                                                                         np.float32)
    cases.append(("wrong shape", save("wrong.pb", mobilenet_graph(wrong)),
                  "MobilenetV1/Conv2d_3_depthwise.weight has shape (8, 1, 3, 3), expected "
                  "(32, 1, 3, 3)"))
    extra = dict(variables)
    extra["MobilenetV1/Conv2d_14_pointwise/weights"] = np.zeros((1, 1, 256, 256), np.float32)
    cases.append(("extra layer", save("extra.pb", mobilenet_graph(extra)),
                  "unexpected key(s) for MobileNetV1: MobilenetV1/Conv2d_14_pointwise.weight"))
    nan = dict(variables)
    nan["MobilenetV1/Logits/Conv2d_1c_1x1/biases"] = np.full(1001, np.nan, np.float32)
    cases.append(("NaN", save("nan.pb", mobilenet_graph(nan)),
                  "MobilenetV1/Logits/Conv2d_1c_1x1.bias contains NaN"))
    mixed = graph_pb2.GraphDef.FromString(mobilenet_graph(variables, eps=1e-3))
    mixed.node.append(const_node("MobilenetV1/MobilenetV1/Conv2d_9/BatchNorm/batchnorm/add/y",
                                 np.float32(1e-5)))
    cases.append(("mixed eps", save("mixed.pb", mixed.SerializeToString()),
                  "batch-norm epsilons differ between layers (1e-05, 0.001)"))
    cases.append(("VALID without Pad", save("valid.pb", mobilenet_graph(variables).replace(
        b"SAME", b"XXXX")), "convolutions use padding XXXX"))
    return cases


def test_bad_graphs_fail_cleanly(variables, tmp_path, capsys):
    sources = tmp_path / "sources"
    sources.mkdir()
    outputs = tmp_path / "out"
    outputs.mkdir()
    for name, path, words in _bad_graphs(sources, variables):
        assert run_cli("convert", path, "-o", outputs / "x.h5") == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mobinumba: error: "), (name, err)
        assert words in err, (name, err)
        assert os.listdir(outputs) == [], name


def test_bad_graph_from_the_console_script(variables, tmp_path):
    cases = _bad_graphs(tmp_path, variables)
    for name, path, words in [cases[0], cases[4]]:
        result = subprocess.run([sys.executable, "-m", "mobinumba.cli", "convert", str(path),
                                 "-o", str(tmp_path / "x.h5")], capture_output=True, text=True)
        assert result.returncode == 1, name
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "x.h5").exists()


def test_padding_override_skips_an_unknown_graph_padding(variables, tmp_path):
    path = tmp_path / "valid.pb"
    path.write_bytes(mobilenet_graph(variables).replace(b"SAME", b"XXXX"))
    assert run_cli("convert", path, "-o", tmp_path / "m.h5", "--padding", "tf_same",
                   "--no-check") == 0
    assert mobinumba.load(tmp_path / "m.h5").info.padding == "tf_same"
