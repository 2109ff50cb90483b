"""A retrain.py ("TensorFlow for Poets") head on a TF-slim MobileNetV1 graph: find, check, fold.

TensorFlow's image_retraining/retrain.py (and tensorflow/hub's) trains one affine layer on a
frozen MobileNetV1 and freezes both into one graph. For MobileNet its "bottleneck" is
`MobilenetV1/Predictions/Reshape:0`, the 1001 ImageNet logits before the softmax, and the
frozen head is, as written by retrain.py (node names of a real one, nudity 0.2.3's):

    MobilenetV1/Predictions/Reshape        Reshape of Logits/SpatialSqueeze to (-1, 1001)
    input_1/BottleneckInputPlaceholder     PlaceholderWithDefault(Reshape)
    final_training_ops/weights/final_weights (1001, n) Const (+ an Identity `/read`)
    final_training_ops/biases/final_biases   (n,) Const (+ `/read`)
    final_training_ops/Wx_plus_b/MatMul    MatMul(placeholder, final_weights)
    final_training_ops/Wx_plus_b/add       Add(MatMul, final_biases)
    final_result                           Softmax(add)

The head is found by the graph's edges, not by names: the one MatMul outside `MobilenetV1/`
is followed back through pass-through ops (Identity, PlaceholderWithDefault, Reshape,
Squeeze) to the BiasAdd of the ImageNet classifier `MobilenetV1/Logits/Conv2d_1c_1x1`; its
weights and bias back to constants; its output forward through the bias add to a Softmax (or
to nothing). Anything else (a head on the probabilities, on another tensor, two heads, more
layers after it, shapes that disagree) is refused with one line naming the node.

Two affine maps in a row are one: `fold` turns classifier (K, C) then head (K, n) into one
(n, C) dense layer, computed in float64 and rounded once to float32.
"""
from dataclasses import dataclass, replace

import numpy as np

from ..errors import CheckpointError

HEADS = ("retrained", "imagenet")
CLASSIFIER = "MobilenetV1/Logits/Conv2d_1c_1x1"
# Ops that hand their first input on unchanged (for the (N, K) logits tensor).
PASS_THROUGH = ("Identity", "PlaceholderWithDefault", "Reshape", "Squeeze", "StopGradient")
BIAS_ADDS = ("BiasAdd", "Add", "AddV2")
SOFTMAXES = ("Softmax",)
# Data inputs each op of a head takes (TensorFlow refuses any other count).
ARITY = {"Identity": 1, "PlaceholderWithDefault": 1, "Squeeze": 1, "StopGradient": 1,
         "Reshape": 2, "BiasAdd": 2, "Add": 2, "AddV2": 2, "Softmax": 1, "MatMul": 2}
# A real chain is 4 ops long (placeholder, Reshape, Squeeze, BiasAdd); a longer one is not it.
MAX_CHAIN = 16
# retrain.py's preprocessing for MobileNet: input_mean = input_std = 127.5 on 0..255 pixels,
# i.e. (x / 255 - 0.5) / 0.5; the whole image resized (no crop, aspect ratio not kept) to
# input_size x input_size by tf.image.resize_bilinear (TF 1.x: no half-pixel centers).
PREPROCESSING = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear_tf",
                     crop_pct=1.0, resize="whole_image")


@dataclass(frozen=True)
class RetrainedHead:
    """A checked retrain.py head: weights (K, n) and bias (n,) float32 as the graph stores
    them, the names of its MatMul and of its output (the Softmax, else the bias add)."""

    weights: np.ndarray
    bias: np.ndarray
    matmul: str
    output: str
    constants: tuple  # the names of the two constants it uses

    @property
    def num_classes(self):
        return self.weights.shape[1]


def find_head(nodes, found, path):
    """The graph's RetrainedHead, or None when no op outside `MobilenetV1/` is a MatMul.

    `found` maps constant names to arrays (graphdef.constants). Raises CheckpointError naming
    the node when the head is not an affine map of the ImageNet logits.
    """
    matmuls = [node for node in nodes
               if node.op == "MatMul" and not node.name.startswith("MobilenetV1/")]
    if not matmuls:
        return None
    if len(matmuls) > 1:
        names = ", ".join(node.name for node in matmuls[:3])
        raise CheckpointError(f"{path}: {len(matmuls)} MatMul ops outside MobilenetV1/ "
                              f"({names}); mobinumba converts one retrained head (or use "
                              f"--head imagenet)")
    matmul = matmuls[0]
    by_name = {node.name: node for node in nodes}
    inputs = _data_inputs(matmul)
    if not _well_formed(matmul):
        raise CheckpointError(f"{path}: head {matmul.name} has {len(inputs)} inputs, expected 2")
    if matmul.attrs.get("transpose_a") or matmul.attrs.get("transpose_b"):
        raise CheckpointError(f"{path}: head {matmul.name} transposes an operand; retrain.py's "
                              f"heads do not (use --head imagenet for the ImageNet logits)")
    classes = found.get(f"{CLASSIFIER}/biases")
    logits = classes.shape[0] if classes is not None and classes.ndim == 1 else None
    _check_reaches_logits(inputs[0], by_name, found, logits, matmul.name, path)
    weights_name = _constant_behind(inputs[1], by_name, found, matmul.name, path)
    weights = found[weights_name]
    bias_add, output = _bias_add_and_output(matmul, nodes, path)
    bias_name = next((_constant_behind(name, by_name, found, bias_add.name, path)
                      for name in _data_inputs(bias_add) if _strip(name) != matmul.name), None)
    if bias_name is None:
        raise CheckpointError(f"{path}: head {bias_add.name} adds nothing to {matmul.name}")
    bias = found[bias_name]
    if weights.ndim != 2 or weights.shape[0] != logits or weights.shape[1] < 1:
        raise CheckpointError(f"{path}: head weights {weights_name} have shape {weights.shape}, "
                              f"expected ({logits}, n) on the {logits} ImageNet logits")
    if bias.shape != (weights.shape[1],):
        raise CheckpointError(f"{path}: head bias {bias_name} has shape {bias.shape}, expected "
                              f"({weights.shape[1]},) for weights {weights.shape}")
    for name, value in ((weights_name, weights), (bias_name, bias)):
        if value.dtype.kind != "f":
            raise CheckpointError(f"{path}: head constant {name} has dtype {value.dtype}, "
                                  f"expected floating point")
        if not np.isfinite(value).all():
            raise CheckpointError(f"{path}: head constant {name} contains NaN or Inf")
    return RetrainedHead(weights=weights.astype(np.float32), bias=bias.astype(np.float32),
                         matmul=matmul.name, output=output,
                         constants=(weights_name, bias_name))


def fold(classifier, head):
    """The dense LayerRecord computing head(classifier(x)): weight (n, C), bias (n,).

    classifier: the ImageNet dense record, weight (K, C), bias (K,). In float64, rounded once:
    (x W1^T + b1) W2 + b2 = x (W2^T W1)^T + (b1 W2 + b2).
    """
    w1 = classifier.weight.astype(np.float64)  # (K, C)
    b1 = classifier.bias.astype(np.float64)  # (K,)
    w2 = head.weights.astype(np.float64)  # (K, n)
    weight = w2.T @ w1  # (n, C)
    bias = b1 @ w2 + head.bias  # (n,)
    if not (np.isfinite(weight).all() and np.abs(weight).max() < np.finfo(np.float32).max and
            np.abs(bias).max() < np.finfo(np.float32).max):
        raise CheckpointError(f"folding {head.matmul} into {CLASSIFIER} overflows float32")
    return replace(classifier, weight=weight.astype(np.float32), bias=bias.astype(np.float32),
                   source_name=f"{classifier.source_name}+{head.matmul}")


def apply_head(logits, head):
    """(N, n) float64: the unfolded head on (N, K) ImageNet logits, as the graph computes it
    before its softmax (the converter's self-check reference)."""
    return np.asarray(logits, np.float64) @ head.weights.astype(np.float64) + head.bias


# ------------------------------------------------------------------------- walking the graph

def _strip(name):
    """The node name of an input reference: `node`, `node:0` -> `node`."""
    return name.split(":", 1)[0]


def _well_formed(node):
    """True when the node has as many data inputs as its op takes."""
    return len(_data_inputs(node)) == ARITY.get(node.op, -1)


def _data_inputs(node):
    """A node's data inputs (control inputs `^name` left out)."""
    return [name for name in node.inputs if not name.startswith("^")]


def _output_index(name):
    _, _, index = name.partition(":")
    return int(index) if index.isdigit() else (0 if not index else -1)


def _check_reaches_logits(name, by_name, found, logits, head, path):
    """CheckpointError unless `name` leads, through pass-through ops, to the classifier's
    BiasAdd output: the (N, K) ImageNet logits, K = `logits`."""
    for _ in range(MAX_CHAIN):
        node = by_name.get(_strip(name))
        if node is None or _output_index(name) != 0:
            break
        if node.op in BIAS_ADDS and _well_formed(node) and \
                _weights_of_classifier(node, by_name):
            return
        if node.op not in PASS_THROUGH or not _well_formed(node):
            break
        if node.op == "Reshape":
            _check_reshape(node, by_name, found, logits, path)
        name = _data_inputs(node)[0]
    shown = _strip(name) + (f" ({by_name[_strip(name)].op})" if _strip(name) in by_name else "")
    raise CheckpointError(f"{path}: head {head} reads {shown}, not the ImageNet logits of "
                          f"{CLASSIFIER}; mobinumba converts retrain.py heads on "
                          f"MobilenetV1/Predictions/Reshape (use --head imagenet for the "
                          f"ImageNet logits)")


def _check_reshape(node, by_name, found, logits, path):
    """A Reshape on the way to the logits must keep them (N, K): shape (-1, K) or (1, K)."""
    inputs = _data_inputs(node)
    shape = found.get(_resolve(inputs[1], by_name)) if len(inputs) == 2 else None
    if shape is None or shape.dtype.kind not in "iu" or \
            shape.reshape(-1).tolist() not in ([-1, logits], [1, logits]):
        shown = "no constant shape" if shape is None else f"shape {shape.reshape(-1)[:4].tolist()}"
        raise CheckpointError(f"{path}: {node.name} reshapes the logits with {shown}, "
                              f"expected [-1, {logits}]")


def _weights_of_classifier(bias_add, by_name):
    """True when `bias_add` adds the classifier's bias to its 1x1 conv."""
    names = [_resolve(name, by_name) for name in _data_inputs(bias_add)]
    if f"{CLASSIFIER}/biases" not in names:
        return False
    conv = next((by_name.get(_strip(name)) for name in _data_inputs(bias_add)
                 if _resolve(name, by_name) != f"{CLASSIFIER}/biases"), None)
    return conv is not None and conv.op == "Conv2D" and any(
        _resolve(name, by_name) == f"{CLASSIFIER}/weights" for name in _data_inputs(conv))


def _resolve(name, by_name):
    """The node behind `name` through Identity ops (a frozen variable's `/read`)."""
    for _ in range(MAX_CHAIN):
        node = by_name.get(_strip(name))
        if node is None or node.op != "Identity" or not _well_formed(node):
            break
        name = _data_inputs(node)[0]
    return _strip(name)


def _constant_behind(name, by_name, found, head, path):
    """The name of the constant `name` reads through Identity ops, else CheckpointError."""
    constant = _resolve(name, by_name)
    if constant not in found:
        op = by_name[constant].op if constant in by_name else "missing"
        raise CheckpointError(f"{path}: head {head} reads {constant} ({op}), expected a "
                              f"constant (a frozen variable)")
    return constant


def _bias_add_and_output(matmul, nodes, path):
    """(the bias add consuming the MatMul, the head's output name), checking that nothing
    but a Softmax comes after it."""
    consumers = _consumers(nodes, matmul.name)
    if len(consumers) != 1 or consumers[0].op not in BIAS_ADDS or \
            not _well_formed(consumers[0]):
        shown = ", ".join(f"{node.name} ({node.op})" for node in consumers[:3]) or "nothing"
        raise CheckpointError(f"{path}: head {matmul.name} feeds {shown}; expected one bias "
                              f"add (retrain.py's Wx_plus_b/add)")
    bias_add = consumers[0]
    after = _consumers(nodes, bias_add.name)
    others = [node for node in after if node.op not in SOFTMAXES or not _well_formed(node)]
    if others:
        shown = ", ".join(f"{node.name} ({node.op})" for node in others[:3])
        raise CheckpointError(f"{path}: head {bias_add.name} feeds {shown}; mobinumba converts "
                              f"one affine layer and its softmax (use --head imagenet for the "
                              f"ImageNet logits)")
    return bias_add, after[0].name if len(after) == 1 else bias_add.name


def _consumers(nodes, name):
    return [node for node in nodes if any(_strip(i) == name for i in _data_inputs(node))]


# ----------------------------------------------------------- preprocessing inside the graph

# Ops between a decoded image and the stem conv that preprocessing_in_graph reads or steps over.
IMAGE_SOURCES = ("DecodeJpeg", "DecodePng", "DecodeBmp", "DecodeImage", "Cast")
STEP_OVER = ("Identity", "ExpandDims", "Pad", "PadV2")


def preprocessing_in_graph(nodes, found, stem_weights, path):
    """The settings a graph's own preprocessing ops state, {} when it has none.

    Follows the stem conv's input back from the conv: `Mul`/`RealDiv` by a constant (1/std
    or std), `Sub` of a constant (mean), `ResizeBilinear` to a constant size, down to a
    decoder or `Cast` (pixels 0..255). This is the chain retrain.py's add_jpeg_decoding and
    label_image.py build (decode, cast, expand_dims, resize_bilinear, subtract input_mean,
    multiply by 1 / input_std), when a graph was frozen with it. Mean and std are stated only
    when the chain starts at decoded pixels, so their scale is known.
    """
    by_name = {node.name: node for node in nodes}
    stem = next((node for node in nodes if node.op == "Conv2D" and len(node.inputs) >= 2 and
                 _resolve(node.inputs[1], by_name) == stem_weights), None)
    if stem is None:
        return {}
    scale, mean, resize, pixels = None, None, None, False
    name = _data_inputs(stem)[0] if _data_inputs(stem) else ""
    for _ in range(MAX_CHAIN):
        node = by_name.get(_strip(name))
        if node is None or not _data_inputs(node):
            break
        inputs = _data_inputs(node)
        if node.op in ("Mul", "RealDiv") and len(inputs) == 2 and scale is None and \
                mean is None and resize is None:
            value = _scalar(found.get(_resolve(inputs[1], by_name)))
            if value is None or value == 0:
                break
            scale = value if node.op == "Mul" else 1.0 / value
        elif node.op == "Sub" and len(inputs) == 2 and mean is None and resize is None:
            mean = _scalar(found.get(_resolve(inputs[1], by_name)))
            if mean is None:
                break
        elif node.op == "ResizeBilinear" and len(inputs) == 2 and resize is None:
            resize = node, found.get(_resolve(inputs[1], by_name))
        elif node.op in IMAGE_SOURCES:
            pixels = True
            break
        elif node.op not in STEP_OVER:
            break
        name = inputs[0]
    settings = {}
    if resize is not None:
        settings.update(_resize_settings(*resize, path))
    if pixels and scale is not None:
        std = 1.0 / (255.0 * scale)
        settings.update(mean=((mean or 0.0) / 255.0,) * 3, std=(std,) * 3)
    return settings


def _scalar(value):
    """A constant's single value (a scalar, or the same value per channel), else None."""
    if value is None or value.dtype.kind not in "fiu" or value.size < 1 or value.size > 3:
        return None
    flat = value.reshape(-1).astype(np.float64)
    return float(flat[0]) if np.isfinite(flat).all() and (flat == flat[0]).all() else None


def _resize_settings(node, size, path):
    """`resize`, `interpolation`, `crop_pct` and `input_size` of a ResizeBilinear node."""
    if node.attrs.get("align_corners") or node.attrs.get("half_pixel_centers"):
        raise CheckpointError(f"{path}: {node.name} resizes with align_corners or "
                              f"half_pixel_centers, which mobinumba's bilinear_tf (TF 1.x "
                              f"defaults) does not; choose one with --interpolation and "
                              f"--resize")
    settings = dict(resize="whole_image", crop_pct=1.0, interpolation="bilinear_tf")
    if size is not None and size.shape == (2,) and size.dtype.kind in "iu" and \
            size[0] == size[1] and 0 < size[0] <= 8192:
        settings["input_size"] = int(size[0])
    return settings
