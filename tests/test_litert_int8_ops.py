"""The int8 head ops against LiteRT itself, one operator at a time.

Each test writes a one-operator int8 `.tflite` (export_tflite's FlatBuffer writer, no
TensorFlow), runs it with LiteRT's builtin resolver (what `Interpreter` uses by default and
convert's self-check uses: one thread, no XNNPACK) and compares every output element with
mobinumba's int8 op on the same input. LiteRT does not run TFLite's reference kernels for
these: MEAN and a batch-1 FULLY_CONNECTED have their own rounding (see
quantization.mean_requantization and ops/dense.QuantizedDense), which these tests pin.
About 3 s (one LiteRT interpreter per case, a few Numba compilations from the cache).
"""
import numpy as np
import pytest

import qreference
from mobinumba.export_tflite import (CONV_2D, CONV_OPTIONS, FC_OPTIONS, FULLY_CONNECTED,
                                     INT8, INT32, MEAN, REDUCER_OPTIONS, _Graph)
from mobinumba.ops.pool import QuantizedGlobalAvgPool
from mobinumba.quantization import LayerQuantization, Quantization, requantization

pytest.importorskip("ai_edge_litert")


def _per_tensor(quantization):
    return (np.array([quantization.scale], np.float32),
            np.array([quantization.zero_point], np.int64), 0)


def run_litert(model, inputs):
    """LiteRT's int8 outputs, one input at a time (batch 1, as convert's self-check)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=model, num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    outputs = []
    for x in inputs:
        interpreter.set_tensor(source, x[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target).reshape(-1).copy())
    return np.stack(outputs)


def run_op(op, x, out_shape):
    kernel, args = op.bind(x, np.empty(out_shape, np.int8))
    kernel(*args)
    return args[-1]


# --------------------------------------------------------------------------------- MEAN

def mean_model(size, channels, source, target, keep_dims):
    graph = _Graph()
    x = graph.tensor("x", (1, size, size, channels), kind=INT8, quant=_per_tensor(source))
    axes = graph.tensor("axes", (2,), np.array([1, 2], np.int32), INT32)
    shape = (1, 1, 1, channels) if keep_dims else (1, channels)
    y = graph.tensor("y", shape, kind=INT8, quant=_per_tensor(target))
    graph.operator(MEAN, (x, axes), y, REDUCER_OPTIONS, [("bool", 0, keep_dims)])
    return graph.finish(x, y)


MEAN_CASES = [  # (size, channels, input (scale, zp), output (scale, zp))
    (2, 256, (0.05, -9), (0.031, 4)),      # keras.applications.MobileNet 0.25 at 64
    (7, 1024, (0.0235, -128), (0.0118, -128)),  # MobileNetV1 1.0 at 224
    (3, 40, (0.02, 100), (0.03, 100)),     # a scalar tail of 8 channels after 2 blocks
    (5, 13, (0.11, 0), (0.05, 27)),        # fewer than 16 channels: scalar only
    (1, 16, (0.05, -3), (0.05, -3)),       # input quantization = output quantization
]


@pytest.mark.parametrize("pool_op", ["mean", "mean_flat"])
@pytest.mark.parametrize("size,channels,source,target", MEAN_CASES)
def test_mean_equals_litert(size, channels, source, target, pool_op):
    """Every pooled value equals LiteRT's MEAN (keep_dims for 'mean', not for 'mean_flat'),
    on inputs spread over the whole int8 range and concentrated near one value (the
    rounding ties of a small H*W)."""
    source, target = Quantization(*source), Quantization(*target)
    rng = np.random.default_rng(size * channels)
    wide = rng.integers(-128, 128, (40, size, size, channels))
    narrow = rng.integers(-20, 21, (40, size, size, channels)) + rng.integers(-100, 100)
    x = np.concatenate([wide, narrow]).astype(np.int8)
    expected = run_litert(mean_model(size, channels, source, target, pool_op == "mean"), x)
    layer = LayerQuantization(np.ones(1, np.float32), target, target, pool_op)
    actual = run_op(QuantizedGlobalAvgPool(channels, source, layer), x, (len(x), channels))
    assert np.array_equal(actual, expected)
    assert np.array_equal(qreference.mean(x, source, target, pool_op), expected)
    assert len(np.unique(expected)) > 10  # values that vary: the comparison means something


# ------------------------------------------------------------------- FULLY_CONNECTED

def dense_model(weight, bias, weight_scale, source, target, operator="FULLY_CONNECTED"):
    """A FULLY_CONNECTED (1, C) -> (1, K), or a 1x1 CONV_2D (1, 1, 1, C) -> (1, 1, 1, K) as
    keras.applications.MobileNet's classifier."""
    graph = _Graph()
    classes, features = weight.shape
    conv = operator == "CONV_2D"
    x = graph.tensor("x", (1, 1, 1, features) if conv else (1, features), kind=INT8,
                     quant=_per_tensor(source))
    w = graph.tensor("w", (classes, 1, 1, features) if conv else weight.shape,
                     weight.reshape((classes, 1, 1, features) if conv else weight.shape), INT8,
                     (weight_scale, np.zeros(classes, np.int64), 0))
    b = graph.tensor("b", (classes,), bias, INT32,
                     (np.float32(source.scale) * weight_scale, np.zeros(classes, np.int64), 0))
    y = graph.tensor("y", (1, 1, 1, classes) if conv else (1, classes), kind=INT8,
                     quant=_per_tensor(target))
    if conv:
        graph.operator(CONV_2D, (x, w, b), y, CONV_OPTIONS,
                       [("i8", 0, 1), ("i32", 1, 1), ("i32", 2, 1), ("i8", 3, 0),
                        ("i32", 4, 1), ("i32", 5, 1)])
    else:
        graph.operator(FULLY_CONNECTED, (x, w, b), y, FC_OPTIONS, [("i8", 0, 0)])
    return graph.finish(x, y)


def dense_case(features, classes, seed, weight_max, per_tensor=False):
    """(record, input quantization, int8 inputs (N, C)) of a random classifier with weights
    in [-weight_max, weight_max], its outputs spread over the int8 range (~3% clamped).
    Small weights give a multiplier near 1 / 2^k with small k: many rounding halves."""
    from mobinumba.weights import LayerRecord

    rng = np.random.default_rng(seed)
    weight = rng.integers(-weight_max, weight_max + 1, (classes, features)).astype(np.int8)
    weight_scale = rng.uniform(0.002, 0.02, classes).astype(np.float32)
    if per_tensor:
        weight_scale[:] = weight_scale[0]
    source = Quantization(0.0235, -128)
    bias = rng.integers(-20000, 20000, classes).astype(np.int32)
    x = rng.integers(-128, 128, (300, features)).astype(np.int8)
    acc = qreference.dense(x, weight, bias, source.zero_point)  # (N, K) int64
    real = acc * (np.float64(np.float32(source.scale)) * weight_scale)
    scale = np.float32(np.percentile(np.abs(real), 97) / 127)  # ~3% clamped
    target = Quantization(float(scale), int(rng.integers(-20, 20)))
    quant = LayerQuantization(weight_scale, target, source, "average")
    record = LayerRecord(name="classifier", kind="dense", stride=1, weight=weight, bias=bias,
                         source_name="classifier", quant=quant)
    return record, source, x


@pytest.mark.parametrize("operator", ["FULLY_CONNECTED", "CONV_2D"])
@pytest.mark.parametrize("features,classes,seed,weight_max,per_tensor", [
    (1024, 1001, 1, 127, False), (256, 10, 0, 3, False), (256, 10, 7, 3, True),
    (64, 4, 2, 3, False), (13, 7, 3, 5, False), (8, 5, 4, 3, False),
    # fewer than 4 classes or 8 features: not LiteRT's GEMV (ruy), halves rounded up too
    (64, 3, 5, 3, False), (7, 12, 6, 5, False)])
def test_dense_equals_litert(features, classes, seed, weight_max, per_tensor, operator):
    """Every int8 logit equals LiteRT's FULLY_CONNECTED at batch 1. Its matrix x vector
    path (cpu_backend_gemm_custom_gemv.h, >= 4 classes and >= 8 features) requantizes
    with vqrdmulh and vrshl, which round halves up, where TFLite's reference kernel rounds
    them away from zero: the cases below hit such halves (checked), so a classifier that
    rounded the reference kernel's way gives -128 for -127, 48 for 49, ..."""
    from mobinumba.ops.dense import QuantizedDense

    record, source, x = dense_case(features, classes, seed, weight_max, per_tensor)
    quant = record.quant
    model = dense_model(record.weight, record.bias, quant.weight_scale, source,
                        quant.output, operator)
    expected = run_litert(model, x.reshape((len(x), 1, 1, features) if operator == "CONV_2D"
                                           else x.shape))
    op = QuantizedDense(record, None, None, source)
    actual = run_op(op, x, (len(x), classes))
    assert np.array_equal(actual, expected)
    assert len(np.unique(expected)) > 10
    # The case has halves: TFLite's reference rounding gives other logits than LiteRT.
    acc = qreference.dense(x, record.weight, record.bias, source.zero_point)
    multiplier, shift = requantization(source.scale, quant.weight_scale, quant.output.scale)
    reference = qreference.requantize(acc, multiplier, shift, quant.output.zero_point,
                                      -128, 127)
    assert np.count_nonzero(reference != expected) > 0


@pytest.mark.parametrize("pool_op", ["average", "mean", "mean_flat"])
def test_quantized_network_equals_litert_on_every_logit(pool_op):
    """The issue's case: a random model quantized by `mobinumba quantize` and exported to
    .tflite. Before the classifier rounded halves up, 6 of these 2,000 int8 logits were one
    below LiteRT's (-128 for -127, 48 for 49, ...); every other layer was already exact.
    With its pooling made a MEAN (keep_dims or not, requantized to another scale), the
    exported MEAN must round trip and agree too."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mobinumba.bench.synthetic import random_model_file
    from mobinumba.convert.tflite_file import parse_tflite
    from mobinumba.export_tflite import tflite_bytes
    from mobinumba.model import Model
    from mobinumba.quantize import quantize_model_file

    rng = np.random.default_rng(2)
    calibration = [rng.standard_normal((4, 3, 64, 64)).astype(np.float32) for _ in range(2)]
    int8_file, _ = quantize_model_file(random_model_file(0.25, 10, 64, seed=2), calibration)
    if pool_op != "average":
        classifier_quant = int8_file.layers[-1].quant
        pooled = classifier_quant.pooled
        classifier_quant.pool_op = pool_op
        classifier_quant.pooled = Quantization(float(np.float32(pooled.scale * 0.7)),
                                               pooled.zero_point + 9)
    content = tflite_bytes(int8_file)[0]
    graph = parse_tflite(content)
    stem = next(op for op in graph.operators if op.name != "QUANTIZE").inputs[0]
    classifier = [op for op in graph.operators if op.name == "FULLY_CONNECTED"][-1]
    interpreter = Interpreter(
        model_content=content, num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    stems, expected = [], []
    for _ in range(200):
        interpreter.set_tensor(source["index"],
                               rng.uniform(-3, 3, source["shape"]).astype(np.float32))
        interpreter.invoke()
        stems.append(interpreter.get_tensor(stem)[0].copy())
        expected.append(interpreter.get_tensor(classifier.outputs[0]).reshape(-1).copy())
    actual = Model(int8_file).run_quantized(np.stack(stems).astype(np.int8))
    assert np.array_equal(actual, np.stack(expected))
    assert len(np.unique(expected)) > 20
