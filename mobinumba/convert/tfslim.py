"""TF-slim's MobileNetV1 (`mobilenet_v1_<width>_<size>`) from a frozen GraphDef (`.pb`).

The graph's `Const` nodes hold the trained variables under the scope `MobilenetV1/`:

    Conv2d_0/weights                  (3, 3, 3, C) HWIO    stem conv
    Conv2d_N_depthwise/depthwise_weights (3, 3, C, 1)      N = 1..13
    Conv2d_N_pointwise/weights        (1, 1, Cin, Cout)
    <layer>/BatchNorm/{gamma, beta, moving_mean, moving_variance}
    Logits/Conv2d_1c_1x1/{weights, biases}   (1, 1, C, K), (K,): a 1x1 conv = dense layer

read_graph presents them as a state dict in PyTorch's layouts (OIHW, (C, 1, 3, 3), (K, C)) and
names (`MobilenetV1/Conv2d_0.weight`, `.../BatchNorm.running_var`, ...), so plan.py checks them
like any checkpoint. It also reads what the graph states about itself: the batch-norm epsilon
(the `.../batchnorm/add/y` constants, or a FusedBatchNorm's `epsilon`) and the convolutions'
padding (`SAME`: TensorFlow's asymmetric padding; `VALID` after explicit `Pad` ops: slim's
`use_explicit_padding`, which pads 1 on each side like PyTorch), and a retrain.py head on
the logits (retrained.py), which the converter folds into the classifier. Other constants
outside `MobilenetV1/` are not part of the network and are reported as ignored.
"""
from ..architecture import NUM_BLOCKS
from ..errors import CheckpointError
from .graphdef import constants, read_graphdef
from .plan import mobilenet_v1_plan
from .retrained import HEADS, PREPROCESSING, find_head, preprocessing_in_graph

NAME = "tf-slim"
# TF-slim's defaults: mobilenet_v1_arg_scope (ReLU6, batch_norm_epsilon 0.001, SAME padding)
# and its eval preprocessing (inception_preprocessing.preprocess_for_eval: pixels to [-1, 1],
# tf.image.central_crop(0.875), then TF 1.x resize_bilinear to 224x224).
DEFAULTS = dict(activation="relu6", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                interpolation="bilinear_tf", crop_pct=0.875, resize="central_crop", bn_eps=1e-3,
                padding="tf_same")

SCOPE = "MobilenetV1/"
STEM = "MobilenetV1/Conv2d_0"
CLASSIFIER = "MobilenetV1/Logits/Conv2d_1c_1x1"
# A variable's name inside its layer scope -> the PyTorch-style key suffix it is stored under.
VARIABLES = {
    "weights": ".weight",
    "depthwise_weights": ".weight",
    "biases": ".bias",
    "BatchNorm/gamma": "/BatchNorm.weight",
    "BatchNorm/beta": "/BatchNorm.bias",
    "BatchNorm/moving_mean": "/BatchNorm.running_mean",
    "BatchNorm/moving_variance": "/BatchNorm.running_var",
}
EPS_SUFFIX = "/BatchNorm/batchnorm/add/y"
CONV_OPS = ("Conv2D", "DepthwiseConv2dNative")
FUSED_BATCH_NORM_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")


def matches(keys):
    """True when the keys are TF-slim MobileNetV1 variables as read_graph names them."""
    return f"{STEM}.weight" in keys


def plan(keys):
    """The SourceLayer plan: stem, 13 depthwise-separable blocks, the 1x1-conv classifier."""
    blocks = [(f"{SCOPE}Conv2d_{i}_depthwise", f"{SCOPE}Conv2d_{i}_depthwise/BatchNorm",
               f"{SCOPE}Conv2d_{i}_pointwise", f"{SCOPE}Conv2d_{i}_pointwise/BatchNorm")
              for i in range(1, NUM_BLOCKS + 1)]
    return mobilenet_v1_plan(stem=(STEM, f"{STEM}/BatchNorm"), blocks=blocks, head=None,
                             classifier=CLASSIFIER)


def read_graph(path, padding=None, head=None):
    """(state dict, settings the graph states, names of ignored constants) of a frozen graph.

    The state dict maps PyTorch-style keys to float32 arrays in PyTorch layouts. The settings
    hold `bn_eps` and `padding` when the graph says what they are; `padding` given here (a
    user's override) skips reading the graph's. With a retrain.py head (head None or
    "retrained"; "imagenet" leaves it unread, its constants ignored) they hold
    `retrained_head` (a retrained.RetrainedHead) and retrain.py's preprocessing; preprocessing
    ops in the graph (a ResizeBilinear, Sub, Mul chain before the stem conv) state theirs,
    which win. Raises
    CheckpointError for a file that is not a GraphDef, a graph without MobileNetV1
    variables, one whose padding is unknown, or a head that is not an affine map of the
    logits (or missing when head="retrained").
    """
    if head is not None and head not in HEADS:
        raise CheckpointError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
    nodes = read_graphdef(path)
    found = constants(nodes)
    state = {}
    ignored = []
    for name, value in found.items():
        if not name.startswith(SCOPE):
            ignored.append(name)
            continue
        key = _state_key(name)
        if key is None:
            continue  # a graph-internal constant (epsilon, reshape shape, ...), not a variable
        if value.dtype.kind != "f":
            raise CheckpointError(f"{path}: constant {name} has dtype {value.dtype}, expected "
                                  f"floating point")
        if key in state:
            raise CheckpointError(f"{path}: two constants are variable {key} (the second is "
                                  f"{name})")
        state[key] = _to_torch_layout(name, value.astype("float32"))
    if not matches(state):
        sample = ", ".join(sorted(found)[:3]) + (", ..." if len(found) > 3 else "")
        raise CheckpointError(f"{path}: not a TF-slim MobileNetV1 graph (no constant "
                              f"{STEM}/weights; constants: {sample or 'none'})")
    settings = {}
    eps = _batch_norm_eps(nodes, found, path)
    if eps is not None:
        settings["bn_eps"] = eps
    stated_padding = _padding(nodes, path) if padding is None else None
    if stated_padding is not None:
        settings["padding"] = stated_padding
    if head != "imagenet":
        retrained = find_head(nodes, found, path)
        if retrained is None and head == "retrained":
            raise CheckpointError(f"{path}: --head retrained, but the graph has no retrain.py "
                                  f"head (no MatMul outside MobilenetV1/)")
        if retrained is not None:
            settings.update(PREPROCESSING, retrained_head=retrained)
            ignored = [name for name in ignored if name not in retrained.constants]
    settings.update(preprocessing_in_graph(nodes, found, f"{STEM}/weights", path))
    return state, settings, sorted(ignored)


def _state_key(name):
    """The state-dict key of a variable's constant name, or None if it is not a variable."""
    for variable, suffix in VARIABLES.items():
        if name.endswith("/" + variable):
            return name[:-len(variable) - 1] + suffix
    return None


def _to_torch_layout(name, value):
    """HWIO conv -> OIHW, (3, 3, C, 1) depthwise -> (C, 1, 3, 3), (1, 1, C, K) logits -> (K, C).

    Tensors of any other rank are returned unchanged for plan.py to report.
    """
    if value.ndim != 4:
        return value
    if name.endswith("/depthwise_weights"):
        return value.transpose(2, 3, 0, 1).copy()
    if name.startswith(CLASSIFIER + "/"):
        return value.reshape(value.shape[2:]).T.copy() if value.shape[:2] == (1, 1) else value
    return value.transpose(3, 2, 0, 1).copy()


def _batch_norm_eps(nodes, found, path):
    """The one epsilon of the graph's MobileNetV1 batch norms, or None when it states none."""
    values = {}
    for name, value in found.items():
        if name.startswith(SCOPE) and name.endswith(EPS_SUFFIX) and value.size == 1:
            values[name] = float(value.reshape(()))
    for node in nodes:
        if node.op in FUSED_BATCH_NORM_OPS and node.name.startswith(SCOPE) and \
                isinstance(node.attrs.get("epsilon"), float):
            values[node.name] = node.attrs["epsilon"]
    distinct = sorted(set(values.values()))
    if len(distinct) > 1:
        raise CheckpointError(f"{path}: batch-norm epsilons differ between layers "
                              f"({', '.join(f'{v:g}' for v in distinct)}); mobinumba stores one")
    if distinct and not 0.0 < distinct[0] < 1.0:
        raise CheckpointError(f"{path}: batch-norm epsilon {distinct[0]:g} is not in (0, 1)")
    return distinct[0] if distinct else None


def _padding(nodes, path):
    """`tf_same` or `torch` as the graph's 3x3 convolutions pad, or None when it has none."""
    pads = {node.attrs.get("padding") for node in nodes
            if node.op in CONV_OPS and node.name.startswith(SCOPE) and "Logits" not in node.name}
    pads.discard(None)
    if not pads:
        return None
    if pads == {"SAME"}:
        return "tf_same"
    explicit = any(node.op in ("Pad", "PadV2", "MirrorPad") and node.name.startswith(SCOPE)
                   for node in nodes)
    if pads == {"VALID"} and explicit:
        return "torch"  # slim's use_explicit_padding: 1 on each side of every 3x3 conv
    raise CheckpointError(f"{path}: convolutions use padding {', '.join(sorted(pads))}"
                          f"{' without Pad ops' if not explicit else ''}; expected SAME "
                          f"(or VALID after explicit Pad ops); force one with --padding")
