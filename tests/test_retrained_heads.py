"""retrain.py ("TensorFlow for Poets") graphs: a TF-slim MobileNetV1 plus a retrained head.

Graphs are written with TensorFlow's protobuf classes (tfslim_graphs.py) with a real
retrained_graph.pb's node names and edges (Predictions/Reshape -> PlaceholderWithDefault ->
MatMul -> Add -> Softmax `final_result`), at width 0.25. The reference is the graph's own
computation unfolded, in float64 NumPy: TF's forward pass to the 1001 logits
(tfslim_graphs.tf_reference_logits), then logits @ final_weights + final_biases, then the
softmax. The head-reading path is fuzzed with structural edits of the head's nodes, judged by
a small NumPy evaluator of the edited graph's head ops.
"""
import os

import numpy as np
import pytest
from PIL import Image

import mobinumba
from conftest import random_batch, run_cli
from mobinumba.convert import convert_checkpoint
from mobinumba.convert.graphdef import constants, parse_graphdef
from mobinumba.convert.retrained import apply_head, find_head
from mobinumba.errors import CheckpointError
from mobinumba.preprocess import preprocess_image
from tensorboardX.proto import graph_pb2
from tfslim_graphs import (DT_INT32, const_node, mobilenet_graph, op_node, random_variables,
                           retrain_head, tf_reference_logits)

TOLERANCE = 1e-4
CLASSES = 5
MATMUL = "final_training_ops/Wx_plus_b/MatMul"


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def assert_close(actual, expected, what):
    difference = float(np.abs(actual - expected).max())
    allowed = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    assert difference <= allowed, f"{what}: max |difference| {difference} > {allowed}"
    return difference


@pytest.fixture(scope="module")
def variables():
    return random_variables(width=0.25, seed=7)


@pytest.fixture(scope="module")
def head():
    return retrain_head(CLASSES)


@pytest.fixture(scope="module")
def graph_file(variables, head, tmp_path_factory):
    path = tmp_path_factory.mktemp("retrained") / "retrained_graph.pb"
    path.write_bytes(mobilenet_graph(variables, head=head))
    return path


@pytest.fixture(scope="module")
def converted(graph_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("retrained_h5") / "retrained.h5"
    assert run_cli("convert", graph_file, "-o", output) == 0
    return mobinumba.load(output)


def unfolded_logits(variables, head, x):
    """float64 (N, n): the graph's Wx_plus_b for x, every stage as TensorFlow runs it."""
    return tf_reference_logits(variables, x) @ head[0].astype(np.float64) + head[1]


# ------------------------------------------------------------------------------ converting

def test_retrained_head_is_the_default_and_matches_the_unfolded_graph(converted, variables,
                                                                      head):
    assert converted.info.num_classes == CLASSES and converted.labels is None
    for size, seed in ((224, 1), (97, 2)):
        x = random_batch(3, size, seed=seed)
        expected = unfolded_logits(variables, head, x)
        logits = converted(x)
        assert_close(logits, expected, f"logits {size}")
        np.testing.assert_array_equal(logits.argmax(axis=1), expected.argmax(axis=1))
        ours = converted.top_k(logits, CLASSES)
        for row, probabilities in zip(ours, softmax(expected)):
            for prediction in row:
                assert prediction.probability == pytest.approx(
                    probabilities[prediction.index], abs=1e-5)


def test_convert_says_which_head_and_stores_retrain_preprocessing(graph_file, tmp_path, capsys):
    output = tmp_path / "m.h5"
    assert run_cli("convert", graph_file, "-o", output) == 0
    out = capsys.readouterr().out
    assert f"{CLASSES} classes, 28 weight layers" in out
    assert (f"head: retrained (final_training_ops/Wx_plus_b/MatMul -> final_result, {CLASSES} "
            f"classes), folded into MobilenetV1/Logits/Conv2d_1c_1x1") in out
    assert "ignored" not in out and "self-check against PyTorch" in out
    info = mobinumba.load(output).info
    assert (info.resize, info.crop_pct, info.interpolation, info.mean, info.std) == (
        "whole_image", 1.0, "bilinear_tf", (0.5,) * 3, (0.5,) * 3)


def test_head_imagenet_gives_the_imagenet_logits(graph_file, variables, tmp_path, capsys):
    output = tmp_path / "imagenet.h5"
    assert run_cli("convert", graph_file, "-o", output, "--head", "imagenet") == 0
    out = capsys.readouterr().out
    assert "head: ImageNet logits (MobilenetV1/Logits/Conv2d_1c_1x1, 1001 classes)" in out
    assert ("ignored 2 constant(s) outside the MobileNetV1 scope: "
            "final_training_ops/biases/final_biases, final_training_ops/weights/final_weights"
            in out)
    model = mobinumba.load(output)
    assert model.info.num_classes == 1001 and model.labels[1] == "tench"
    assert (model.info.resize, model.info.crop_pct) == ("central_crop", 0.875)  # TF-slim's
    x = random_batch(2, 224, seed=4)
    assert_close(model(x), tf_reference_logits(variables, x), "ImageNet logits")


def test_labels_file_must_have_one_line_per_class(graph_file, tmp_path, capsys):
    labels = tmp_path / "retrained_labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(CLASSES)))
    assert run_cli("convert", graph_file, "-o", tmp_path / "m.h5", "--labels", labels,
                   "--no-check") == 0
    assert mobinumba.load(tmp_path / "m.h5").labels == [f"class {i}" for i in range(CLASSES)]
    capsys.readouterr()
    labels.write_text("".join(f"class {i}\n" for i in range(CLASSES - 1)))
    for option, words in ((labels, f"{CLASSES - 1} labels, but the checkpoint has {CLASSES} "
                                    f"classes"),
                          ("imagenet", "retrained head has its own 5 classes; give its labels "
                                       "file (retrained_labels.txt) or use --head imagenet")):
        assert run_cli("convert", graph_file, "-o", tmp_path / "n.h5", "--labels", option) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
        assert not (tmp_path / "n.h5").exists()


def _edited(variables, head, edit):
    """A retrained graph's bytes after edit(graph_pb2.GraphDef) changed its head."""
    graph = graph_pb2.GraphDef.FromString(mobilenet_graph(variables, head=head))
    edit(graph)
    return graph.SerializeToString()


def _node(graph, name):
    return next(node for node in graph.node if node.name == name)


def _wrong_heads(variables, head):
    """(name, graph bytes, words of the refusal) for heads mobinumba must not convert."""
    weights, bias = head

    def on_softmax(graph):
        graph.node.append(op_node("MobilenetV1/Predictions/Softmax", "Softmax",
                                  ["MobilenetV1/Predictions/Reshape"]))
        _node(graph, "input_1/BottleneckInputPlaceholder").input[0] = \
            "MobilenetV1/Predictions/Softmax"

    def on_features(graph):
        _node(graph, "input_1/BottleneckInputPlaceholder").input[0] = \
            "MobilenetV1/Logits/AvgPool_1a/AvgPool"

    def second_layer(graph):
        graph.node.append(op_node("extra/MatMul2", "Relu", ["final_training_ops/Wx_plus_b/add"]))

    def two_heads(graph):
        graph.node.append(op_node("other/MatMul", "MatMul",
                                  ["input_1/BottleneckInputPlaceholder",
                                   "final_training_ops/weights/final_weights"]))

    def transposed(graph):
        _node(graph, MATMUL).attr["transpose_b"].b = True

    return [
        ("weights on 1000 logits", mobilenet_graph(variables, head=(weights[:1000], bias)),
         f"head weights final_training_ops/weights/final_weights have shape (1000, {CLASSES}), "
         f"expected (1001, n) on the 1001 ImageNet logits"),
        ("bias of the wrong length", mobilenet_graph(variables, head=(weights, bias[:3])),
         f"head bias final_training_ops/biases/final_biases has shape (3,), expected "
         f"({CLASSES},)"),
        ("head on the probabilities", _edited(variables, head, on_softmax),
         "head final_training_ops/Wx_plus_b/MatMul reads MobilenetV1/Predictions/Softmax "
         "(Softmax), not the ImageNet logits of MobilenetV1/Logits/Conv2d_1c_1x1"),
        ("head on the pooled features", _edited(variables, head, on_features),
         "reads MobilenetV1/Logits/AvgPool_1a/AvgPool (AvgPool), not the ImageNet logits"),
        ("a second layer after it", _edited(variables, head, second_layer),
         "head final_training_ops/Wx_plus_b/add feeds extra/MatMul2 (Relu); mobinumba "
         "converts one affine layer and its softmax"),
        ("two heads", _edited(variables, head, two_heads),
         "2 MatMul ops outside MobilenetV1/ (final_training_ops/Wx_plus_b/MatMul, "
         "other/MatMul)"),
        ("transposed weights", _edited(variables, head, transposed),
         "transposes an operand"),
        ("NaN weights", mobilenet_graph(variables, head=(np.full_like(weights, np.nan), bias)),
         "head constant final_training_ops/weights/final_weights contains NaN or Inf"),
    ]


def test_wrong_heads_are_refused_in_one_line(variables, head, tmp_path, capsys):
    outputs = tmp_path / "out"
    outputs.mkdir()
    for name, data, words in _wrong_heads(variables, head):
        path = tmp_path / "graph.pb"
        path.write_bytes(data)
        assert run_cli("convert", path, "-o", outputs / "x.h5") == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("mobinumba: error: "), (name, err)
        assert words in err, (name, err)
        assert os.listdir(outputs) == [], name
        # The ImageNet logits under a broken head stay reachable.
        if name != "weights on 1000 logits":
            assert run_cli("convert", path, "-o", outputs / "x.h5", "--head", "imagenet",
                           "--no-check") == 0, name
            os.unlink(outputs / "x.h5")
            capsys.readouterr()


def test_head_option_refused_where_there_is_no_head(variables, tmp_path, capsys):
    plain = tmp_path / "plain.pb"
    plain.write_bytes(mobilenet_graph(variables))  # head constants, no ops using them
    assert run_cli("convert", plain, "-o", tmp_path / "m.h5", "--head", "retrained") == 1
    assert "--head retrained, but the graph has no retrain.py head" in capsys.readouterr().err
    assert run_cli("convert", plain, "-o", tmp_path / "m.h5", "--no-check") == 0
    assert mobinumba.load(tmp_path / "m.h5").info.num_classes == 1001  # as before


def test_self_check_catches_a_wrong_fold(graph_file, tmp_path, monkeypatch):
    """The check's reference applies the head unfolded, so a fold that drops the classifier's
    bias (b1 @ W2) fails the conversion instead of passing."""
    from mobinumba import convert as convert_package
    from mobinumba.convert import retrained

    def fold_without_classifier_bias(classifier, head):
        folded = retrained.fold(classifier, head)
        return retrained.replace(folded, bias=head.bias.copy())

    monkeypatch.setattr(convert_package, "fold", fold_without_classifier_bias)
    with pytest.raises(CheckpointError, match="self-check failed"):
        convert_checkpoint(graph_file, tmp_path / "wrong.h5", check=True)
    assert not (tmp_path / "wrong.h5").exists()


# --------------------------------------------------------------------------- preprocessing

def _tf1_resize_bilinear(pixels, size):
    """TF 1.x resize_bilinear (align_corners=False, no half-pixel centers) of (H, W, 3)
    float64 pixels to (size, size, 3), by the loop its kernel runs."""
    height, width = pixels.shape[:2]
    out = np.empty((size, size, 3))
    for y in range(size):
        sy = y * height / size
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, height - 1), sy - y0
        for x in range(size):
            sx = x * width / size
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, width - 1), sx - x0
            top = pixels[y0, x0] + (pixels[y0, x1] - pixels[y0, x0]) * fx
            bottom = pixels[y1, x0] + (pixels[y1, x1] - pixels[y1, x0]) * fx
            out[y, x] = top + (bottom - top) * fy
    return out


def test_whole_image_resize_is_retrain_py_preprocessing():
    """retrain.py for MobileNet: the whole image resized to size x size (no crop, aspect
    not kept) by TF 1.x resize_bilinear, then (x - 127.5) / 127.5."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    ours = preprocess_image(image, 32, 1.0, "bilinear_tf", (0.5,) * 3, (0.5,) * 3,
                            resize="whole_image")
    expected = (_tf1_resize_bilinear(pixels.astype(np.float64), 32) - 127.5) / 127.5
    np.testing.assert_allclose(ours.transpose(1, 2, 0), expected, atol=2e-6)
    # crop_pct does not apply to the whole image; a central crop would differ.
    same = preprocess_image(image, 32, 0.5, "bilinear_tf", (0.5,) * 3, (0.5,) * 3,
                            resize="whole_image")
    np.testing.assert_array_equal(same, ours)
    cropped = preprocess_image(image, 32, 0.875, "bilinear_tf", (0.5,) * 3, (0.5,) * 3,
                               resize="central_crop")
    assert np.abs(cropped - ours).max() > 0.1


# ---------------------------------------------------------------------------------- fuzzing

def _evaluate(nodes, name, logits, seen=()):
    """float64 value of tensor `name` in a graph of head ops, the classifier's BiasAdd being
    `logits`; raises ValueError for any op, cycle or shape this evaluator does not run."""
    by_name = {node.name: node for node in nodes}
    node_name, _, index = name.partition(":")
    if index not in ("", "0") or node_name in seen or node_name not in by_name:
        raise ValueError(name)
    node = by_name[node_name]
    seen = seen + (node_name,)
    if node_name == "MobilenetV1/Logits/Conv2d_1c_1x1/BiasAdd":
        return logits
    if node.op == "Const":
        return np.asarray(node.attrs["value"], np.float64)
    args = [_evaluate(nodes, i, logits, seen) for i in node.inputs if not i.startswith("^")]
    if node.op in ("Identity", "PlaceholderWithDefault", "StopGradient") and args:
        return args[0]
    if node.op == "Squeeze" and len(args) == 1:
        return np.squeeze(args[0])
    if node.op == "Reshape" and len(args) == 2:
        return args[0].reshape(args[1].astype(np.int64))
    if node.op in ("BiasAdd", "Add", "AddV2") and len(args) == 2:
        return args[0] + args[1]
    if node.op == "MatMul" and len(args) == 2 and not node.attrs.get("transpose_a") and \
            not node.attrs.get("transpose_b"):
        return args[0] @ args[1]
    if node.op == "Softmax" and len(args) == 1:
        return softmax(args[0])
    raise ValueError(node.op)


def _mutate(graph, rng, names):
    """One random structural edit of the head's nodes (ops, edges, shapes, attributes)."""
    head_nodes = [node for node in graph.node if not node.name.startswith("MobilenetV1/")
                  or "Predictions" in node.name or "Logits" in node.name]
    node = head_nodes[rng.integers(len(head_nodes))]
    choice = rng.integers(8)
    if choice == 0:
        node.op = str(rng.choice(["Identity", "MatMul", "Add", "BiasAdd", "Softmax", "Relu",
                                  "Reshape", "Squeeze", "Const", "Conv2D", "Mul"]))
    elif choice == 1 and node.input:
        target = str(rng.choice(names + ["nowhere", "final_result", MATMUL + ":1"]))
        node.input[rng.integers(len(node.input))] = ("^" + target if rng.random() < 0.1
                                                     else target)
    elif choice == 2:
        del node.input[:]
    elif choice == 3:
        node.input.append(str(rng.choice(names)))
    elif choice == 4 and node.op == "Const":
        shape = tuple(int(s) for s in rng.choice([0, 1, 2, 5, 1000, 1001], rng.integers(0, 3)))
        node.attr["value"].tensor.CopyFrom(const_node(
            "x", rng.standard_normal(shape).astype(np.float32)).attr["value"].tensor)
    elif choice == 5:
        graph.node.remove(node)
    elif choice == 6:
        copy = graph.node.add()
        copy.CopyFrom(node)
        copy.name = node.name if rng.random() < 0.5 else node.name + "_copy"
    else:
        node.attr[str(rng.choice(["transpose_a", "transpose_b"]))].b = bool(rng.random() < 0.5)


def test_fuzz_head_reading(variables, head):
    """Random structural edits of a retrained graph's head: find_head either refuses with
    one CheckpointError line, finds no head, or finds one whose apply_head equals what the
    edited graph computes at the head's output (a NumPy evaluation of its head ops)."""
    # The head and the logits ops it reads; the network's convolutions play no part here.
    whole = graph_pb2.GraphDef.FromString(mobilenet_graph(variables, head=head))
    kept = [node for node in whole.node if not node.name.startswith(
        ("MobilenetV1/MobilenetV1/", "MobilenetV1/Conv2d_"))]
    base = graph_pb2.GraphDef(node=kept).SerializeToString()
    names = [node.name for node in kept]
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 1001))
    outcomes = {"refused": 0, "none": 0, "found": 0, "found unchanged": 0}
    for trial in range(400):
        graph = graph_pb2.GraphDef.FromString(base)
        for _ in range(rng.integers(1, 4)):
            _mutate(graph, rng, names)
        nodes = parse_graphdef(graph.SerializeToString())
        try:
            found = find_head(nodes, constants(nodes), "g.pb")
        except CheckpointError as error:
            assert "\n" not in str(error) and str(error).startswith("g.pb: "), str(error)
            outcomes["refused"] += 1
            continue
        if found is None:
            outcomes["none"] += 1
            continue
        computed = _evaluate(nodes, found.output, logits)
        expected = apply_head(logits, found)
        if found.output != "final_training_ops/Wx_plus_b/add":
            expected = softmax(expected)
        np.testing.assert_allclose(computed, expected, rtol=1e-6, atol=1e-9, err_msg=trial)
        same = np.array_equal(found.weights, head[0]) and np.array_equal(found.bias, head[1])
        outcomes["found unchanged" if same else "found"] += 1
    assert outcomes["refused"] > 100 and outcomes["found unchanged"] > 20, outcomes


def _with_preprocessing_ops(variables, head, size=160, align_corners=False):
    """A retrained graph whose stem conv reads label_image.py's chain: DecodeJpeg -> Cast ->
    ExpandDims -> ResizeBilinear(size) -> Sub(128) -> Mul(1 / 128)."""
    def edit(graph):
        graph.node.extend([
            op_node("DecodeJpeg", "DecodeJpeg", ["DecodeJpeg/contents"]),
            op_node("Cast", "Cast", ["DecodeJpeg"]),
            op_node("ExpandDims", "ExpandDims", ["Cast", "ExpandDims/dim"]),
            const_node("ResizeBilinear/size", np.array([size, size], np.int32), DT_INT32),
            op_node("ResizeBilinear", "ResizeBilinear", ["ExpandDims", "ResizeBilinear/size"],
                    align_corners=align_corners),
            const_node("Sub/y", np.float32(128.0)),
            op_node("Sub", "Sub", ["ResizeBilinear", "Sub/y"]),
            const_node("Mul/y", np.float32(1 / 128)),
            op_node("Mul", "Mul", ["Sub", "Mul/y"]),
        ])
        stem = next(node for node in graph.node if node.op == "Conv2D")
        stem.input[0] = "Mul"
    return _edited(variables, head, edit)


def test_preprocessing_ops_in_the_graph_are_read(variables, head, tmp_path, capsys):
    path = tmp_path / "with_preprocessing.pb"
    path.write_bytes(_with_preprocessing_ops(variables, head))
    assert run_cli("convert", path, "-o", tmp_path / "m.h5", "--no-check") == 0
    info = mobinumba.load(tmp_path / "m.h5").info
    assert (info.input_size, info.resize, info.interpolation, info.crop_pct) == (
        160, "whole_image", "bilinear_tf", 1.0)
    np.testing.assert_allclose(info.mean, [128 / 255] * 3)
    np.testing.assert_allclose(info.std, [128 / 255] * 3)
    # Options still win over what the graph states.
    assert run_cli("convert", path, "-o", tmp_path / "o.h5", "--no-check", "--input-size", "224",
                   "--mean", "0.5", "0.5", "0.5") == 0
    info = mobinumba.load(tmp_path / "o.h5").info
    assert info.input_size == 224 and info.mean == (0.5,) * 3
    path.write_bytes(_with_preprocessing_ops(variables, head, align_corners=True))
    capsys.readouterr()
    assert run_cli("convert", path, "-o", tmp_path / "a.h5", "--no-check") == 1
    assert "ResizeBilinear resizes with align_corners or half_pixel_centers" in \
        capsys.readouterr().err


def test_head_option_on_a_checkpoint_is_refused(tmp_path, capsys):
    import torch

    path = tmp_path / "model.pth"
    torch.save({"conv_stem.weight": torch.zeros(8, 3, 3, 3)}, path)
    assert run_cli("convert", path, "-o", tmp_path / "m.h5", "--head", "imagenet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and \
        "--head imagenet: only TensorFlow graphs (.pb) have retrain.py heads" in err, err
