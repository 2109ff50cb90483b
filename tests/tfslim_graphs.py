"""Synthetic TF-slim MobileNetV1 frozen graphs, and a reference forward pass in TF's terms.

The graphs are written with TensorFlow's own GraphDef message classes (the copies that ship
with tensorboardX) and Google's protobuf encoder, so they test mobinumba's hand-written
GraphDef reader against an independent writer. They follow the node names and tensor
layouts of a real `mobilenet_v1_1.0_224` frozen graph: HWIO conv weights, (3, 3, C, 1)
depthwise weights, BatchNorm/{gamma, beta, moving_mean, moving_variance}, the epsilon as a
`.../BatchNorm/batchnorm/add/y` scalar, SAME-padded Conv2D / DepthwiseConv2dNative nodes, a
1x1-conv classifier with biases, and a retrained head outside the MobilenetV1 scope.

`tf_reference_logits` is a float64 NumPy forward pass written directly in TensorFlow's
conventions (NHWC activations, HWIO kernels), padding explicitly: for a 3x3 kernel, SAME pads
(0 before, 1 after) on an even-sized axis at stride 2 and (1, 1) otherwise.
"""
import itertools

import numpy as np
from tensorboardX.proto import (attr_value_pb2, graph_pb2, node_def_pb2, tensor_pb2,
                                tensor_shape_pb2)

DT_FLOAT, DT_INT32, DT_HALF = 1, 3, 19
# (base channels, stride) of the 13 depthwise-separable blocks.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def channels(base, width):
    return max(int(base * width), 8)


def random_variables(width=0.25, num_classes=1001, seed=0):
    """{TF variable name: float32 array} of a MobileNetV1 with non-trivial batch norms."""
    rng = np.random.default_rng(seed)
    variables = {}

    def conv(scope, shape):
        fan_in = shape[0] * shape[1] * (shape[2] if "depthwise" not in scope else 1)
        name = "depthwise_weights" if "depthwise" in scope else "weights"
        variables[f"{scope}/{name}"] = (rng.standard_normal(shape)
                                        * (2.0 / fan_in) ** 0.5).astype(np.float32)
        c = shape[3] if "depthwise" not in scope else shape[2]
        variables[f"{scope}/BatchNorm/gamma"] = (0.5 + rng.random(c)).astype(np.float32)
        variables[f"{scope}/BatchNorm/beta"] = (0.2 * rng.standard_normal(c) + 0.1).astype(
            np.float32)
        variables[f"{scope}/BatchNorm/moving_mean"] = (0.3 * rng.standard_normal(c)
                                                       + 0.2).astype(np.float32)
        variables[f"{scope}/BatchNorm/moving_variance"] = (0.5 + 1.5 * rng.random(c)).astype(
            np.float32)

    c_in = channels(32, width)
    conv("MobilenetV1/Conv2d_0", (3, 3, 3, c_in))
    for index, (base, _) in enumerate(BLOCKS, start=1):
        c_out = channels(base, width)
        conv(f"MobilenetV1/Conv2d_{index}_depthwise", (3, 3, c_in, 1))
        conv(f"MobilenetV1/Conv2d_{index}_pointwise", (1, 1, c_in, c_out))
        c_in = c_out
    variables["MobilenetV1/Logits/Conv2d_1c_1x1/weights"] = (
        rng.standard_normal((1, 1, c_in, num_classes)) * c_in ** -0.5).astype(np.float32)
    variables["MobilenetV1/Logits/Conv2d_1c_1x1/biases"] = (
        0.1 * rng.standard_normal(num_classes)).astype(np.float32)
    return variables


# --------------------------------------------------------------------------- writing graphs

def tensor_proto(array, dtype=DT_FLOAT, as_values=False):
    """A TensorProto of `array`: raw tensor_content, or the repeated *_val field."""
    array = np.asarray(array)
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]))
    if dtype == DT_HALF:
        proto.half_val.extend(array.astype(np.float16).view(np.uint16).ravel().tolist())
    elif not as_values:
        proto.tensor_content = array.astype({DT_FLOAT: "<f4", DT_INT32: "<i4"}[dtype]).tobytes()
    elif dtype == DT_FLOAT:
        proto.float_val.extend(array.ravel().tolist())
    else:
        proto.int_val.extend(array.ravel().tolist())
    return proto


def const_node(name, array, dtype=DT_FLOAT, as_values=False, proto=None):
    """A Const NodeDef holding `array` (or a ready TensorProto)."""
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].CopyFrom(attr_value_pb2.AttrValue(type=dtype))
    node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(
        tensor=proto if proto is not None else tensor_proto(array, dtype, as_values)))
    return node


def op_node(name, op, inputs=(), **attrs):
    """A NodeDef of `op`; string attrs as `s`, bools as `b`, floats as `f`."""
    node = node_def_pb2.NodeDef(name=name, op=op, input=list(inputs))
    node.attr["T"].CopyFrom(attr_value_pb2.AttrValue(type=DT_FLOAT))
    for key, value in attrs.items():
        if isinstance(value, str):
            node.attr[key].CopyFrom(attr_value_pb2.AttrValue(s=value.encode()))
        elif isinstance(value, bool):
            node.attr[key].CopyFrom(attr_value_pb2.AttrValue(b=value))
        else:
            node.attr[key].CopyFrom(attr_value_pb2.AttrValue(f=value))
    return node


def mobilenet_graph(variables, eps=1e-3, padding="SAME", fused=False, retrained_head=True,
                    extra_nodes=(), head=None):
    """A serialized GraphDef holding `variables` the way a frozen TF-slim graph does.

    padding "SAME" writes SAME convolutions; "VALID" writes VALID convolutions after Pad
    nodes (slim's use_explicit_padding). fused=True states the epsilon as FusedBatchNorm
    attributes instead of `batchnorm/add/y` constants. Biases are stored as float_val
    lists, everything else as tensor_content: the reader must handle both.
    retrained_head=True adds a retrained head's two constants without ops using them;
    head=(weights (K, n), bias (n,)) instead writes a whole retrain.py head (retrain_nodes).
    """
    graph = graph_pb2.GraphDef()
    graph.node.append(node_def_pb2.NodeDef(name="input", op="Placeholder"))
    previous = "input"
    for name, array in variables.items():
        graph.node.append(const_node(name, array, as_values=name.endswith("biases")))
    scopes = [name.rsplit("/", 1)[0] for name in variables
              if name.endswith("weights") and "Logits" not in name]
    for scope in sorted(scopes, key=_execution_order):
        inner = "MobilenetV1/" + scope  # slim's frozen graphs nest the ops one scope deeper
        op = "DepthwiseConv2dNative" if "depthwise" in scope else "Conv2D"
        weight = "depthwise_weights" if "depthwise" in scope else "weights"
        if padding == "VALID" and "pointwise" not in scope:
            graph.node.append(op_node(f"{inner}/Pad", "Pad", [previous]))
            previous = f"{inner}/Pad"
        graph.node.append(op_node(f"{inner}/conv", op, [previous, f"{scope}/{weight}"],
                                  padding=padding, data_format="NHWC"))
        if fused:
            graph.node.append(op_node(f"{inner}/BatchNorm/FusedBatchNorm", "FusedBatchNorm",
                                      [f"{inner}/conv", f"{scope}/BatchNorm/gamma"],
                                      epsilon=float(eps)))
        else:
            graph.node.append(const_node(f"{inner}/BatchNorm/batchnorm/add/y",
                                         np.float32(eps), as_values=True))
        graph.node.append(op_node(f"{inner}/Relu6", "Relu6", [f"{inner}/conv"]))
        previous = f"{inner}/Relu6"
    graph.node.append(const_node("MobilenetV1/Logits/SpatialSqueeze/shape",
                                 np.array([-1, 1001], np.int32), DT_INT32))
    if head is not None:
        graph.node.extend(retrain_nodes(previous, *head))
    elif retrained_head:
        rng = np.random.default_rng(1)
        graph.node.append(const_node("final_training_ops/weights/final_weights",
                                     rng.standard_normal((1001, 2)).astype(np.float32)))
        graph.node.append(const_node("final_training_ops/biases/final_biases",
                                     np.zeros(2, np.float32)))
    graph.node.extend(extra_nodes)
    return graph.SerializeToString()


def retrain_head(num_classes, logits=1001, seed=3):
    """(weights (logits, n), bias (n,)) float32 of a retrained head, both non-trivial."""
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal((logits, num_classes)) * 0.05).astype(np.float32),
            (0.3 * rng.standard_normal(num_classes)).astype(np.float32))


def retrain_nodes(features, weights, bias, logits_size=1001):
    """The frozen graph's nodes from the last block's output `features` to `final_result`:
    TF-slim's logits ops, then retrain.py's head, with the names and edges of a real
    retrained_graph.pb (nudity 0.2.3's; see mobinumba/convert/retrained.py)."""
    logits = "MobilenetV1/Logits/Conv2d_1c_1x1"
    return [
        op_node("MobilenetV1/Logits/AvgPool_1a/AvgPool", "AvgPool", [features],
                padding="VALID", data_format="NHWC"),
        op_node("MobilenetV1/Logits/Dropout_1b/Identity", "Identity",
                ["MobilenetV1/Logits/AvgPool_1a/AvgPool"]),
        op_node(f"{logits}/weights/read", "Identity", [f"{logits}/weights"]),
        op_node(f"{logits}/biases/read", "Identity", [f"{logits}/biases"]),
        op_node(f"{logits}/convolution", "Conv2D",
                ["MobilenetV1/Logits/Dropout_1b/Identity", f"{logits}/weights/read"],
                padding="SAME", data_format="NHWC"),
        op_node(f"{logits}/BiasAdd", "BiasAdd", [f"{logits}/convolution",
                                                 f"{logits}/biases/read"], data_format="NHWC"),
        op_node("MobilenetV1/Logits/SpatialSqueeze", "Squeeze", [f"{logits}/BiasAdd"]),
        const_node("MobilenetV1/Predictions/Reshape/shape",
                   np.array([-1, logits_size], np.int32), DT_INT32),
        op_node("MobilenetV1/Predictions/Reshape", "Reshape",
                ["MobilenetV1/Logits/SpatialSqueeze", "MobilenetV1/Predictions/Reshape/shape"]),
        op_node("input_1/BottleneckInputPlaceholder", "PlaceholderWithDefault",
                ["MobilenetV1/Predictions/Reshape"]),
        const_node("final_training_ops/weights/final_weights", weights),
        op_node("final_training_ops/weights/final_weights/read", "Identity",
                ["final_training_ops/weights/final_weights"]),
        const_node("final_training_ops/biases/final_biases", bias, as_values=True),
        op_node("final_training_ops/biases/final_biases/read", "Identity",
                ["final_training_ops/biases/final_biases"]),
        op_node("final_training_ops/Wx_plus_b/MatMul", "MatMul",
                ["input_1/BottleneckInputPlaceholder",
                 "final_training_ops/weights/final_weights/read"],
                transpose_a=False, transpose_b=False),
        op_node("final_training_ops/Wx_plus_b/add", "Add",
                ["final_training_ops/Wx_plus_b/MatMul",
                 "final_training_ops/biases/final_biases/read"]),
        op_node("final_result", "Softmax", ["final_training_ops/Wx_plus_b/add"]),
    ]


def _execution_order(scope):
    parts = scope.split("/")[1].split("_")  # Conv2d_N[_depthwise|_pointwise]
    return int(parts[1]), parts[-1] == "pointwise"


# ------------------------------------------------------------------------------ reference

def tf_same_pads(size, stride):
    """(before, after) of TensorFlow SAME padding for a 3x3 kernel, stated case by case."""
    return (0, 1) if stride == 2 and size % 2 == 0 else (1, 1)


def conv3x3_nhwc(x, kernel, stride, pads, depthwise):
    """float64 3x3 convolution of NHWC x with an HWIO (or (3, 3, C, 1)) kernel, VALID after
    padding by pads = ((top, bottom), (left, right))."""
    x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h = (x.shape[1] - 3) // stride + 1
    out_w = (x.shape[2] - 3) // stride + 1
    out = 0.0
    for i, j in itertools.product(range(3), range(3)):
        patch = x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
        if depthwise:
            out = out + patch * kernel[i, j, :, 0]
        else:
            out = out + patch @ kernel[i, j].astype(np.float64)
    return out


def tf_reference_logits(variables, x_nchw, eps=1e-3, padding="tf_same"):
    """Logits (N, K) float64 of the network in `variables` for x (N, 3, H, W).

    padding "tf_same" pads each 3x3 conv as TensorFlow's SAME does; "symmetric" pads 1 on
    every side (PyTorch's padding=1).
    """
    x = np.asarray(x_nchw, np.float64).transpose(0, 2, 3, 1)  # (N, H, W, 3)

    def batch_norm_relu6(y, scope):
        v = {k: variables[f"{scope}/BatchNorm/{k}"].astype(np.float64)
             for k in ("gamma", "beta", "moving_mean", "moving_variance")}
        y = (y - v["moving_mean"]) / np.sqrt(v["moving_variance"] + eps) * v["gamma"] + v["beta"]
        return np.clip(y, 0.0, 6.0)

    def pads(y, stride):
        if padding == "symmetric":
            return (1, 1), (1, 1)
        return tf_same_pads(y.shape[1], stride), tf_same_pads(y.shape[2], stride)

    scope = "MobilenetV1/Conv2d_0"
    x = batch_norm_relu6(conv3x3_nhwc(x, variables[f"{scope}/weights"], 2, pads(x, 2), False),
                         scope)
    for index, (_, stride) in enumerate(BLOCKS, start=1):
        scope = f"MobilenetV1/Conv2d_{index}_depthwise"
        x = batch_norm_relu6(conv3x3_nhwc(x, variables[f"{scope}/depthwise_weights"], stride,
                                          pads(x, stride), True), scope)
        scope = f"MobilenetV1/Conv2d_{index}_pointwise"
        x = batch_norm_relu6(x @ variables[f"{scope}/weights"][0, 0].astype(np.float64), scope)
    pooled = x.mean(axis=(1, 2))  # (N, C)
    weights = variables["MobilenetV1/Logits/Conv2d_1c_1x1/weights"][0, 0].astype(np.float64)
    return pooled @ weights + variables["MobilenetV1/Logits/Conv2d_1c_1x1/biases"]
