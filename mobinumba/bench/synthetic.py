"""Random-weight MobileNetV1 models, built in memory as layer records (nothing downloaded).

Weights have He-like scale and batch-norm statistics away from identity, so activations stay
in a realistic range through 28 layers and logits are not all zero: the numerical agreement
between engines that the report prints means something.
"""
import math

import numpy as np

from ..architecture import LayerSpec, mobilenet_v1_specs
from ..ops.depthwise import KIND as DEPTHWISE
from ..ops.pointwise import KIND as POINTWISE
from ..ops.stem import KIND as STEM
from ..weights import BatchNorm, LayerRecord, ModelFile, ModelInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5


def random_record(spec, rng):
    """A LayerRecord of random weights with the shapes of `spec` (any kind with weights):
    He-scaled weights and random batch norm for convolutions, a 1/sqrt(fan-in) scale and a
    bias for the classifier."""
    kind = spec.op
    shape = kind.weight_shape(spec.in_channels, spec.out_channels)
    fan_in = math.prod(shape[1:])
    if not kind.has_bn:
        weight = rng.standard_normal(shape) * fan_in ** -0.5
        bias = 0.1 * rng.standard_normal(spec.out_channels)
        return LayerRecord(spec.name, spec.kind, spec.stride, weight.astype(np.float32),
                           bias=bias.astype(np.float32))
    weight = rng.standard_normal(shape) * (2.0 / fan_in) ** 0.5
    c = spec.out_channels
    bn = BatchNorm(gamma=(0.5 + rng.random(c)).astype(np.float32),
                   beta=(0.2 * rng.standard_normal(c) + 0.1).astype(np.float32),
                   mean=(0.3 * rng.standard_normal(c) + 0.2).astype(np.float32),
                   var=(0.5 + 1.5 * rng.random(c)).astype(np.float32),
                   eps=BN_EPS)
    return LayerRecord(spec.name, spec.kind, spec.stride, weight.astype(np.float32), bn=bn)


def random_records(specs, seed=0):
    """Random LayerRecords for every weight layer of `specs` (pooling has none)."""
    rng = np.random.default_rng(seed)
    return [random_record(spec, rng) for spec in specs if spec.op.has_weights]


def random_model_file(width_multiplier=1.0, num_classes=1000, input_size=224, seed=0):
    """A ModelFile of MobileNetV1 at `width_multiplier` with random weights, ReLU6, as timm."""
    info = ModelInfo(width_multiplier=float(width_multiplier), num_classes=num_classes,
                     input_size=input_size, activation="relu6", padding="torch",
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=0.875,
                     interpolation="bilinear", source_file="random weights",
                     source_layout="synthetic", converter_version="mobinumba.bench")
    specs = mobilenet_v1_specs(width_multiplier, num_classes)
    return ModelFile(info=info, layers=random_records(specs, seed))


def separable_blocks(layers):
    """[(dw, pw)] of consecutive (dwconv, pwconv) LayerSpecs in a model's layer list."""
    return [(first, second) for first, second in zip(layers, layers[1:])
            if first.op is DEPTHWISE and second.op is POINTWISE]


def conv_mobilenet_specs(layers):
    """The paper's "Conv MobileNet" of a model: each depthwise-separable block replaced by
    one standard 3x3 conv named blockNN_conv (Cin of the depthwise, Cout of the pointwise, the
    depthwise's stride); every other layer kept. `layers`: the model's weight-layer specs."""
    blocks = {dw.name: pw for dw, pw in separable_blocks(layers)}
    replaced = {pw.name for pw in blocks.values()}
    specs = []
    for spec in layers:
        if spec.name in blocks:
            specs.append(LayerSpec(f"block{len(specs):02d}_conv", STEM.name, spec.in_channels,
                                   blocks[spec.name].out_channels, spec.stride))
        elif spec.name not in replaced:
            specs.append(spec)
    return specs
