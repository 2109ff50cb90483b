"""The fuzz tests' worker process: runs one case per request, isolated from pytest.

Reads JSON requests from stdin, one per line, and answers each with one JSON line on stdout:
  {"target": "weights", "path": P}            load a weight file, run it, compare it with an
                                               independent float64 reference read by h5py
  {"target": "checkpoint", "path": P, "layout": L, "output": O}
                                               convert a checkpoint (layout detected), run the
                                               result, compare it with a reference computed
                                               from the checkpoint in layout L
  {"target": "tflite", "path": P, "output": O}
                                               convert a .tflite file, run the result, compare
                                               it with a reference read from the file by the
                                               `tflite` package (TFLite's generated classes);
                                               an int8 file as the "int8" target does
  {"target": "keras", "path": P, "output": O}  convert a Keras model file (.h5 or .keras),
                                               run the result, compare it with a reference
                                               read from the file by name (.h5) or position
                                               (.keras) with h5py, Keras's padding
  {"target": "image", "path": P}               decode and preprocess an image, compare it
                                               with Pillow's decode and an exact resample
  {"target": "int8", "path": P}                load an int8 weight file, run its integer path,
                                               compare it with tests/qreference.py on the
                                               tensors read by h5py: bit-exact
Answers: {"outcome": "refused", "type", "message"} for a mobinumba error;
{"outcome": "ok", "detail"} for a case that ran and agreed with its reference;
{"outcome": "wrong", "detail"} when it ran but disagreed; {"outcome": "unexpected", "type",
"message", "traceback"} for any other exception. A segfault or a hang shows up in the parent
as a closed pipe or a timeout (tests/isolation.py).
"""
import io
import json
import math
import os
import re
import sys
import traceback
import zipfile

import h5py
import numpy as np
import torch
from PIL import Image, ImageOps

import mobinumba
import qreference
from mobinumba.convert import convert_checkpoint
from mobinumba.preprocess import load_image, preprocess_image

torch.set_num_threads(1)
mobinumba.set_threads(1)  # tiny inputs: a parallel launch would cost more than the work

INPUT = np.random.default_rng(0).standard_normal((2, 3, 24, 24)).astype(np.float32)
# Keras's padding leaves an empty map under 31 pixels (Keras itself wants 32).
KERAS_INPUT = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
# The runtime computes in float32, the reference in float64 along with a bound on what
# float32 arithmetic may make of each value (see `reference`): a run is correct when every
# logit is within that bound of the float64 one. A real bug (a wrong weight, tap, stride or
# channel) is an O(1) difference, far above it.
UNIT_ROUNDOFF = 2.0 ** -24  # float32
# The probabilistic bound's lambda (Higham & Mary 2019: lambda sqrt(n) u per dot product,
# with probability at least 1 - 2 n exp(-lambda^2 / 2), a weak guarantee alone for n in the
# hundreds). The margin comes from applying it to sum |w x|, which cancellations keep far
# above the real sum: on the weight fuzzer's seed the bound is 50 times the real error.
ROUNDING_LAMBDA = 4.0
# Where a sum of |weight * input| may exceed this, float32 may overflow: the runtime must
# then raise NumericError or return finite logits, which cannot be compared ("uncompared").
OVERFLOW_MAGNITUDE = 1e37
# A bound above this share of the logit scale (the old fixed tolerance, 1e-3) compares
# loosely: the huge weights of such a case leave float32 little to say about the logits
# (a sum of terms of 1e30 that cancels to a few units), and it is counted as such.
LOOSE_BOUND = 1e-3
# (output channels, blocks, stride) per stage, as tests/reference_models.py builds them.
STAGES = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))


def main():
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(run_case(request)), flush=True)


def run_case(request):
    try:
        return TARGETS[request["target"]](request)
    except mobinumba.MobinumbaError as error:
        return {"outcome": "refused", "type": type(error).__name__, "message": str(error)}
    except Exception as error:  # noqa: BLE001 - the point is to report it
        return {"outcome": "unexpected", "type": type(error).__name__,
                "message": str(error)[:500], "traceback": traceback.format_exc()[-3000:]}


# ------------------------------------------------------------------------------ weights

def weights_case(request):
    path = request["path"]
    model = mobinumba.load(path)
    layers, activation, padding = layers_from_h5(path)
    if model.labels is not None and len(model.labels) != model.num_classes:
        return {"outcome": "wrong", "detail": "labels do not match num_classes"}
    return compare(model, layers, activation, padding)


def layers_from_h5(path):
    """Each layer group as a dict of float64 arrays (as float32 values), read with h5py;
    the activation as (name, slope)."""
    with h5py.File(path, "r") as h5:
        activation = (h5.attrs["activation"], float(h5.attrs.get("activation_slope", 0.0)))
        padding = h5.attrs["padding"]
        groups = h5["layers"]
        layers = []
        for key in sorted(groups, key=lambda k: int(k.split("_")[0])):
            group = groups[key]
            layer = {"kind": group.attrs["kind"], "stride": int(group.attrs["stride"])}
            for name in ("weight", "bias", "gamma", "beta", "mean", "var", "eps"):
                if name in group:
                    layer[name] = np.asarray(group[name][()], np.float32).astype(np.float64)
            layers.append(layer)
    return layers, activation, padding


# --------------------------------------------------------------------------- checkpoints

def checkpoint_case(request):
    path, output = request["path"], request["output"]
    if os.path.exists(output):
        os.unlink(output)
    convert_checkpoint(path, output, input_size=32, labels="none", check=False, force=True)
    model = mobinumba.load(output)
    state = read_state(path)
    layers = layers_from_state(state, request["layout"])
    return compare(model, layers, LAYOUT_ACTIVATIONS[request["layout"]], "torch")


# What each layout's network runs: (name, negative slope).
LAYOUT_ACTIVATIONS = {"timm": ("relu6", 0.0), "classic": ("relu", 0.0), "ssd": ("relu", 0.0),
                      "retinaface": ("leaky_relu", 0.1)}
# RetinaFace's 13 conv_dw blocks (tests/backbone_models.py): stage1.0 is the stem.
RETINAFACE_BLOCKS = ([f"stage1.{i}" for i in range(1, 6)] + [f"stage2.{i}" for i in range(6)]
                     + ["stage3.0", "stage3.1"])


def read_state(path):
    """The checkpoint's tensors as float64 arrays (of their float32 values), unwrapped."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file  # torch: numpy has no bfloat16
        raw = load_file(path)
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(raw, dict) and isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if all(k.startswith("module.") for k in raw):  # DataParallel, in either format
        raw = {k[len("module."):]: v for k, v in raw.items()}
    return {k: np.asarray(v.detach().float().numpy() if torch.is_tensor(v) else v, np.float32)
            .astype(np.float64) for k, v in raw.items() if not k.endswith("num_batches_tracked")}


def layers_from_state(state, layout):
    """The network as layer dicts, from the key names of tests/reference_models.py."""
    def conv(prefix, bn, kind, stride):
        layer = {"kind": kind, "stride": stride, "weight": state[f"{prefix}.weight"]}
        layer.update(gamma=state[f"{bn}.weight"], beta=state[f"{bn}.bias"],
                     mean=state[f"{bn}.running_mean"], var=state[f"{bn}.running_var"],
                     eps=np.float64(np.float32(1e-5)))
        if f"{prefix}.bias" in state:
            layer["bias"] = state[f"{prefix}.bias"]
        return layer

    strides = [stride if index == 0 else 1 for _, repeats, stride in STAGES
               for index in range(repeats)]
    if layout in ("retinaface", "ssd"):
        prefix = {"retinaface": "body.", "ssd": "base_net."}[layout]
        prefix = prefix if any(k.startswith(prefix) for k in state) else ""
        names = ([f"{prefix}{block}" for block in RETINAFACE_BLOCKS] if layout == "retinaface"
                 else [f"{prefix}{i}" for i in range(1, 14)])
        stem = f"{prefix}stage1.0" if layout == "retinaface" else f"{prefix}0"
        layers = [conv(f"{stem}.0", f"{stem}.1", "conv", 2)]
        if layout == "retinaface":  # its network takes BGR: the file's stem takes RGB
            layers[0]["weight"] = layers[0]["weight"][:, ::-1]
        for name, stride in zip(names, strides):
            layers.append(conv(f"{name}.0", f"{name}.1", "dwconv", stride))
            layers.append(conv(f"{name}.3", f"{name}.4", "pwconv", 1))
        if f"{prefix}fc.weight" not in state:
            return layers  # a backbone: the runner ends with the pooled features
        classifier = f"{prefix}fc"
    elif layout == "timm":
        layers = [conv("conv_stem", "bn1", "conv", 2)]
        names = [f"blocks.{s}.{b}" for s, (_, repeats, _) in enumerate(STAGES)
                 for b in range(repeats)]
        for name, stride in zip(names, strides):
            layers.append(conv(f"{name}.conv_dw", f"{name}.bn1", "dwconv", stride))
            layers.append(conv(f"{name}.conv_pw", f"{name}.bn2", "pwconv", 1))
        if "conv_head.weight" in state:
            layers.append(conv("conv_head", "bn2", "pwconv", 1))
        if "classifier.weight" not in state:
            return layers  # timm's num_classes=0
        classifier = "classifier"
    else:
        layers = [conv("model.0.0", "model.0.1", "conv", 2)]
        for index, stride in enumerate(strides, start=1):
            layers.append(conv(f"model.{index}.0", f"model.{index}.1", "dwconv", stride))
            layers.append(conv(f"model.{index}.3", f"model.{index}.4", "pwconv", 1))
        classifier = "fc"
    layers.append({"kind": "dense", "stride": 1, "weight": state[f"{classifier}.weight"],
                   "bias": state[f"{classifier}.bias"]})
    return layers


# ------------------------------------------------------------------------------- tflite

def tflite_case(request):
    path, output = request["path"], request["output"]
    if os.path.exists(output):
        os.unlink(output)
    convert_checkpoint(path, output, labels="none", check=False, force=True)
    model = mobinumba.load(output)
    if model.precision == "int8":
        # What was accepted, run bit-exact against the NumPy reference of TFLite's integer
        # arithmetic on the file as written (the mapping itself is checked against LiteRT in
        # tests/test_tflite.py; LiteRT cannot be the reference of a damaged file).
        return int8_case({"path": output})
    layers, activation, padding = layers_from_tflite(path)
    return compare(model, layers, activation, padding)


def layers_from_tflite(path):
    """(layers, activation, padding) of an accepted .tflite, read by the `tflite` package:
    every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED in operator order, their folded
    weights as layers with an identity batch norm; a 1x1 CONV_2D after the pooling is the
    dense classifier; explicit PAD ops mean PyTorch's symmetric padding, none TensorFlow's
    SAME."""
    import tflite

    data = open(path, "rb").read()
    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    names = {value: key for key, value in vars(tflite.BuiltinOperator).items()
             if not key.startswith("_")}

    def constant(index):
        tensor = graph.Tensors(index)
        shape = tuple(tensor.ShapeAsNumpy().tolist())
        raw = model.Buffers(tensor.Buffer()).DataAsNumpy().tobytes()
        return np.frombuffer(raw, "<f4").reshape(shape).astype(np.float64)

    layers, activations, pooled, padded = [], set(), False, False
    for index in range(graph.OperatorsLength()):
        op = graph.Operators(index)
        code = model.OperatorCodes(op.OpcodeIndex())
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = names.get(number, f"op {number}")  # an unknown code: in no chain op we read
        inputs = op.InputsAsNumpy().tolist()
        padded |= name == "PAD"
        pooled |= name in ("MEAN", "AVERAGE_POOL_2D")
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        weight = constant(inputs[1])
        bias = constant(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else \
            np.zeros(weight.shape[0] if name != "DEPTHWISE_CONV_2D" else weight.shape[3])
        table = op.BuiltinOptions()
        if name == "FULLY_CONNECTED" or pooled:
            layers.append({"kind": "dense", "stride": 1, "bias": bias,
                           "weight": weight.reshape(weight.shape[0], -1)})
            continue
        options = (tflite.Conv2DOptions() if name == "CONV_2D"
                   else tflite.DepthwiseConv2DOptions())
        options.Init(table.Bytes, table.Pos)
        activations.add(options.FusedActivationFunction())
        if name == "DEPTHWISE_CONV_2D":
            kind, weight = "dwconv", weight.transpose(3, 0, 1, 2)
        else:
            kind = "conv" if not layers else "pwconv"
            weight = weight.transpose(0, 3, 1, 2)
        channels = weight.shape[0]
        layers.append({"kind": kind, "stride": options.StrideH(), "weight": weight,
                       "bias": bias, "gamma": np.ones(channels), "beta": np.zeros(channels),
                       "mean": np.zeros(channels), "var": np.ones(channels),
                       "eps": np.float64(0.0)})
    activation = ({1: "relu", 3: "relu6"}[activations.pop()], None)  # (name, slope)
    return layers, activation, "torch" if padded else "tf_same"


# --------------------------------------------------------------------------------- keras

def keras_case(request):
    path, output = request["path"], request["output"]
    if os.path.exists(output):
        os.unlink(output)
    convert_checkpoint(path, output, labels="none", check=False, force=True)
    model = mobinumba.load(output)
    layers, activation = layers_from_keras(path)
    return compare(model, layers, (activation, None), "keras", KERAS_INPUT)


KERAS_WEIGHTED = ("Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense")
# .h5 weight names (tf.keras 2 adds ":0") in the order of a .keras file's vars/0, 1, ...
KERAS_NAMES = {"Conv2D": ("kernel", "bias"), "DepthwiseConv2D": ("kernel", "bias"),
               "Dense": ("kernel", "bias"),
               "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance")}


def layers_from_keras(path):
    """(layer dicts, activation) of a Keras MobileNet file, written apart from mobinumba's
    reader: the config's weighted layers in order, nested models included; an .h5 layer's
    arrays found by their names anywhere in model_weights, a .keras layer's by their
    position under its class-numbered group."""
    archive = zipfile.is_zipfile(path)
    if archive:
        with zipfile.ZipFile(path) as zipped:
            config = json.loads(zipped.read("config.json"))
            h5 = h5py.File(io.BytesIO(zipped.read("model.weights.h5")), "r")
    else:
        h5 = h5py.File(path, "r")
        config = json.loads(h5.attrs["model_config"])
    with h5:
        named = {}  # (layer name, weight name) -> array, from an .h5's model_weights
        if not archive:
            def collect(name, item):
                parts = name.split("/")
                if isinstance(item, h5py.Dataset) and len(parts) >= 2:
                    named[(parts[-2], parts[-1].split(":")[0])] = np.asarray(item[()])
            h5["model_weights"].visititems(collect)
        found, activation = [], None
        for class_name, layer, group in keras_layers_in(config, "layers"):
            if class_name == "ReLU":
                activation = "relu6" if layer.get("max_value") == 6 else "relu"
            if class_name not in KERAS_WEIGHTED:
                continue
            names = KERAS_NAMES[class_name]
            if class_name != "BatchNormalization" and not layer.get("use_bias", True):
                names = names[:1]
            if archive:
                arrays = [np.asarray(h5[f"{group}/vars/{i}"][()]) for i in range(len(names))]
            else:
                arrays = [named.get((layer["name"], name)) for name in names]
                if class_name == "DepthwiseConv2D" and arrays[0] is None:  # tf.keras 2's name
                    arrays[0] = named[(layer["name"], "depthwise_kernel")]
                if any(array is None for array in arrays):
                    raise KeyError(f"{layer['name']}: {names} not all in model_weights")
            found.append((class_name, layer, [a.astype(np.float32).astype(np.float64)
                                              for a in arrays]))
    layers = []
    for class_name, layer, arrays in found:
        if class_name == "BatchNormalization":
            gamma, beta, mean, var = arrays
            layers[-1].update(gamma=gamma, beta=beta, mean=mean, var=var,
                              eps=np.float64(np.float32(layer["epsilon"])))
        elif class_name == "Dense":
            weight = arrays[0].T  # (K, C)
            bias = arrays[1] if len(arrays) > 1 else np.zeros(weight.shape[0])
            if weight.shape[0] == 1 and layer.get("activation") in ("sigmoid", "linear", None):
                # a binary classifier's logit z: the logits (0, z) give softmax (1 - p, p)
                weight, bias = np.vstack([0 * weight, weight]), np.concatenate([0 * bias, bias])
            layers.append({"kind": "dense", "stride": 1, "weight": weight, "bias": bias})
        else:
            depthwise = class_name == "DepthwiseConv2D"
            kind = "dwconv" if depthwise else "pwconv" if layers else "conv"
            # HWIO -> OIHW; depthwise (H, W, C, 1) -> (C, 1, H, W)
            weight = arrays[0].transpose((2, 3, 0, 1) if depthwise else (3, 2, 0, 1))
            strides = layer.get("strides") or (1, 1)  # Keras's default, as mobinumba reads it
            layers.append({"kind": kind, "stride": int(strides[0]), "weight": weight})
            if len(arrays) > 1:
                layers[-1]["bias"] = arrays[1]
    return layers, activation


def keras_layers_in(config, group):
    """(class name, layer config, .keras weights group) of each layer, nested ones expanded:
    a model's layers are `<group>/<class in snake case>[_n]`, numbered per container."""
    used = {}
    for layer in config["config"]["layers"]:
        snake = re.sub(r"([a-z])([A-Z])", r"\1_\2",
                       re.sub("(.)([A-Z][a-z]+)", r"\1_\2", layer["class_name"])).lower()
        used[snake] = used.get(snake, -1) + 1
        path = f"{group}/{snake}" + (f"_{used[snake]}" if used[snake] else "")
        if layer["class_name"] in ("Functional", "Sequential", "Model"):
            yield from keras_layers_in(layer, f"{path}/layers")
        else:
            yield layer["class_name"], layer["config"], path


# ----------------------------------------------------------------------- the reference

def compare(model, layers, activation, padding, x=INPUT):
    """Run the model and the reference on INPUT and judge the outcome.

    An "ok" answer says how it was judged in "comparison": "compared" (every logit within the
    float32 error bound of the float64 reference; "allowed" and "error" give the bound and the
    difference found, relative to the logit scale max(1, max |logit|)), "loosely compared"
    (the same, with a bound above LOOSE_BOUND of the logit scale), "overflow reported"
    (NumericError where float32 could overflow) or "uncompared" (finite logits where float32
    could overflow: no bound holds).
    """
    with np.errstate(all="ignore"):  # huge mutated weights overflow float64 too
        expected, bound, magnitude = reference(layers, activation, padding, x)
    may_overflow = not magnitude <= OVERFLOW_MAGNITUDE
    try:
        actual = model(x)
    except mobinumba.NumericError as error:
        if may_overflow:
            return {"outcome": "ok", "comparison": "overflow reported", "detail": str(error)}
        return {"outcome": "wrong", "detail": f"NumericError although no sum exceeds "
                                              f"{magnitude:.3g}: {error}"}
    if not np.isfinite(actual).all():
        return {"outcome": "wrong", "detail": "non-finite logits returned"}
    if actual.shape != expected.shape:
        return {"outcome": "wrong", "detail": f"shape {actual.shape} != {expected.shape}"}
    if may_overflow:
        return {"outcome": "ok", "comparison": "uncompared",
                "detail": f"finite logits, sums up to {magnitude:.3g} may overflow float32"}
    difference = np.abs(actual - expected)  # (N, K)
    scale = max(1.0, float(np.abs(expected).max()))
    worst = np.unravel_index(int(np.argmax(difference - bound)), difference.shape)
    if not (difference <= bound).all():
        return {"outcome": "wrong", "detail": f"logit {worst}: |difference| "
                                              f"{difference[worst]:.3g} exceeds the float32 "
                                              f"bound {bound[worst]:.3g}"}
    allowed = float(bound.max()) / scale
    return {"outcome": "ok",
            "comparison": "compared" if allowed <= LOOSE_BOUND else "loosely compared",
            "allowed": allowed, "error": float(difference.max()) / scale,
            "detail": f"matches reference: difference {float(difference.max()) / scale:.1e}, "
                      f"bound {float(bound.max()) / scale:.1e} of the logit scale {scale:.3g}"}


def reference(layers, activation, padding, x):
    """(logits, bound, magnitude): float64 logits (N, K) with batch norm folded (the pooled
    features (N, C) when the last layer is not dense); `activation` is (name, slope); `bound`
    (N, K), how far float32 arithmetic may take each logit from them; `magnitude`, the
    largest sum of |weight * input| (+ |bias|) met, which float32 must hold.

    Each output value of a layer is a float32 dot product of n terms (computed in any order,
    with FMAs or not), plus 3 roundings: folding weight and bias into float32, adding the
    bias. Its rounding error is bounded probabilistically (Higham & Mary, "A new approach to
    probabilistic rounding error analysis", 2019) by
        ROUNDING_LAMBDA * sqrt(n + 3) * u * (sum |w| * (|x| + error) + |b|),   u = 2^-24,
    and the errors its inputs bring are propagated as independent ones, root-sum-square
    through the weights: sqrt(sum w^2 * error^2). (The worst-case bound, gamma(n) = n u and
    sum |w| * error, is sound but useless: measured 8.3 times the logit scale on the weight
    fuzzer's seed, whose real error is 2.7e-7 of it; this one is 1.5e-5, 50 times the real
    error.) A value's error passes through ReLU / ReLU6 as far as the clipped interval
    [y - error, y + error] reaches, so a saturated channel (a huge weight clipped at 6)
    carries none; LeakyReLU, monotonic with slopes at most 1, maps the interval the same
    way. Subnormal results flushed to zero add at most 2^-126 per term.
    """
    name, slope = activation
    y = x.astype(np.float64)  # (N, C, H, W)
    error = np.zeros_like(y)
    magnitude = 0.0
    for layer in layers:
        weight = layer["weight"]
        bias = layer.get("bias", np.zeros(weight.shape[0]))
        if layer["kind"] == "dense":
            pooled, pooled_error = pool(y, error)
            size = (np.abs(pooled) + pooled_error) @ np.abs(weight).T + np.abs(bias)  # (N, K)
            magnitude = max(magnitude, float(size.max()))
            error = np.sqrt(pooled_error ** 2 @ (weight ** 2).T) + rounding(weight.shape[1],
                                                                             size)
            y = pooled @ weight.T + bias  # (N, K)
            continue
        scale = layer["gamma"] / np.sqrt(layer["var"] + layer["eps"])
        folded = weight * scale[:, None, None, None]
        shift = layer["beta"] + (bias - layer["mean"]) * scale
        depthwise = layer["kind"] == "dwconv"
        stride = layer["stride"]
        rule = padding
        if padding == "keras" and (layer["kind"] == "conv" or stride == 1):
            rule = "tf_same"  # keras.applications' stem and stride-1 convs are "same"
        terms = folded[0].size  # products per output value
        size = conv(np.abs(y) + error, np.abs(folded), np.abs(shift), stride, rule,
                    depthwise)  # (N, O, Ho, Wo)
        magnitude = max(magnitude, float(size.max()))
        error = np.sqrt(conv(error ** 2, folded ** 2, np.zeros_like(shift), stride, rule,
                             depthwise)) + rounding(terms, size)
        y = conv(y, folded, shift, stride, rule, depthwise)
        low, high = activate(y - error, name, slope), activate(y + error, name, slope)
        y = activate(y, name, slope)
        error = np.maximum(y - low, high - y)
    if layers[-1]["kind"] != "dense":  # a backbone: its output is the pooled features
        y, error = pool(y, error)
    return y, error, magnitude


def activate(y, name, slope):
    """The activation `name` on float64 values: ReLU, ReLU6 or LeakyReLU(slope)."""
    if name == "leaky_relu":
        return np.where(y > 0, y, slope * y)
    return np.clip(y, 0.0, np.inf if name == "relu" else 6.0)


def pool(y, error):
    """(pooled (N, C), its error bound) of y (N, C, H, W): summed in float32, then times
    float32(1 / pixels)."""
    pixels = y.shape[2] * y.shape[3]
    pooled = y.mean(axis=(2, 3))
    return pooled, np.sqrt((error ** 2).mean(axis=(2, 3)) / pixels) + rounding(
        pixels + 2, (np.abs(y) + error).mean(axis=(2, 3)))


TINY = 2.0 ** -126  # the smallest normal float32: what a flushed subnormal loses


def rounding(terms, size):
    """The rounding error bound of a float32 dot product of `terms` products (and 3 more
    roundings) whose sum of absolute values is `size`: see `reference`."""
    return ROUNDING_LAMBDA * np.sqrt(terms + 3) * UNIT_ROUNDOFF * size + TINY * (terms + 2)


def conv(x, weight, bias, stride, padding, depthwise):
    """A direct convolution: x (N, C, H, W), weight (O, C or 1, k, k) -> (N, O, Ho, Wo)."""
    kernel = weight.shape[-1]
    (top, bottom), (left, right) = (pads(x.shape[2], kernel, stride, padding),
                                    pads(x.shape[3], kernel, stride, padding))
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]  # (N, C, Ho, Wo, k, k)
    if depthwise:
        out = np.einsum("nchwij,cij->nchw", windows, weight[:, 0])
    else:
        out = np.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    return out + bias[None, :, None, None]


def pads(size, kernel, stride, padding):
    """(before, after) along one axis: 'torch' (k - 1) / 2 each side, 'tf_same' SAME,
    'keras' (a stride-2 depthwise conv: ZeroPadding2D((0, 1)) then "valid")."""
    if padding == "torch":
        return (kernel - 1) // 2, (kernel - 1) // 2
    if padding == "keras":
        return 0, 1
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# -------------------------------------------------------------------------------- images

# Pillow resamples 8-bit images in two passes (horizontal, then vertical) and rounds to whole
# levels after each: with non-negative (triangle) weights each rounding moves the result by at
# most half a level, so Pillow and an exact resample differ by one level of 255 (seen: 1.00 on
# 720 mutated seeds), plus its 22-bit fixed-point weights (< 0.1 level even for thousands of
# taps): 1.1 levels, which (x - 0.5) / 0.5 scales to 2.2 / 255.
IMAGE_TOLERANCE = 2.2 / 255
IMAGE_SIZE, IMAGE_CROP_PCT = 32, 0.875


def image_case(request):
    """Decode and preprocess an image; compare the decoded pixels with Pillow's own decode
    turned into RGB by NumPy, and the (3, 32, 32) result with an exact resample of them."""
    image = load_image(request["path"])
    pixels = preprocess_image(image, IMAGE_SIZE, IMAGE_CROP_PCT, "bilinear", (0.5,) * 3,
                              (0.5,) * 3)
    if pixels.shape != (3, IMAGE_SIZE, IMAGE_SIZE) or pixels.dtype != np.float32:
        return {"outcome": "wrong", "detail": f"shape {pixels.shape}, dtype {pixels.dtype}"}
    decoded = reference_rgb(request["path"])  # (H, W, 3) uint8
    if np.asarray(image).shape != decoded.shape or not np.array_equal(image, decoded):
        return {"outcome": "wrong", "detail": f"decoded {image.size} differs from Pillow's "
                                              f"{decoded.shape[1::-1]} turned into RGB"}
    expected = (reference_crop(decoded, IMAGE_SIZE, IMAGE_CROP_PCT) - 0.5) / 0.5
    difference = float(np.abs(pixels - expected).max())
    if not difference <= IMAGE_TOLERANCE:
        return {"outcome": "wrong", "detail": f"preprocessed pixels differ from the reference "
                                              f"by {difference:.4f} > {IMAGE_TOLERANCE:.4f}"}
    return {"outcome": "ok", "detail": f"{image.size[0]}x{image.size[1]}, difference "
                                       f"{difference * 127.5:.2f} levels"}


def reference_rgb(path):
    """(H, W, 3) uint8: the file as Pillow decodes it, upright (Pillow's exif_transpose),
    turned into RGB with NumPy as README says: gray replicated, alpha dropped, 1-bit to 0/255,
    16-bit samples scaled by 255 / 65535; other modes (palette, CMYK, YCbCr) by Pillow."""
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    mode, array = image.mode, np.asarray(image)
    if mode == "RGB":
        return array
    if mode in ("RGBA", "RGBX"):
        return array[..., :3]
    if mode in ("L", "LA", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        gray = array[..., 0] if mode == "LA" else array
        if mode == "1":
            gray = gray.astype(np.uint8) * 255
        elif mode not in ("L", "LA"):
            gray = np.rint(np.clip(gray.astype(np.float64), 0, 65535) * (255 / 65535))
        return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def reference_crop(rgb, size, crop_pct):
    """(3, size, size) float64 in [0, 1]: rgb (H, W, 3) resized with its shorter side to
    floor(size / crop_pct) by an exact antialiased bilinear (triangle) filter, center crop."""
    height, width = rgb.shape[:2]
    scale = math.floor(size / crop_pct)
    if width <= height:
        new_width, new_height = scale, int(scale * height / width)
    else:
        new_width, new_height = int(scale * width / height), scale
    top = int(round((max(new_height, 1) - size) / 2))
    left = int(round((max(new_width, 1) - size) / 2))
    rows = triangle_weights(height, max(new_height, 1), top, size)  # (size, H)
    columns = triangle_weights(width, max(new_width, 1), left, size)  # (size, W)
    resized_rows = np.zeros((size, width, 3))
    for start in range(0, height, 1024):  # a block of rows at a time: bounded memory
        block = rgb[start:start + 1024].astype(np.float64) / 255
        resized_rows += np.tensordot(rows[:, start:start + 1024], block, axes=1)
    return np.einsum("ywc,xw->cyx", resized_rows, columns)


def triangle_weights(in_size, out_size, start, count):
    """(count, in_size): output pixels start .. start+count-1 of a resize from in_size to
    out_size, each a triangle-weighted mean of the input pixels whose centres lie within
    max(1, in_size / out_size) of its centre (j + 0.5) * in_size / out_size."""
    factor = in_size / out_size
    centres = (np.arange(start, start + count) + 0.5) * factor  # (count,)
    distance = np.abs((np.arange(in_size) + 0.5)[None, :] - centres[:, None])
    weights = np.maximum(0.0, 1.0 - distance / max(factor, 1.0))
    return weights / weights.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------- int8 files

INT8_INPUT = np.random.default_rng(1).integers(-128, 128, (2, 24, 24, 3)).astype(np.int8)


def int8_case(request):
    path = request["path"]
    model = mobinumba.load(path)
    actual = model.run_quantized(INT8_INPUT)
    expected = qreference.forward(int8_file_from_h5(path), INT8_INPUT)
    if not np.array_equal(actual, expected):
        where = np.argwhere(actual != expected)[0]
        return {"outcome": "wrong", "detail": f"int8 logit {tuple(where)} differs from the "
                                              f"reference"}
    return {"outcome": "ok", "comparison": "compared", "detail": "bit-exact"}


def int8_file_from_h5(path):
    """The int8 model as qreference.forward reads it (info, layers), read with h5py."""
    from types import SimpleNamespace

    from mobinumba.quantization import LayerQuantization, Quantization

    def quantization(obj, prefix):
        return Quantization(float(np.float32(obj.attrs[f"{prefix}_scale"])),
                            int(obj.attrs[f"{prefix}_zero_point"]))

    with h5py.File(path, "r") as h5:
        info = SimpleNamespace(padding=h5.attrs["padding"], activation=h5.attrs["activation"],
                               input_quantization=quantization(h5, "input"))
        groups = h5["layers"]
        layers = []
        for key in sorted(groups, key=lambda k: int(k.split("_")[0])):
            group = groups[key]
            pooled = quantization(group, "pool") if "pool" in group.attrs else None
            quant = LayerQuantization(
                weight_scale=np.asarray(group["weight_scale"][()], np.float32),
                output=quantization(group, "output"), pooled=pooled,
                pool_op=group.attrs.get("pool", "average"))
            layers.append(SimpleNamespace(
                kind=group.attrs["kind"], stride=int(group.attrs["stride"]),
                weight=np.asarray(group["weight"][()], np.int8),
                bias=np.asarray(group["bias"][()], np.int64), quant=quant))
    return SimpleNamespace(info=info, layers=layers)


TARGETS = {"weights": weights_case, "checkpoint": checkpoint_case, "tflite": tflite_case,
           "keras": keras_case, "image": image_case, "int8": int8_case}

if __name__ == "__main__":
    main()
