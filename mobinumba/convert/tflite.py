"""MobileNetV1 from a TensorFlow Lite file (`.tflite`), float32.

tflite_file.py parses the file; this module checks that its operator graph is MobileNetV1's
chain and presents the weights as a state dict in PyTorch layouts, so plan.py checks them like
any checkpoint. Two graph shapes are common and both are read:

    TF-slim   CONV_2D (SAME) -> 13 x (DEPTHWISE_CONV_2D, CONV_2D 1x1) -> AVERAGE_POOL_2D
              -> CONV_2D 1x1 logits -> RESHAPE / SQUEEZE -> SOFTMAX
    Keras     [PAD] CONV_2D -> 13 x ([PAD] DEPTHWISE_CONV_2D VALID, CONV_2D 1x1) -> MEAN
              -> CONV_2D 1x1 or FULLY_CONNECTED -> RESHAPE (its shape from SHAPE,
              STRIDED_SLICE, PACK) -> SOFTMAX

TensorFlow Lite folds batch norm into the convolutions, so each convolution comes with a bias
and the file has no batch-norm statistics; the state dict gives each convolution an identity
batch norm (gamma 1, beta 0, mean 0, var 1 - 2^-10, eps 2^-10: exact in float32, so folding
it changes no bit). The activation is the convolutions' fused one (RELU6 or RELU). The padding
is read from the file: each 3x3 convolution's zeros (SAME, or a PAD before a VALID conv) are
compared with every rule in mobinumba/padding.py at that layer's input size, and the one rule
that matches all layers is the model's; a layout no rule expresses is refused.
"""
from collections import Counter

import numpy as np

from ..architecture import BLOCK_STRIDES, NUM_BLOCKS, STEM_STRIDE
from ..errors import CheckpointError
from ..padding import PADDINGS, pads
from ..weights import LayerRecord
from .plan import mobilenet_v1_plan
from .tflite_file import ACTIVATIONS, PADDINGS as TFLITE_PADDINGS, read_tflite

NAME = "tflite"
# TF-slim's eval preprocessing (the hosted mobilenet_v1_*.tflite files and Keras's
# mobilenet.preprocess_input both take pixels to [-1, 1]).
DEFAULTS = dict(activation="relu6", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                interpolation="bilinear_tf", crop_pct=0.875, resize="central_crop",
                bn_eps=2.0 ** -10, padding="tf_same")
STEM = "conv_stem"
CLASSIFIER = "classifier"
# Identity batch norm: var + eps == 1 exactly, in float32 and float64.
IDENTITY_EPS = 2.0 ** -10
# Operators that only compute a RESHAPE's target shape (Keras's dynamic batch dimension).
SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK"}
TAIL_OPS = {"RESHAPE", "SQUEEZE", "SOFTMAX"}
# A fully quantized model with uint8 (or float) input and output converts at its ends.
CONVERSION_OPS = {"QUANTIZE", "DEQUANTIZE"}
POOL_OPS = {"AVERAGE_POOL_2D", "MEAN"}
FLOAT32, INT8, INT32 = 0, 9, 2


def matches(keys):
    """True when the keys are what read_tflite_network names."""
    return f"{STEM}.weight" in keys and f"{CLASSIFIER}.weight" in keys


def plan(keys):
    """The SourceLayer plan over read_tflite_network's keys."""
    blocks = [(f"block{i:02d}_dw", f"block{i:02d}_dw/bn", f"block{i:02d}_pw",
               f"block{i:02d}_pw/bn") for i in range(1, NUM_BLOCKS + 1)]
    return mobilenet_v1_plan(stem=(STEM, f"{STEM}/bn"), blocks=blocks, head=None,
                             classifier=CLASSIFIER)


def read_tflite_network(path, padding=None):
    """(state dict, settings the file states, ignored names) of a MobileNetV1 `.tflite`.

    Settings: activation, padding, bn_eps, input_size, and logits_tensor (the classifier's
    output tensor, for the self-check against LiteRT). `padding` (the user's override) must
    be one of the rules the file's zeros match. A fully quantized int8 file gives an empty
    state dict and its finished int8 LayerRecords in settings["int8_records"], with
    settings["input_quantization"] (see int8_records). CheckpointError for anything else.
    """
    graph = read_tflite(path)
    chain = _data_chain(graph, path)
    layers = _match_mobilenet(graph, chain, path)
    tensors = graph.tensors
    activations = set()
    rules = set(PADDINGS)
    for op, role in layers[:-1]:
        activations.add(ACTIVATIONS.get(op.options.get("activation")))
        if tensors[op.inputs[1]].shape[1:3] == (3, 3):
            rules &= _matching_rules(graph, chain, op, path)
    activation = _one_activation(activations, path)
    if not rules:
        raise CheckpointError(f"{path}: the 3x3 convolutions' zero padding matches no single "
                              f"rule mobinumba has ({', '.join(PADDINGS)})")
    if padding is not None and padding not in rules:
        raise CheckpointError(f"{path}: --padding {padding} disagrees with the file's "
                              f"convolutions, which pad as {' or '.join(sorted(rules))}")
    chosen = padding or ("tf_same" if "tf_same" in rules else sorted(rules)[0])
    classifier = layers[-1][0]
    # The tensor the network starts from: after a QUANTIZE, before the stem's PAD if any.
    stem_input = tensors[next(op for op in chain if op.name != "QUANTIZE").inputs[0]]
    settings = dict(activation=activation, padding=chosen, bn_eps=IDENTITY_EPS,
                    input_size=stem_input.shape[1], logits_tensor=classifier.outputs[0],
                    stem_input_tensor=stem_input.index)
    quantized = [op for op, _ in layers if tensors[op.inputs[1]].type != FLOAT32]
    if quantized or tensors[graph.inputs[0]].type != FLOAT32:
        if [op for op, _ in layers] != quantized or stem_input.type != INT8:
            raise CheckpointError(f"{path}: a partly quantized MobileNetV1 "
                                  f"({_quantization(graph, quantized)}); mobinumba reads "
                                  f"float32 and fully quantized int8 .tflite files")
        settings["int8_records"], settings["input_quantization"] = int8_records(
            graph, chain, layers, path)
        return {}, settings, []
    state = {}
    for op, role in layers:
        weight, bias = _weights(graph, op, role, path)
        state[f"{role}.weight"] = weight.astype(np.float32)
        if bias is not None or role == CLASSIFIER:
            state[f"{role}.bias"] = (bias.astype(np.float32) if bias is not None
                                     else np.zeros(len(weight), np.float32))
        if role != CLASSIFIER:
            state.update(_identity_batch_norm(role, len(weight)))
    return state, settings, []


# ------------------------------------------------------------------------------ int8

def int8_records(graph, chain, layers, path):
    """(int8 LayerRecords, input Quantization) of a fully quantized file, as the int8
    runtime's records hold them (quantization.py): int8 weights symmetric per output channel
    (a per-tensor scale repeated), int32 biases, each layer's output quantization, and the
    classifier's pooling (AVERAGE_POOL_2D 'average', MEAN 'mean') with its output's.

    Refuses asymmetric (legacy uint8) weights, per-channel activations, and a chain whose
    tensors change quantization where the runtime keeps it (PAD, RESHAPE, AVERAGE_POOL_2D).
    """
    from ..quantization import LayerQuantization, Quantization

    tensors = graph.tensors

    def activation_quantization(tensor, what):
        q = tensor.quantization
        if tensor.type != INT8 or q is None or len(q.scale) != 1:
            raise CheckpointError(f"{path}: tensor {tensor.index} ({what}) is "
                                  f"{tensor.type_name}"
                                  f"{'' if q is None else f' with {len(q.scale)} scales'}; an "
                                  f"int8 model's activations are int8, one scale per tensor")
        if not -128 <= int(q.zero_point[0]) <= 127:
            raise CheckpointError(f"{path}: tensor {tensor.index} ({what}) has zero point "
                                  f"{int(q.zero_point[0])}, outside int8")
        return Quantization(float(q.scale[0]), int(q.zero_point[0]))

    def same_through(op):
        source = activation_quantization(tensors[op.inputs[0]], f"{op.name} input")
        result = activation_quantization(tensors[op.outputs[0]], f"{op.name} output")
        if source != result:
            raise CheckpointError(f"{path}: operator {op.index} ({op.name}) changes the "
                                  f"quantization ({source} -> {result}); mobinumba's int8 "
                                  f"runtime keeps it")
        return result

    plan = mobilenet_v1_plan(stem=(STEM, None), blocks=[("", None, "", None)] * NUM_BLOCKS,
                             head=None, classifier=CLASSIFIER)
    start = next(op for op in chain if op.name != "QUANTIZE")
    input_quantization = activation_quantization(tensors[start.inputs[0]], "stem input")
    records = []
    previous = input_quantization
    position = 0
    for (op, role), source_layer in zip(layers, plan):
        pooled, pool_op = None, "average"
        while chain[position] is not op:  # PAD, pooling, RESHAPE before this layer
            between = chain[position]
            if between.name == "MEAN":
                pooled = activation_quantization(tensors[between.outputs[0]], "MEAN output")
                pool_op = "mean" if between.options.get("keep_dims") else "mean_flat"
            elif between.name != "QUANTIZE":
                pooled = same_through(between)
                if between.name == "AVERAGE_POOL_2D":
                    pool_op = "average"
            position += 1
        position += 1
        source = activation_quantization(tensors[op.inputs[0]], f"{role} input")
        expected = pooled if role == CLASSIFIER else previous
        if source != expected:
            raise CheckpointError(f"{path}: operator {op.index} ({op.name}, {role}) reads "
                                  f"quantization {source}; the tensor before it has {expected}")
        weight, bias = _weights(graph, op, role, path)
        weight_scale = _weight_scales(tensors[op.inputs[1]], op, weight.shape[0], path)
        if bias is None:
            bias = np.zeros(weight.shape[0], np.int32)
        elif tensors[op.inputs[2]].type != INT32:
            raise CheckpointError(f"{path}: operator {op.index} ({op.name}) has a "
                                  f"{tensors[op.inputs[2]].type_name} bias; expected int32")
        output = activation_quantization(tensors[op.outputs[0]], f"{role} output")
        quant = LayerQuantization(weight_scale=weight_scale, output=output,
                                  pooled=pooled if role == CLASSIFIER else None,
                                  pool_op=pool_op)
        records.append(LayerRecord(name=source_layer.name, kind=source_layer.kind,
                                   stride=source_layer.stride, weight=weight.astype(np.int8),
                                   bias=bias.astype(np.int32), source_name=role, quant=quant))
        previous = output
    return records, input_quantization


def _weight_scales(tensor, op, channels, path):
    """(channels,) float32 weight scales of an int8 weight tensor, symmetric."""
    q = tensor.quantization
    if tensor.type != INT8 or q is None:
        legacy = " (legacy asymmetric uint8 weights)" if tensor.type_name == "uint8" else ""
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) has "
                              f"{tensor.type_name} weights{legacy}; mobinumba's int8 runtime "
                              f"takes int8 weights with symmetric scales")
    if np.any(q.zero_point != 0):
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) weights have zero "
                              f"point {int(q.zero_point[q.zero_point != 0][0])}; int8 weights "
                              f"must be symmetric (zero point 0)")
    output_axis = 3 if op.name == "DEPTHWISE_CONV_2D" else 0
    if len(q.scale) == 1:
        return np.full(channels, q.scale[0], np.float32)
    if q.axis != output_axis or len(q.scale) != channels:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) weights have "
                              f"{len(q.scale)} scales along axis {q.axis}; expected one per "
                              f"output channel (axis {output_axis})")
    return q.scale.astype(np.float32)


# ----------------------------------------------------------------------------- the graph

def _data_chain(graph, path):
    """Operators from the graph input to its output, each consuming the previous output.

    Refuses a graph that branches (residual ADDs, concatenations), has several inputs or
    outputs, or has operators off the chain other than a RESHAPE's shape computation.
    """
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        _refuse(graph, path, f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                             f"MobileNetV1 has one of each")
    consumers = {}
    for op in graph.operators:
        if op.name == "SHAPE":
            continue  # reads only its input's shape
        for tensor in set(op.inputs) - {-1}:
            consumers.setdefault(tensor, []).append(op)
    chain = []
    tensor = graph.inputs[0]
    while tensor != graph.outputs[0]:
        users = consumers.get(tensor, [])
        if len(users) != 1 or users[0].inputs[:1] != (tensor,) or len(users[0].outputs) != 1:
            why = (f"tensor {tensor} feeds {len(users)} operators" if len(users) != 1 else
                   f"operator {users[0].index} ({users[0].name}) does not take tensor "
                   f"{tensor} as its one data input")
            _refuse(graph, path, f"the graph is not a chain ({why})")
        if len(chain) > len(graph.operators):
            _refuse(graph, path, "the graph has a cycle")
        chain.append(users[0])
        tensor = users[0].outputs[0]
    on_chain = {op.index for op in chain}
    for op in graph.operators:
        if op.index not in on_chain and op.name not in SHAPE_OPS:
            _refuse(graph, path, f"operator {op.index} ({op.name}) is off the main path")
    return chain


def _match_mobilenet(graph, chain, path):
    """[(operator, role)] of the weight layers: conv_stem, blockNN_dw, blockNN_pw, classifier.

    The chain must read: [QUANTIZE] [PAD] CONV_2D, 13 x ([PAD] DEPTHWISE_CONV_2D, CONV_2D),
    a pooling, [RESHAPE/SQUEEZE], CONV_2D or FULLY_CONNECTED, then only RESHAPE, SQUEEZE,
    SOFTMAX, QUANTIZE, DEQUANTIZE.
    """
    names = [op.name for op in chain]
    position = 0

    def take(expected, optional=False):
        nonlocal position
        if position < len(chain) and names[position] in expected:
            position += 1
            return chain[position - 1]
        if optional:
            return None
        found = names[position] if position < len(chain) else "the end of the graph"
        _refuse(graph, path, f"expected {' or '.join(sorted(expected))} at step "
                             f"{position + 1} of the main path, found {found}")

    take({"QUANTIZE"}, optional=True)
    take({"PAD"}, optional=True)
    layers = [(take({"CONV_2D"}), STEM)]
    block = 0
    while position < len(chain) and names[position] in ("PAD", "DEPTHWISE_CONV_2D"):
        block += 1
        take({"PAD"}, optional=True)
        layers.append((take({"DEPTHWISE_CONV_2D"}), f"block{block:02d}_dw"))
        layers.append((take({"CONV_2D"}), f"block{block:02d}_pw"))
    if block != NUM_BLOCKS:
        _refuse(graph, path, f"{block} depthwise-separable blocks; MobileNetV1 has "
                             f"{NUM_BLOCKS}")
    pool = take(POOL_OPS)
    while take({"RESHAPE", "SQUEEZE"}, optional=True):
        pass
    layers.append((take({"CONV_2D", "FULLY_CONNECTED"}), CLASSIFIER))
    while take(TAIL_OPS | CONVERSION_OPS, optional=True):
        pass
    if position != len(chain):
        _refuse(graph, path, f"unexpected {names[position]} after the classifier")
    _check_strides(graph, layers, path)
    _check_pool(graph, pool, path)
    return layers


def _check_strides(graph, layers, path):
    expected = [STEM_STRIDE] + [s for stride in BLOCK_STRIDES for s in (stride, 1)] + [1]
    for (op, role), stride in zip(layers, expected):
        if op.name == "FULLY_CONNECTED":
            continue
        found = (op.options.get("stride_h"), op.options.get("stride_w"))
        if found != (stride, stride):
            raise CheckpointError(f"{path}: operator {op.index} ({op.name}, {role}) has "
                                  f"strides {found}; MobileNetV1 has {stride}")
        dilation = (op.options.get("dilation_h"), op.options.get("dilation_w"))
        if dilation != (1, 1):
            raise CheckpointError(f"{path}: operator {op.index} ({op.name}, {role}) has "
                                  f"dilation {dilation}; MobileNetV1 has none")


def _check_pool(graph, op, path):
    """The pooling averages the whole feature map (what the runtime's global pool does)."""
    source = graph.tensors[op.inputs[0]].shape
    if len(source) != 4:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) pools a tensor of "
                              f"shape {list(source)}; expected (N, H, W, C)")
    if op.name == "AVERAGE_POOL_2D":
        window = (op.options.get("filter_height"), op.options.get("filter_width"))
        if window != source[1:3] or op.options.get("activation") != 0:
            raise CheckpointError(f"{path}: operator {op.index} (AVERAGE_POOL_2D) pools "
                                  f"{window} windows of a {source[1:3]} map; MobileNetV1 "
                                  f"averages the whole map")
        return
    axes = _constant(graph, op, 1, path)
    if sorted(axes.reshape(-1).tolist()) != [1, 2]:
        raise CheckpointError(f"{path}: operator {op.index} (MEAN) averages axes "
                              f"{axes.reshape(-1).tolist()}; MobileNetV1 averages (1, 2)")


# ---------------------------------------------------------------------------- the layers

def _weights(graph, op, role, path):
    """(weight in PyTorch's layout, bias or None) of a weight layer, in the file's dtypes."""
    weight = _constant(graph, op, 1, path)
    source = graph.tensors[op.inputs[0]].shape
    if len(source) < 2 or source[0] < 1:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) reads a tensor of "
                              f"shape {list(source)}")
    channels = source[-1]
    if op.name == "FULLY_CONNECTED":
        if op.options.get("weights_format") != 0:
            raise CheckpointError(f"{path}: operator {op.index} (FULLY_CONNECTED) has shuffled "
                                  f"weights; expected the default format")
        if weight.ndim != 2 or weight.shape[1] != channels:
            raise CheckpointError(f"{path}: operator {op.index} (FULLY_CONNECTED) weight has "
                                  f"shape {list(weight.shape)}; expected (K, {channels})")
        torch_weight = weight
    elif weight.ndim != 4:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) weight has shape "
                              f"{list(weight.shape)}; expected 4 dimensions")
    elif op.name == "DEPTHWISE_CONV_2D":
        if weight.shape[0] != 1 or weight.shape[3] != channels:
            raise CheckpointError(f"{path}: operator {op.index} (DEPTHWISE_CONV_2D) weight has "
                                  f"shape {list(weight.shape)}; expected (1, 3, 3, {channels})"
                                  f" (depth multiplier 1)")
        torch_weight = weight.transpose(3, 0, 1, 2)  # (1, kh, kw, C) -> (C, 1, kh, kw)
    else:
        if weight.shape[3] != channels:
            raise CheckpointError(f"{path}: operator {op.index} (CONV_2D) weight has shape "
                                  f"{list(weight.shape)} over {channels} input channels")
        torch_weight = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
    if role == CLASSIFIER:
        if torch_weight.ndim == 4:
            if torch_weight.shape[2:] != (1, 1):
                raise CheckpointError(f"{path}: operator {op.index} (CONV_2D logits) has a "
                                      f"{torch_weight.shape[2:]} kernel; expected 1x1")
            torch_weight = torch_weight[:, :, 0, 0]
        if op.options.get("activation") != 0:
            raise CheckpointError(f"{path}: operator {op.index} ({op.name} logits) has a fused "
                                  f"activation; MobileNetV1's classifier has none")
    bias = None
    if len(op.inputs) > 2 and op.inputs[2] != -1:
        bias = _constant(graph, op, 2, path)
        if bias.shape != (torch_weight.shape[0],):
            raise CheckpointError(f"{path}: operator {op.index} ({op.name}) bias has shape "
                                  f"{list(bias.shape)}; expected ({torch_weight.shape[0]},)")
    _check_output(graph, op, torch_weight.shape[0], path)
    return np.ascontiguousarray(torch_weight), bias


def _check_output(graph, op, channels, path):
    output = graph.tensors[op.outputs[0]].shape
    if not output or output[-1] != channels:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) output has shape "
                              f"{list(output)}; expected {channels} channels")


def _constant(graph, op, slot, path):
    """The constant data of the operator's input `slot`, or CheckpointError."""
    if len(op.inputs) <= slot or op.inputs[slot] == -1:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) has no input {slot}")
    tensor = graph.tensors[op.inputs[slot]]
    if tensor.data is None:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) input {slot} (tensor "
                              f"{tensor.index}) is not a constant")
    if tensor.data.size and tensor.data.dtype.kind == "f" and \
            not np.isfinite(tensor.data).all():
        raise CheckpointError(f"{path}: tensor {tensor.index} ({tensor.name}) contains NaN or "
                              f"Inf")
    return tensor.data


def _identity_batch_norm(role, channels):
    return {f"{role}/bn.weight": np.ones(channels, np.float32),
            f"{role}/bn.bias": np.zeros(channels, np.float32),
            f"{role}/bn.running_mean": np.zeros(channels, np.float32),
            f"{role}/bn.running_var": np.full(channels, 1.0 - IDENTITY_EPS, np.float32)}


def _one_activation(found, path):
    if len(found) != 1 or not found <= {"relu", "relu6"}:
        shown = ", ".join(sorted(str(name) for name in found))
        raise CheckpointError(f"{path}: the convolutions' fused activations are {shown}; "
                              f"mobinumba runs MobileNetV1 with one of relu, relu6")
    return found.pop()


def _matching_rules(graph, chain, op, path):
    """The padding rules that give this 3x3 conv's zeros at its input size."""
    before = chain[chain.index(op) - 1] if chain.index(op) > 0 else None
    explicit = ((0, 0),) * 4
    source = graph.tensors[op.inputs[0]].shape
    if before is not None and before.name == "PAD":
        amounts = _constant(graph, before, 1, path)
        if amounts.shape != (4, 2) or amounts[0].any() or amounts[3].any():
            raise CheckpointError(f"{path}: operator {before.index} (PAD) pads "
                                  f"{amounts.tolist()}; expected height and width only")
        explicit = tuple(tuple(int(v) for v in row) for row in amounts)
        source = graph.tensors[before.inputs[0]].shape
    if len(source) != 4 or source[1] != source[2]:
        raise CheckpointError(f"{path}: operator {op.index} ({op.name}) reads shape "
                              f"{list(source)}; expected (N, S, S, C), square")
    padding = TFLITE_PADDINGS.get(op.options.get("padding"))
    stride = op.options["stride_h"]
    found = []
    for axis in (1, 2):
        if padding == "SAME":
            if explicit[axis] != (0, 0):
                raise CheckpointError(f"{path}: operator {op.index} ({op.name}) pads twice "
                                      f"(PAD, then SAME)")
            found.append(pads(source[axis], 3, stride, "tf_same"))
        elif padding == "VALID":
            found.append(explicit[axis])
        else:
            raise CheckpointError(f"{path}: operator {op.index} ({op.name}) has padding "
                                  f"{op.options.get('padding')}")
    return {rule for rule in PADDINGS
            if all(pads(source[axis], 3, stride, rule) == found[axis - 1] for axis in (1, 2))}


def _quantization(graph, quantized):
    """What a quantized file holds, e.g. 'int8 weights per channel, uint8 input'."""
    tensors = graph.tensors
    weights = sorted({tensors[op.inputs[1]].type_name for op in quantized})
    scales = {len(tensors[op.inputs[1]].quantization.scale) > 1 for op in quantized
              if tensors[op.inputs[1]].quantization is not None}
    per = {frozenset({True}): " per channel", frozenset({False}): " per tensor"}.get(
        frozenset(scales), "")
    legacy = " (legacy asymmetric uint8 weights)" if "uint8" in weights else ""
    parts = [f"{'/'.join(weights) or 'float32'} weights{per}{legacy}",
             f"{tensors[graph.inputs[0]].type_name} input",
             f"{tensors[graph.outputs[0]].type_name} output"]
    return ", ".join(parts)


def _refuse(graph, path, why):
    """CheckpointError: not a MobileNetV1, with the file's operator counts."""
    counts = Counter(op.name for op in graph.operators)
    summary = ", ".join(f"{count} {name}" for name, count in counts.most_common(8))
    more = (f", {len(counts) - 8} more kind{'s' if len(counts) > 9 else ''}"
            if len(counts) > 8 else "")
    raise CheckpointError(f"{path}: not a MobileNetV1 graph: {why} (operators: "
                          f"{summary or 'none'}{more})")
