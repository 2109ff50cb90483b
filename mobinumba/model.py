"""The user-facing Model: input validation, workspaces, predictions and summaries."""
import importlib.resources
import os
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from .architecture import count, first_empty_layer
from .errors import FormatError, InputError, NumericError
from .graph import Workspace, build_ops, workspace_bytes
from .preprocess import load_image, preprocess_image
from .threads import kernel_section
from .weights import read_model_file

# A forward pass whose buffers would exceed this is refused before anything is allocated.
MAX_WORKSPACE_BYTES = 8 * 2 ** 30
# Workspaces kept alive for recently seen input shapes (N, H, W).
WORKSPACE_CACHE_SIZE = 4
# Images preprocessed and run together by predict(), at most (fewer for a large input_size).
PREDICT_BATCH = 16
# The shipped model (package data; a link to weights/ in a source checkout): TF-slim's
# ImageNet MobileNetV1 1.0 224, 1001 classes. weights/README.md says where it comes from.
DEFAULT_WEIGHTS = "mobilenet_v1_1.0_224_imagenet.h5"


class Prediction(NamedTuple):
    """One of the top-k classes for an image."""

    index: int
    label: str
    probability: float


def load(path=None):
    """Load a mobinumba HDF5 weight file; raises mobinumba.FormatError if it is invalid.

    With no path, loads the shipped ImageNet MobileNetV1 (TF-slim mobilenet_v1_1.0_224,
    1001 classes: "background" + ImageNet-1k); its location is the model's `path`.
    """
    return Model(read_model_file(default_weights_path() if path is None else path))


def default_weights_path():
    """The path of the shipped model inside the installed package."""
    path = importlib.resources.files("mobinumba") / "data" / DEFAULT_WEIGHTS
    if not path.is_file():
        raise FormatError(f"the default model {DEFAULT_WEIGHTS} is not installed at {path}; "
                          f"reinstall mobinumba or pass a weight file")
    return os.fspath(path)


class Model:
    """MobileNetV1 ready to run: folded, packed weights and per-shape workspaces.

    m(x) maps float32 (N, 3, H, W) to (N, num_classes) logits. Calls from several Python
    threads are safe: they run one at a time (see threads.py).
    """

    def __init__(self, model_file):
        self.info = model_file.info
        self.labels = model_file.labels
        self.path = model_file.path
        self.layers = [record.spec for record in model_file.layers]
        self._ops = build_ops(model_file.layers, self.info.activation, self.info.padding)
        self._workspaces = OrderedDict()  # (N, H, W) -> Workspace

    @property
    def num_classes(self):
        """Number of output classes."""
        return self.info.num_classes

    def __repr__(self):
        return (f"<mobinumba.Model {os.path.basename(self.path) or 'in memory'}: "
                f"width {self.info.width_multiplier:g}, {self.info.num_classes} classes, "
                f"{self.info.activation}, input {self.info.input_size}>")

    def __call__(self, x):
        """Logits (N, num_classes) float32 for a float (N, 3, H, W) batch.

        Raises InputError for an input it cannot take, and NumericError when the forward
        pass overflows float32 (logits with NaN or Inf are never returned).
        """
        x = self._check_input(x)
        with kernel_section():
            workspace = self._workspace(*x.shape[:1], *x.shape[2:])
            np.copyto(workspace.input, x, casting="same_kind")
            workspace.run()
            logits = workspace.logits.copy()  # (N, num_classes)
        if not np.isfinite(logits).all():
            raise NumericError(f"the forward pass overflowed float32: logits of input "
                               f"{int(np.argwhere(~np.isfinite(logits))[0][0])} contain NaN "
                               f"or Inf (weights in {self.path or 'the model'} or the input "
                               f"are too large)")
        return logits

    def profile(self, x):
        """Run like m(x) and return [(layer name, seconds)] for every op, in order."""
        x = self._check_input(x)
        with kernel_section():
            workspace = self._workspace(*x.shape[:1], *x.shape[2:])
            np.copyto(workspace.input, x, casting="same_kind")
            return [(op.spec.name, seconds) for op, seconds in workspace.run_profiled()]

    def predict(self, images, topk=5):
        """Top-k predictions for each image (paths or PIL images), in input order.

        Each image is decoded and transformed by the preprocessing stored in the weight file.
        Returns one list of Prediction(index, label, probability) per image, most probable
        first; `label` is the class index as a string when the file has no labels. Raises
        InputError for the first image that cannot be read, or a topk not in 1..num_classes.
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
        if (n, height, width) not in self._workspaces:  # a new shape: will its buffers fit?
            empty = first_empty_layer(self.layers, height, width, self.info.padding)
            if empty is not None:
                raise InputError(f"input of {height}x{width} pixels is too small for this "
                                 f"model (padding {self.info.padding}): layer {empty}'s output "
                                 f"would be empty")
            needed = workspace_bytes(self._ops, n, height, width)
            if needed > MAX_WORKSPACE_BYTES:
                raise InputError(f"input of shape {array.shape} needs {needed / 2 ** 30:.1f} "
                                 f"GiB of buffers, more than the "
                                 f"{MAX_WORKSPACE_BYTES / 2 ** 30:.0f} GiB limit; split the batch")
        if not np.isfinite(array).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise InputError(f"input contains NaN or Inf (first at index {bad})")
        return array

    def _workspace(self, n, height, width):
        key = (n, height, width)
        workspace = self._workspaces.pop(key, None)
        if workspace is None:
            workspace = Workspace(self._ops, n, height, width)
        self._workspaces[key] = workspace
        while len(self._workspaces) > WORKSPACE_CACHE_SIZE:
            self._workspaces.popitem(last=False)
        return workspace
