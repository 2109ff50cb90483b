"""`.tflite` test files written by TensorFlow's own converter (never downloaded).

Each builder makes a Keras model with random weights, batch-norm statistics away from
identity (so 28 layers keep activations, and logits, of a realistic size), and converts it
with tf.lite.TFLiteConverter. TensorFlow is imported only here, lazily: it costs 5-10 s.
"""
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _randomize(model, seed):
    """Random He-scaled kernels and batch norms (gamma, beta, mean, var) in place."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape = tuple(weight.shape)
            name = weight.path.rsplit("/", 1)[-1]
            if name in ("kernel", "depthwise_kernel"):
                fan_in = np.prod(shape[:-1]) if name == "kernel" else np.prod(shape[:2])
                values.append(rng.standard_normal(shape) * np.sqrt(2.0 / fan_in))
            elif name == "gamma":
                values.append(0.5 + rng.random(shape))
            elif name in ("beta", "bias"):
                values.append(0.2 * rng.standard_normal(shape) + 0.1)
            elif name == "moving_mean":
                values.append(0.3 * rng.standard_normal(shape) + 0.2)
            elif name == "moving_variance":
                values.append(0.5 + 1.5 * rng.random(shape))
            else:
                values.append(np.asarray(weight))
        if values:
            layer.set_weights([v.astype(np.float32) for v in values])
    return model


def keras_mobilenet(alpha, size, classes, seed=0):
    """keras.applications.MobileNet (weights=None) randomized: ZeroPadding + VALID stride-2
    depthwise convs, MEAN, 1x1-conv logits, dynamic RESHAPE, SOFTMAX."""
    import keras

    model = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=alpha,
                                         weights=None, classes=classes)
    return _randomize(model, seed)


def slim_like_mobilenet(width, size, classes, *, padding="same", head="conv",
                        activation="relu6", seed=0):
    """A Keras functional MobileNetV1 shaped like TF-slim's: 3x3 convs with `padding` 'same'
    (TensorFlow SAME) or 'torch' (ZeroPadding2D(1) + valid), batch norm, ReLU6 or ReLU, then
    AveragePooling2D over the whole map, a 1x1-conv ('conv', with Reshape) or Dense ('dense')
    classifier and softmax."""
    import keras
    from keras import layers

    strides = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
    channels = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
    relu = (lambda: layers.ReLU(6.0)) if activation == "relu6" else layers.ReLU

    def conv3x3(x, stride, depthwise, filters=None):
        if padding == "torch":
            x = layers.ZeroPadding2D(1)(x)
        mode = "valid" if padding == "torch" else "same"
        if depthwise:
            x = layers.DepthwiseConv2D(3, strides=stride, padding=mode, use_bias=False)(x)
        else:
            x = layers.Conv2D(filters, 3, strides=stride, padding=mode, use_bias=False)(x)
        return relu()(layers.BatchNormalization(epsilon=1e-3)(x))

    inputs = keras.Input((size, size, 3))
    x = conv3x3(inputs, 2, False, int(32 * width))
    for stride, filters in zip(strides, channels):
        x = conv3x3(x, stride, True)
        x = layers.Conv2D(int(filters * width), 1, use_bias=False)(x)
        x = relu()(layers.BatchNormalization(epsilon=1e-3)(x))
    if head == "conv":
        x = layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
        x = layers.Conv2D(classes, 1)(x)
        x = layers.Reshape((classes,))(x)
    else:
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(classes)(x)
    outputs = layers.Softmax()(x)
    return _randomize(keras.Model(inputs, outputs), seed)


def keras_mobilenet_v2(size, classes, seed=0):
    """A small randomized keras.applications.MobileNetV2 (residual ADDs): not a V1."""
    import keras

    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35,
                                           weights=None, classes=classes)
    return _randomize(model, seed)


def write_tflite(model, path, quantize=None, size=None):
    """Convert `model` to `path`: float32, or quantize='int8' (full integer, int8 input and
    output) or 'uint8' (uint8 input and output), calibrated on random [-1, 1] images."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        shape = (1,) + tuple(model.input_shape[1:])
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(8):
                yield [rng.uniform(-1, 1, shape).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8 if quantize == "int8" else tf.uint8
        converter.inference_output_type = converter.inference_input_type
    with open(path, "wb") as stream:
        stream.write(converter.convert())
    return str(path)
