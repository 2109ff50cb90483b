"""keras.applications.MobileNet files (.h5 by tf.keras 2 or Keras 3, .keras archives).

The model's config, not guessed names, says what each layer is: the layers are walked in
config order and must form MobileNetV1 as keras/src/applications/mobilenet.py builds it:

    Conv2D 3x3/2 "same" -> BatchNormalization -> ReLU(6)                          (stem)
    13 x ([ZeroPadding2D((0, 1), (0, 1)) before a stride-2 conv] DepthwiseConv2D 3x3
          ("valid" after the pad, else "same") -> BN -> ReLU -> Conv2D 1x1 -> BN -> ReLU)
    GlobalAveragePooling2D -> [Reshape, Dropout] -> classifier -> [Reshape, Activation]

The classifier is the original top (conv_preds: a 1x1 Conv2D with bias on the pooled
features, our dense) or a fine-tuned Dense(n). Its activation must be softmax or linear: the
file stores logits and predict applies softmax, so a sigmoid (multi-label) head is refused
rather than given softmax probabilities it was not trained for. A single unit, linear or
sigmoid, is a binary classifier's logit z: stored as two classes (0, z), whose softmax is
(1 - sigmoid(z), sigmoid(z)). Anything else (another layer class, a different padding) is
refused naming the Keras model and the offending layer.

Before the stem, Rescaling / preprocess_input become the stored mean and std, and
augmentation layers are skipped (`_Walk._preprocessing`). Nested models (a base inside a
Sequential or Functional) arrive flattened by keras_files.

Kernels become PyTorch's layout (Conv2D HWIO -> OIHW, DepthwiseConv2D HWC1 -> C1HW, Dense
(C, K) -> (K, C)). The file states its own semantics: padding `keras` (padding.py), the
activation of its ReLU layers and BatchNormalization's epsilon; the converter's self-check
runs its reference with these whatever the user overrides.
"""
from dataclasses import dataclass, field

import numpy as np

from ..architecture import BLOCK_STRIDES, STEM_STRIDE
from ..errors import CheckpointError
from .keras_files import open_keras_model
from .plan import mobilenet_v1_plan

NAME = "keras"
BLOCKS = len(BLOCK_STRIDES)
# keras.applications preprocess_input for MobileNet: x / 127.5 - 1, i.e. (x/255 - 0.5) / 0.5.
# No canonical eval crop: Keras's examples resize the whole image to the input size
# (utils.load_img(target_size=...), image_dataset_from_directory); bilinear as the latter.
PREPROCESSING = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                     resize="central_crop", crop_pct=1.0)
PASS_THROUGH = ("Dropout", "Reshape", "Flatten", "SpatialDropout2D", "GaussianDropout")
SOFTMAX_OR_LINEAR = ("softmax", "linear", None)
BINARY = ("sigmoid", "linear", None)  # a one-unit head: one logit of a binary classifier
MIN_INPUT_SIZE = 32  # Keras's own minimum: smaller inputs leave an empty map (padding.py)
# Identity at inference (training=False): skipped before the stem.
AUGMENTATION = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                "RandomContrast", "RandomBrightness")
# Keras 3 op layers of `x / c`, `x - c` ... on a KerasTensor (preprocess_input in the graph
# makes TrueDivide then Subtract); tf.keras 2 made TFOpLambda layers naming the function.
AFFINE = {"TrueDivide": "math.truediv", "Divide": "math.divide", "Subtract": "math.subtract",
          "Add": "math.add", "Multiply": "math.multiply", "Rescaling": None}
OPERATIONS = {  # function -> (scale, offset) of x op c
    "math.truediv": lambda c: (1 / np.asarray(c, np.float64), 0.0),
    "math.divide": lambda c: (1 / np.asarray(c, np.float64), 0.0),
    "math.subtract": lambda c: (1.0, -np.asarray(c, np.float64)),
    "math.add": lambda c: (1.0, np.asarray(c, np.float64)),
    "__operators__.add": lambda c: (1.0, np.asarray(c, np.float64)),
    "math.multiply": lambda c: (np.asarray(c, np.float64), 0.0),
}


@dataclass
class KerasSource:
    """What a Keras file gives the converter: a state dict in PyTorch layout, the plan of
    its layers, the settings it states and the semantics the self-check must follow."""

    state: dict
    plan: list
    stated: dict
    semantics: dict
    ignored: list = field(default_factory=list)


def read_keras(path, archive):
    """KerasSource of the Keras model at `path` (archive: a .keras zip, else a legacy .h5),
    or CheckpointError naming what makes it not keras.applications' MobileNetV1."""
    model, close = open_keras_model(path, archive)
    try:
        return _Walk(path, model).source()
    finally:
        close()


class _Walk:
    """Walks a model's layers in config order, matching MobileNetV1 piece by piece."""

    def __init__(self, path, model):
        self.path, self.model = path, model
        self.where = f"{path}: Keras model {model.name!r}"
        self.index = 0
        self.state = {}
        self.activations, self.epsilons = set(), set()
        self.stated = {}

    # ------------------------------------------------------------------- the whole model

    def source(self):
        self._input()
        stem = self._conv_bn_act("Conv2D", "the stem conv", STEM_STRIDE, kernel=3, stem=True)
        blocks = []
        for block, stride in enumerate(BLOCK_STRIDES, start=1):
            dw = self._conv_bn_act("DepthwiseConv2D", f"block {block}'s depthwise conv",
                                   stride, kernel=3)
            pw = self._conv_bn_act("Conv2D", f"block {block}'s pointwise conv", 1, kernel=1)
            blocks.append((*dw, *pw))
        classifier = self._head()
        if len(self.activations) != 1 or len(self.epsilons) != 1:
            which = "activations" if len(self.activations) != 1 else "batch-norm epsilons"
            raise CheckpointError(f"{self.where}: its layers mix {which} "
                                  f"({sorted(self.activations or self.epsilons)}); a "
                                  f"mobinumba file has one")
        semantics = dict(activation=self.activations.pop(), padding="keras",
                         bn_eps=self.epsilons.pop())
        stated = dict(PREPROCESSING, **semantics, **self.stated)
        plan = mobilenet_v1_plan(stem, blocks, None, classifier)
        return KerasSource(self.state, plan, stated, semantics)

    def _input(self):
        layer = self._peek()
        if layer is not None and layer.class_name == "InputLayer":
            shape = layer.config.get("batch_shape", layer.config.get("batch_input_shape"))
            if isinstance(shape, list) and len(shape) == 4:
                _, height, width, channels = shape
                if channels not in (3, None):
                    raise CheckpointError(f"{self.where}: its input has {channels} channels, "
                                          f"expected RGB (3)")
                if isinstance(height, int) and height == width and height > 0:
                    if height < MIN_INPUT_SIZE:
                        raise CheckpointError(f"{self.where}: its input layer {layer.name!r} "
                                              f"takes {height}x{width} images; "
                                              f"keras.applications' MobileNet takes "
                                              f"{MIN_INPUT_SIZE} pixels or more")
                    self.stated["input_size"] = height
            self.index += 1
        self._preprocessing()

    def _preprocessing(self):
        """Fold the layers before the stem into the stored preprocessing: Rescaling and
        preprocess_input's TrueDivide / Subtract (tf.keras 2: TFOpLambda) are an affine map
        of the pixels (0..255) fed to the model, which becomes mean and std (of pixels / 255,
        as mobinumba's preprocessing takes them) in place of the default 0.5, 0.5. The layer
        is not kept in the network, so the scaling is applied once. Augmentation layers
        (RandomFlip ...) do nothing at inference and are skipped."""
        scale, offset, seen = np.ones(3), np.zeros(3), False
        while (layer := self._peek()) is not None and (
                layer.class_name in AUGMENTATION or layer.class_name in AFFINE
                or layer.class_name == "TFOpLambda"):
            self._next("the stem conv")
            if layer.class_name in AUGMENTATION:
                continue
            step_scale, step_offset = self._affine(layer)
            scale, offset = scale * step_scale, offset * step_scale + step_offset
            seen = True
        if not seen:
            return
        if not (np.isfinite(scale).all() and np.isfinite(offset).all() and (scale > 0).all()):
            raise CheckpointError(f"{self.where}: its input scaling x * {scale.tolist()} + "
                                  f"{offset.tolist()} is not a positive finite scale")
        # scale * 255 * p + offset == (p - mean) / std for the pixels p in [0, 1]
        std = 1 / (255 * scale)
        mean = -offset * std + 0.0  # + 0.0: no -0.0 in the file
        self.stated.update(mean=tuple(round(float(v), 9) for v in mean),
                           std=tuple(round(float(v), 9) for v in std))

    def _affine(self, layer):
        """(scale, offset), each (3,): what one preprocessing layer does to its input."""
        config = layer.config
        if layer.class_name == "Rescaling":
            scale, offset = config.get("scale", 1.0), config.get("offset", 0.0)
        else:
            function = (config.get("function") if layer.class_name == "TFOpLambda"
                        else AFFINE.get(layer.class_name))
            operand = _constant_operand(layer.nodes)
            if function not in OPERATIONS or operand is None:
                raise self._unexpected(layer, "the stem conv (or a Rescaling, or "
                                              "preprocess_input's x / 127.5 - 1, before it)")
            scale, offset = OPERATIONS[function](operand)
        try:
            scale = np.broadcast_to(np.asarray(scale, np.float64), 3)
            offset = np.broadcast_to(np.asarray(offset, np.float64), 3)
        except (TypeError, ValueError):
            raise self._unexpected(layer, "a Rescaling with scalar or per-channel (3) scale "
                                          "and offset") from None
        return scale, offset

    # ---------------------------------------------------------------- conv, BN, activation

    def _conv_bn_act(self, class_name, role, stride, kernel, stem=False):
        """(conv key prefix, BN key prefix) of one conv + BN + activation, state filled."""
        padded = False
        layer = self._next(role)
        if layer.class_name == "ZeroPadding2D" and class_name == "DepthwiseConv2D":
            if _int_pairs(layer.config.get("padding")) != ((0, 1), (0, 1)) or stride != 2:
                raise self._unexpected(layer, f"{role} padded ((0, 1), (0, 1)) before a "
                                              f"stride-2 conv")
            padded = True
            layer = self._next(role)
        if layer.class_name != class_name:
            raise self._unexpected(layer, f"{role} ({class_name})")
        config = layer.config
        size = tuple(config.get("kernel_size") or ())
        strides = tuple(config.get("strides") or (1, 1))
        if size != (kernel, kernel) or strides != (stride, stride):
            raise self._unexpected(layer, f"{role}: a {kernel}x{kernel} conv of stride "
                                          f"{stride}, found kernel {list(size)} strides "
                                          f"{list(strides)}")
        expected_padding = "valid" if padded else "same"
        if kernel == 1:
            expected_padding = config.get("padding")  # "same" and "valid" agree on 1x1
        if stride == 2 and not stem and not padded:
            raise self._unexpected(layer, f"{role} after ZeroPadding2D(((0, 1), (0, 1)))")
        if config.get("padding") != expected_padding:
            raise self._unexpected(layer, f"{role} with padding {expected_padding!r}, found "
                                          f"{config.get('padding')!r}")
        for key, value in (("data_format", "channels_last"), ("activation", "linear"),
                           ("depth_multiplier", 1), ("groups", 1)):
            if config.get(key, value) != value:
                raise self._unexpected(layer, f"{role} with {key} {value!r}, found "
                                              f"{config.get(key)!r}")
        if tuple(config.get("dilation_rate") or (1, 1)) != (1, 1):
            raise self._unexpected(layer, f"{role} without dilation")
        self._conv_weights(layer, depthwise=class_name == "DepthwiseConv2D")
        bn = self._batch_norm(role)
        self._activation(role)
        return layer.name, bn

    def _conv_weights(self, layer, depthwise):
        arrays = self.model.weights(self.index - 1)
        use_bias = bool(layer.config.get("use_bias", True))
        kernel = self._arrays(layer, arrays, 2 if use_bias else 1, rank=4)[0]
        # HWIO -> OIHW; a depthwise kernel (H, W, C, 1) -> (C, 1, H, W)
        order = (2, 3, 0, 1) if depthwise else (3, 2, 0, 1)
        self.state[f"{layer.name}.weight"] = np.ascontiguousarray(kernel.transpose(order))
        if use_bias:
            self.state[f"{layer.name}.bias"] = arrays[1]

    def _batch_norm(self, role):
        layer = self._next(role)
        if layer.class_name != "BatchNormalization":
            raise self._unexpected(layer, f"the BatchNormalization after {role}")
        config = layer.config
        axis = config.get("axis", -1)
        if axis not in (-1, 3, [-1], [3]):
            raise self._unexpected(layer, f"a batch norm over channels (axis -1), found axis "
                                          f"{axis!r}")
        epsilon = config.get("epsilon", 1e-3)
        if not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
            raise self._unexpected(layer, f"an epsilon in (0, 1), found {epsilon!r}")
        self.epsilons.add(float(epsilon))
        scale, center = config.get("scale", True), config.get("center", True)
        arrays = self.model.weights(self.index - 1)
        arrays = self._arrays(layer, arrays, 2 + bool(scale) + bool(center), rank=1)
        mean, var = arrays[-2], arrays[-1]
        gamma = arrays[0] if scale else np.ones_like(mean)
        beta = arrays[int(bool(scale))] if center else np.zeros_like(mean)
        for suffix, value in (("weight", gamma), ("bias", beta), ("running_mean", mean),
                              ("running_var", var)):
            self.state[f"{layer.name}.{suffix}"] = value
        return layer.name

    def _activation(self, role):
        layer = self._next(role)
        activation = _activation_of(layer)
        if activation not in ("relu", "relu6"):
            raise self._unexpected(layer, f"ReLU or ReLU6 after {role}")
        self.activations.add(activation)

    # ------------------------------------------------------------------------------ head

    def _head(self):
        """The classifier's key prefix: pooling, pass-through layers, conv_preds or Dense,
        then only pass-through layers and a softmax or linear activation."""
        layer = self._peek()
        if layer is None:
            raise CheckpointError(f"{self.where}: ends after the last block, without a "
                                  f"classifier (include_top=False); mobinumba convert needs "
                                  f"a classifier head")
        self.index += 1
        if layer.class_name != "GlobalAveragePooling2D":
            raise self._unexpected(layer, "GlobalAveragePooling2D after the last block")
        layer = self._skip_pass_through("the classifier")
        if layer.class_name == "Conv2D":  # the original top: conv_preds on (N, 1, 1, C)
            config = layer.config
            if tuple(config.get("kernel_size") or ()) != (1, 1) or \
                    tuple(config.get("strides") or (1, 1)) != (1, 1):
                raise self._unexpected(layer, "a 1x1 conv classifier (conv_preds)")
            arrays = self.model.weights(self.index - 1)
            use_bias = bool(config.get("use_bias", True))
            kernel = self._arrays(layer, arrays, 2 if use_bias else 1, rank=4)[0]
            weight = kernel.reshape(-1, kernel.shape[-1]).T  # (1, 1, C, K) -> (K, C)
        elif layer.class_name == "Dense":
            config = layer.config
            arrays = self.model.weights(self.index - 1)
            use_bias = bool(config.get("use_bias", True))
            weight = self._arrays(layer, arrays, 2 if use_bias else 1, rank=2)[0].T
        else:
            raise self._unexpected(layer, "a Dense or 1x1 Conv2D classifier")
        classifier, activations = layer, [config.get("activation")]
        while (layer := self._peek()) is not None:
            self.index += 1
            if layer.class_name in PASS_THROUGH:
                continue
            if layer.class_name in ("Softmax", "Activation"):
                activations.append(layer.config.get("activation", "softmax"))
                continue
            raise self._unexpected(layer, "nothing but the softmax after the classifier")
        bias = arrays[1] if use_bias else np.zeros(weight.shape[0], np.float32)
        if weight.shape[0] == 1 and all(a in BINARY for a in activations):
            # One logit z, P(class 1) = sigmoid(z): the transfer-learning tutorial's Dense(1)
            # (from_logits). Stored as two logits (0, z), whose softmax is (1 - sigmoid(z),
            # sigmoid(z)): the same probabilities, from mobinumba's softmax.
            weight = np.concatenate([np.zeros_like(weight), weight])
            bias = np.concatenate([np.zeros_like(bias), bias])
        else:
            for activation in activations:
                if activation not in SOFTMAX_OR_LINEAR:
                    raise self._refuse_activation(classifier, activation)
        self.state[f"{classifier.name}.weight"] = np.ascontiguousarray(weight)
        self.state[f"{classifier.name}.bias"] = bias
        return classifier.name

    def _skip_pass_through(self, role):
        layer = self._next(role)
        while layer.class_name in PASS_THROUGH:
            layer = self._next(role)
        return layer

    def _refuse_activation(self, layer, activation):
        return CheckpointError(f"{self.where}: classifier layer {layer.name!r} has activation "
                               f"{activation!r}; mobinumba stores logits and predicts with "
                               f"softmax, so only softmax or linear heads convert, or a "
                               f"single sigmoid unit (a multi-label sigmoid head's "
                               f"probabilities would be wrong)")

    # ------------------------------------------------------------------------- helpers

    def _peek(self):
        layers = self.model.layers
        return layers[self.index] if self.index < len(layers) else None

    def _next(self, role):
        """The next layer, checked to take the previous layer's output (a plain chain)."""
        layer = self._peek()
        if layer is None:
            raise CheckpointError(f"{self.where}: ends where MobileNetV1 has {role}")
        previous = self.model.layers[self.index - 1].name if self.index else None
        if layer.inbound is not None and previous is not None \
                and layer.inbound != (previous,):
            raise CheckpointError(f"{self.where}: layer {layer.name!r} takes "
                                  f"{list(layer.inbound)}, not the previous layer "
                                  f"{previous!r}; MobileNetV1 is a plain chain")
        self.index += 1
        return layer

    def _unexpected(self, layer, expected):
        """The refusal for `layer` where MobileNetV1 has `expected`."""
        what = layer.class_name
        if what in ("Functional", "Sequential", "Model"):
            what = "a nested model"
        inside = f" of nested model {layer.container!r}" if layer.container else ""
        return CheckpointError(f"{self.where} is not keras.applications' MobileNetV1: layer "
                               f"{layer.name!r}{inside} ({what}) stands where MobileNetV1 has "
                               f"{expected}")

    def _arrays(self, layer, arrays, count, rank):
        if len(arrays) != count or any(array.ndim != (rank if i == 0 else 1)
                                       for i, array in enumerate(arrays)):
            shapes = [tuple(array.shape) for array in arrays]
            raise CheckpointError(f"{self.path}: Keras layer {layer.name!r} holds weights of "
                                  f"shapes {shapes}, expected {count} array(s), the first of "
                                  f"rank {rank}")
        return arrays


def _activation_of(layer):
    """'relu', 'relu6' or None for an activation layer (ReLU, Activation)."""
    config = layer.config
    if layer.class_name == "ReLU":
        if config.get("negative_slope", 0) or config.get("threshold", 0):
            return None
        maximum = config.get("max_value")
        return "relu" if maximum is None else "relu6" if maximum == 6 else None
    if layer.class_name == "Activation":
        return config.get("activation") if config.get("activation") in ("relu", "relu6") \
            else None
    return None


def _constant_operand(nodes):
    """The constant c of a one-node `x op c` layer: Keras 3 {"args": [x, c]}, tf.keras 2
    TFOpLambda [[name, 0, 0, {"y": c}]]; None if there is no single numeric one."""
    if not isinstance(nodes, list) or len(nodes) != 1:
        return None
    node = nodes[0]
    if isinstance(node, dict):
        args = node.get("args")
        operand = args[1] if isinstance(args, list) and len(args) == 2 and \
            isinstance(args[0], dict) else None
    else:
        while isinstance(node, list) and len(node) == 1 and isinstance(node[0], list):
            node = node[0]
        kwargs = node[3] if isinstance(node, list) and len(node) == 4 else None
        operand = kwargs.get("y") if isinstance(kwargs, dict) else None
    if isinstance(operand, bool) or not isinstance(operand, (int, float)):
        return None
    return operand


def _int_pairs(value):
    """((0, 1), (0, 1)) from [[0, 1], [0, 1]]; None for anything else."""
    try:
        return tuple(tuple(int(v) for v in pair) for pair in value)
    except (TypeError, ValueError):
        return None
