"""The user-facing Model: input validation, workspaces, predictions and summaries."""
import importlib.resources
import os
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from .architecture import count, first_empty_layer
from .errors import FormatError, InputError, NumericError
from .graph import Workspace, build_ops, pooling_index, workspace_bytes
from .preprocess import load_image, preprocess_image
from .threads import kernel_section
from .quantization import PRECISIONS
from .weights import read_model_file

# A forward pass whose buffers would exceed this is refused before anything is allocated.
MAX_WORKSPACE_BYTES = 8 * 2 ** 30
# Workspaces kept alive for recently seen input shapes (N, H, W).
WORKSPACE_CACHE_SIZE = 4
# Images preprocessed and run together by predict(), at most (fewer for a large input_size).
PREDICT_BATCH = 16
# feature_maps' names for detectors: the last map at each output stride (FPN/SSD inputs).
STRIDE_NAMES = {8: "stride8", 16: "stride16", 32: "stride32"}
DEFAULT_FEATURE_MAPS = tuple(STRIDE_NAMES.values())
# The shipped model (package data; a link to weights/ in a source checkout): TF-slim's
# ImageNet MobileNetV1 1.0 224, 1001 classes. weights/README.md says where it comes from.
DEFAULT_WEIGHTS = "mobilenet_v1_1.0_224_imagenet.h5"
# Its int8 variant, made by `mobinumba quantize` (weights/README.md says how).
DEFAULT_INT8_WEIGHTS = "mobilenet_v1_1.0_224_imagenet_int8.h5"


class Prediction(NamedTuple):
    """One of the top-k classes for an image."""

    index: int
    label: str
    probability: float


def load(path=None, precision=None):
    """Load a mobinumba HDF5 weight file; raises mobinumba.FormatError if it is invalid.

    With no path, loads the shipped ImageNet MobileNetV1 (TF-slim mobilenet_v1_1.0_224,
    1001 classes: "background" + ImageNet-1k), or its int8 variant with precision="int8";
    its location is the model's `path`. With a path, `precision` (if given) must be the
    file's: a float32 file is made int8 by `mobinumba quantize`.
    """
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    model_file = read_model_file(default_weights_path(precision) if path is None else path)
    if precision is not None and model_file.info.precision != precision:
        hint = (f"; make an int8 file with `mobinumba quantize {path} -o OUT.h5`"
                if precision == "int8" else "")
        raise InputError(f"{path}: the model is {model_file.info.precision}, not "
                         f"{precision}{hint}")
    return Model(model_file)


def no_classifier_message(where):
    """The one-line refusal of predictions from a model without classifier (`where`: its
    path, or "the model")."""
    return (f"{where}: this model has no classifier (num_classes 0, a backbone): it gives "
            f"pooled features, not class predictions; use `mobinumba embed` or "
            f"Model.features(x) for its features")


def default_weights_path(precision=None):
    """The path of the shipped model (precision "int8": its int8 variant) inside the
    installed package."""
    name = DEFAULT_INT8_WEIGHTS if precision == "int8" else DEFAULT_WEIGHTS
    path = importlib.resources.files("mobinumba") / "data" / name
    if not path.is_file():
        raise FormatError(f"the default model {name} is not installed at {path}; "
                          f"reinstall mobinumba or pass a weight file")
    return os.fspath(path)


class Model:
    """MobileNetV1 ready to run: folded, packed weights and per-shape workspaces.

    m(x) maps float32 (N, 3, H, W) to (N, num_classes) logits, or for a backbone without
    classifier (num_classes 0) to its (N, channels) globally pooled features. Calls from
    several Python threads are safe: they run one at a time (see threads.py).

    An int8 model (info.precision "int8") quantizes x with input_quantization, runs TFLite's
    int8 arithmetic and dequantizes the int8 logits with output_quantization, so m(x) still
    returns float32; run_quantized() is the integer path alone.
    """

    def __init__(self, model_file):
        self.info = model_file.info
        self.labels = model_file.labels
        self.path = model_file.path
        self.layers = [record.spec for record in model_file.layers]
        self._ops = build_ops(model_file.layers, self.info.activation_function,
                              self.info.padding, self.info.input_quantization)
        self._workspaces = OrderedDict()  # (N, H, W) -> Workspace
        self._map_index = _feature_map_names(self._ops)  # feature_maps name -> op index

    @property
    def precision(self):
        """"float32" or "int8"."""
        return self.info.precision

    @property
    def input_quantization(self):
        """An int8 model's input Quantization (scale, zero_point) of the normalised image;
        None for float32."""
        return self.info.input_quantization

    @property
    def output_quantization(self):
        """An int8 model's logits Quantization; None for float32."""
        return getattr(self._ops[-1], "output_quantization", None)

    @property
    def num_classes(self):
        """Number of output classes."""
        return self.info.num_classes

    @property
    def feature_channels(self):
        """C of features(x) (N, C): 1024 * width for MobileNetV1 (the head conv's channels
        for files with one)."""
        return self._ops[pooling_index(self._ops)].spec.out_channels

    def __repr__(self):
        head = (f"{self.info.num_classes} classes" if self.info.has_classifier
                else "no classifier")
        return (f"<mobinumba.Model {os.path.basename(self.path) or 'in memory'}: "
                f"width {self.info.width_multiplier:g}, {head}, "
                f"{self.info.activation_function}, input {self.info.input_size}>")

    def __call__(self, x):
        """Logits (N, num_classes) float32 for a float (N, 3, H, W) batch; for a model
        without classifier, its pooled features (N, channels).

        Raises InputError for an input it cannot take, and NumericError when the forward
        pass overflows float32 (logits with NaN or Inf are never returned).
        """
        return self._forward(x, "logits")

    def features(self, x):
        """Pooled features (N, C) float32 for a float (N, 3, H, W) batch: the global average
        of the last convolution's output, what the classifier reads (C = 1024 * width for
        MobileNetV1; the head conv's channels for files with one).

        Runs the network up to and including the pooling (the classifier is skipped), with
        the same input checks, errors and thread lock as m(x).
        """
        return self._forward(x, "features")

    def _forward(self, x, output):
        """A copy of the workspace's `output` ("logits" or "features") for the batch x."""
        x = self._check_input(x)
        with kernel_section():
            workspace = self._workspace(*x.shape[:1], *x.shape[2:])
            self._copy_input(workspace, x)
            if output == "features":
                workspace.run_features()
            else:
                workspace.run()
            result = getattr(workspace, output).copy()  # (N, C) or (N, num_classes)
        if self.precision == "int8":  # int8 outputs: dequantized with their op's quantization
            op = self._ops[pooling_index(self._ops) if output == "features" else -1]
            return op.output_quantization.dequantize(result)
        if not np.isfinite(result).all():
            raise NumericError(f"the forward pass overflowed float32: {output} of input "
                               f"{int(np.argwhere(~np.isfinite(result))[0][0])} contain NaN "
                               f"or Inf (weights in {self.path or 'the model'} or the input "
                               f"are too large)")
        return result

    def feature_maps(self, x, layers=DEFAULT_FEATURE_MAPS):
        """{name: float32 copy of that layer's output} for a float (N, 3, H, W) batch, in the
        order of `layers`.

        Names are the layers' names in the weight file (`inspect` lists them: conv_stem,
        block01_dw, ..., block13_pw) with NHWC (N, Ho, Wo, C) outputs, `avgpool` for the
        (N, C) pooled features, and for detectors `stride8`, `stride16`, `stride32`: the last
        map at that output stride (block05_pw, block11_pw and the last layer before pooling
        in MobileNetV1). Raises InputError for an unknown name, listing the valid ones.
        The forward pass is m(x)'s, copying each wanted map as it is produced.
        """
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        unknown = [name for name in layers if name not in self._map_index]
        if unknown or not layers:
            problem = f"unknown feature map {unknown[0]!r}" if unknown else "no layers given"
            raise InputError(f"{problem}; valid: {', '.join(self._map_index)}")
        x = self._check_input(x)
        indices = {self._map_index[name] for name in layers}
        with kernel_section():
            workspace = self._workspace(*x.shape[:1], *x.shape[2:])
            self._copy_input(workspace, x)
            kept = workspace.run_keeping(indices)
        if self.precision == "int8":  # int8 maps: dequantized with their op's quantization
            kept = {index: self._ops[index].output_quantization.dequantize(values)
                    for index, values in kept.items()}
        maps = {name: kept[self._map_index[name]] for name in layers}
        for name, values in maps.items():
            if not np.isfinite(values).all():
                raise NumericError(f"the forward pass overflowed float32: feature map {name} "
                                   f"contains NaN or Inf (weights in "
                                   f"{self.path or 'the model'} or the input are too large)")
        return maps

    def require_classifier(self):
        """Raise InputError (no_classifier_message) unless the model has a classifier."""
        if not self.info.has_classifier:
            raise InputError(no_classifier_message(self.path or "the model"))

    def run_quantized(self, q):
        """int8 logits (N, num_classes) of an int8 model for an int8 NHWC batch
        (N, H, W, 3), already quantized with input_quantization: TFLite's integer path,
        for comparing int8 tensors with LiteRT's."""
        if self.precision != "int8":
            raise InputError("run_quantized needs an int8 model; this one is float32")
        q = np.asarray(q)
        if q.dtype != np.int8 or q.ndim != 4 or q.shape[3] != 3 or 0 in q.shape:
            raise InputError(f"run_quantized takes an int8 (N, H, W, 3) batch, got "
                             f"{q.dtype} with shape {q.shape}")
        n, height, width, _ = q.shape
        self._check_workspace_size(n, height, width, (n, height, width, 3))
        with kernel_section():
            workspace = self._workspace(n, height, width)
            flip = self._ops[0].input_flip  # 0 or 128: the stem's input encoding (ops/stem.py)
            workspace.input[...] = (q ^ np.int8(-flip) if flip else q).transpose(0, 3, 1, 2)
            workspace.run()
            return workspace.logits.copy()

    def profile(self, x):
        """Run like m(x) and return [(layer name, seconds)] for every op, in order. The ops
        run one by one, so that each has its own time: where m(x) fuses a depthwise +
        pointwise block into one kernel (int8 on VNNI), the two layers are timed apart."""
        x = self._check_input(x)
        with kernel_section():
            workspace = self._workspace(*x.shape[:1], *x.shape[2:])
            self._copy_input(workspace, x)
            return [(op.spec.name, seconds) for op, seconds in workspace.run_profiled()]

    def _copy_input(self, workspace, x):
        """x (N, 3, H, W) float into the workspace's input: as is, or quantized (int8)."""
        if self.precision == "int8":
            from .kernels.qinput import quantize_nchw

            if x.dtype not in (np.float32, np.float64):
                x = x.astype(np.float32)  # float16: the kernel reads float32 or float64
            quantization = self.input_quantization
            # The kernel counts the non-finite values as it goes: one pass over the input
            # instead of _check_input's np.isfinite (16 us per 224x224 image).
            nonfinite = quantize_nchw(x, np.float32(quantization.scale),
                                      np.int32(quantization.zero_point),
                                      np.int32(self._ops[0].input_flip), workspace.input)
            if nonfinite:
                raise _nonfinite_input(x)
        else:
            np.copyto(workspace.input, x, casting="same_kind")

    def predict(self, images, topk=5):
        """Top-k predictions for each image (paths or PIL images), in input order.

        Each image is decoded and transformed by the preprocessing stored in the weight file.
        Returns one list of Prediction(index, label, probability) per image, most probable
        first; `label` is the class index as a string when the file has no labels. Raises
        InputError for the first image that cannot be read, a topk not in 1..num_classes, or
        a model without classifier.
        """
        from .stream import predict_files  # stream.py builds on this module

        if isinstance(images, (str, os.PathLike)) or not hasattr(images, "__iter__"):
            images = [images]
        results = []
        # Decoding in this thread, between forward passes: no threads started by a library call.
        for result in predict_files(images, PREDICT_BATCH, topk, weights=self, workers=0):
            if result.error is not None:
                raise InputError(result.error)
            results.append(result.predictions)
        return results

    def embed(self, images, l2_normalize=False):
        """Pooled features (N, C) float32 of images (paths or PIL images), in input order:
        features() of each image preprocessed per the weight file, scaled to unit length with
        l2_normalize. Raises InputError for the first image that cannot be read. For many
        files, stream them with mobinumba.embed_files."""
        from .stream import embed_files  # stream.py builds on this module

        if isinstance(images, (str, os.PathLike)) or not hasattr(images, "__iter__"):
            images = [images]
        rows = []
        for result in embed_files(images, PREDICT_BATCH, weights=self, workers=0,
                                  l2_normalize=l2_normalize):
            if result.error is not None:
                raise InputError(result.error)
            rows.append(result.embedding)
        if not rows:
            return np.empty((0, self.feature_channels), np.float32)
        return np.stack(rows)

    def images_per_batch(self, wanted=PREDICT_BATCH):
        """How many images to preprocess and run together: `wanted`, or fewer when the
        file's input_size makes one image's buffers large. Raises InputError when not even
        one image fits in MAX_WORKSPACE_BYTES."""
        size = self.info.input_size
        one_image = workspace_bytes(self._ops, 1, size, size) + 4 * 3 * size * size
        if one_image > MAX_WORKSPACE_BYTES:
            raise InputError(f"input_size {size} needs {one_image / 2 ** 30:.1f} GiB of "
                             f"buffers per image, more than the "
                             f"{MAX_WORKSPACE_BYTES / 2 ** 30:.0f} GiB limit")
        return max(1, min(wanted, MAX_WORKSPACE_BYTES // one_image))

    def preprocess(self, image):
        """(3, input_size, input_size) float32 for a path or PIL image, per the file's metadata."""
        info = self.info
        return preprocess_image(load_image(image), info.input_size, info.crop_pct,
                                info.interpolation, info.mean, info.std, info.resize)

    def top_k(self, logits, topk):
        """Per row of logits (N, num_classes): the topk Predictions by softmax probability."""
        logits = np.asarray(logits, dtype=np.float64)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        results = []
        for row in probabilities:
            best = np.argsort(-row, kind="stable")[:topk]
            results.append([Prediction(int(i), self.label(int(i)), float(row[i])) for i in best])
        return results

    def label(self, index):
        """The class name of `index`, or the index as a string when the file has no labels."""
        return self.labels[index] if self.labels is not None else str(index)

    def summary(self, height=None, width=None):
        """A table of every layer (kind, stride, output shape, params, multiply-adds), totals.

        Counts are for one image of (height, width), by default the file's input_size.
        """
        height = height or self.info.input_size
        width = width or height
        rows = self.layer_counts(height, width)
        lines = [f"{'layer':<14}{'kind':<8}{'stride':>6}  {'output':<16}{'params':>12}"
                 f"{'mult-adds':>15}"]
        for spec, out_h, out_w, params, macs in rows:
            shape = (f"{spec.out_channels}" if spec.op.flat_output
                     else f"{out_h}x{out_w}x{spec.out_channels}")
            lines.append(f"{spec.name:<14}{spec.kind:<8}{spec.stride:>6}  {shape:<16}"
                         f"{params:>12,}{macs:>15,}")
        total_params = sum(row[3] for row in rows)
        total_macs = sum(row[4] for row in rows)
        lines.append(f"{'total':<44}{total_params:>12,}{total_macs:>15,}")
        lines.append(f"input {height}x{width}: {total_params / 1e6:.2f} M params, "
                     f"{total_macs / 1e6:.1f} M multiply-adds")
        return "\n".join(lines)

    def layer_counts(self, height, width):
        """Per op, in the order profile() reports them: (spec, out_h, out_w, params, macs) for
        one image of (height, width), as architecture.count() gives them."""
        return count([op.spec for op in self._ops], height, width, self.info.padding)

    def _check_input(self, x):
        """x as an ndarray after checking dtype, rank, channels, size and finiteness."""
        if isinstance(x, np.ndarray):
            array = x
        else:
            try:
                array = np.asarray(x)
            except (ValueError, TypeError) as error:
                raise InputError(f"input is not convertible to an array: {error}") from None
        if array.dtype.kind != "f":
            raise InputError(f"input dtype is {array.dtype}, expected floating point "
                             f"(float32)")
        if array.ndim != 4:
            hint = " (add a batch axis: x[None])" if array.ndim == 3 else ""
            raise InputError(f"input has shape {array.shape}, expected (N, 3, H, W){hint}")
        n, channels, height, width = array.shape
        if channels != 3:
            raise InputError(f"input has {channels} channels (shape {array.shape}), expected 3 "
                             f"in axis 1 (N, 3, H, W)")
        if n < 1 or height < 1 or width < 1:
            raise InputError(f"input has shape {array.shape}: every dimension must be >= 1")
        self._check_workspace_size(n, height, width, array.shape)
        # int8: _copy_input's quantization kernel checks finiteness on its way through.
        if self.precision != "int8" and not np.isfinite(array).all():
            raise _nonfinite_input(array)
        return array

    def _check_workspace_size(self, n, height, width, shape):
        """InputError when a new input shape would empty a layer's output (the `keras` rule
        at under 31 pixels) or its buffers would exceed MAX_WORKSPACE_BYTES."""
        if (n, height, width) not in self._workspaces:  # a new shape: will its buffers fit?
            empty = first_empty_layer(self.layers, height, width, self.info.padding)
            if empty is not None:
                raise InputError(f"input of {height}x{width} pixels is too small for this "
                                 f"model (padding {self.info.padding}): layer {empty}'s output "
                                 f"would be empty")
            needed = workspace_bytes(self._ops, n, height, width)
            if needed > MAX_WORKSPACE_BYTES:
                raise InputError(f"input of shape {shape} needs {needed / 2 ** 30:.1f} "
                                 f"GiB of buffers, more than the "
                                 f"{MAX_WORKSPACE_BYTES / 2 ** 30:.0f} GiB limit; split the batch")

    def _workspace(self, n, height, width):
        key = (n, height, width)
        workspace = self._workspaces.pop(key, None)
        if workspace is None:
            workspace = Workspace(self._ops, n, height, width)
        self._workspaces[key] = workspace
        while len(self._workspaces) > WORKSPACE_CACHE_SIZE:
            self._workspaces.popitem(last=False)
        return workspace


def _feature_map_names(ops):
    """{name: op index} of the outputs feature_maps() can copy: every op before the head by
    its layer name (spatial maps, and `avgpool`), then stride8/16/32 for the last spatial op
    at that cumulative stride."""
    names, strides = {}, {}
    stride = 1
    for index, op in enumerate(ops):
        spec = op.spec
        if spec.op.flat_input:  # the classifier: its logits are m(x)
            break
        names[spec.name] = index
        if not spec.op.flat_output:
            stride *= spec.stride
            if stride in STRIDE_NAMES:
                strides[STRIDE_NAMES[stride]] = index
    return {**names, **strides}


def _nonfinite_input(array):
    """The InputError for an input holding NaN or Inf, naming the first such index."""
    bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
    return InputError(f"input contains NaN or Inf (first at index {bad})")
