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
from mobinumba.export_tflite import (FC_OPTIONS, FULLY_CONNECTED, INT8, INT32, MEAN,
                                     REDUCER_OPTIONS, _Graph)
from mobinumba.ops.pool import QuantizedGlobalAvgPool
from mobinumba.quantization import LayerQuantization, Quantization

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
