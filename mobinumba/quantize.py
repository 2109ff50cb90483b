"""Post-training quantization: a float32 model file -> an int8 one (TFLite's int8 scheme).

    weights     batch norm folded (ops/base.fold_batch_norm), then symmetric int8 per output
                channel: scale = max|w_c| / 127, q = round(w / scale) in [-127, 127]
    bias        int32: round(b / (input_scale * weight_scale[c])), as TFLite's converter
    activations asymmetric int8 from a float range [low, high] (widened to hold 0):
                scale = (high - low) / 255, zero_point = round(-128 - low / scale)

The activation ranges come from calibration images run through the float model (every op's
output: min/max, or a percentile of each image's values averaged over the images, which
ignores rare outliers). Without calibration a ReLU6 network uses what it knows: [0, 6] after
every layer, the input's range from the normalisation (pixels in [0, 1]), and for the logits
the bound |b_k| + 6 sum_c |w_kc| that pooled features in [0, 6] allow (loose: it costs
resolution, see weights/README.md). A ReLU network has no known bound and needs calibration
images.
"""
from dataclasses import dataclass, replace

import numpy as np

from .errors import InputError
from .graph import Workspace
from .ops import kind_of
from .ops.base import fold_batch_norm
from .quantization import LayerQuantization, Quantization, round_half_away
from .threads import kernel_section
from .weights import FORMAT_VERSIONS, LayerRecord, ModelFile

@dataclass
class QuantizeReport:
    """What quantize_model_file did: the calibration used and the top-1 agreement of the
    int8 model with the float one on the calibration images (None without images)."""

    calibration: str
    images: int
    agreement: float | None


def quantization_for_range(low, high):
    """The int8 Quantization of a float range, widened to contain 0 (TFLite's converter
    nudges the same way): scale (high - low) / 255 as float32, the zero point rounded and
    clamped to [-128, 127]."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < 1e-8:  # a constant zero tensor: any scale represents it
        high = low + 1e-8 * 255
    scale = float(np.float32((high - low) / 255.0))
    zero_point = int(np.clip(round_half_away(np.float64(-128.0 - low / scale)), -128, 127))
    return Quantization(scale, zero_point)


# The largest |quantized bias|: leaves 2^30 of int32's range to the accumulated products.
MAX_BIAS = 2 ** 30


def quantize_weights(weight, bias, input_scale):
    """(int8 weight of the same shape, float32 (Cout,) scales): symmetric per output channel
    (axis 0), max |w| / 127 (a channel of zeros gets scale 1). A channel whose bias would
    not fit MAX_BIAS at scale input_scale * weight_scale gets a larger weight scale (as
    TFLite's quantizer adjusts it): batch norm can leave a channel with near-zero weights and
    a large bias."""
    matrix = weight.astype(np.float64).reshape(weight.shape[0], -1)
    largest = np.abs(matrix).max(axis=1)
    scales = np.where(largest > 0, largest / 127.0, 1.0)
    for_bias = np.abs(bias.astype(np.float64)) / (float(np.float32(input_scale)) * MAX_BIAS)
    scales = np.maximum(scales, for_bias).astype(np.float32)
    q = np.clip(round_half_away(matrix / scales.astype(np.float64)[:, None]), -127, 127)
    return q.astype(np.int8).reshape(weight.shape), scales


def quantize_bias(bias, input_scale, weight_scales):
    """int32 (Cout,) bias with scale input_scale * weight_scale[c]."""
    scale = np.float64(np.float32(input_scale)) * weight_scales.astype(np.float64)
    return np.clip(round_half_away(bias.astype(np.float64) / scale), -MAX_BIAS,
                   MAX_BIAS).astype(np.int32)


def observe_ranges(model, batches, percentile=None):
    """[(low, high)] per op of a float Model over float (N, 3, H, W) batches, and the number
    of images: min/max over everything, or (with `percentile` p) the mean over batches of
    each batch's (100 - p)th and p-th percentiles."""
    lows, highs, images = None, None, 0
    for x in batches:
        with kernel_section():
            workspace = Workspace(model._ops, x.shape[0], x.shape[2], x.shape[3])
            np.copyto(workspace.input, x)
            observed = [_bounds(output, percentile) for _, output in workspace.run_layers()]
        input_bounds = _bounds(x, percentile)
        batch = np.array([input_bounds] + observed)  # (1 + ops, 2): the input, then each op
        if lows is None:
            lows, highs = [batch[:, 0]], [batch[:, 1]]
        else:
            lows.append(batch[:, 0])
            highs.append(batch[:, 1])
        images += x.shape[0]
    if images == 0:
        raise InputError("no calibration images")
    if percentile is None:
        return list(zip(np.min(lows, axis=0), np.max(highs, axis=0))), images
    return list(zip(np.mean(lows, axis=0), np.mean(highs, axis=0))), images


def _bounds(values, percentile):
    if percentile is None:
        return float(values.min()), float(values.max())
    low, high = np.percentile(values, (100.0 - percentile, percentile))
    return float(low), float(high)


def known_ranges(model, model_file):
    """[(low, high)] for the input and every op of the float `model` without calibration
    (see the module docstring); a ReLU network has no bound to use."""
    info = model_file.info
    if info.activation != "relu6":
        raise InputError(f"{model_file.path or 'the model'} uses {info.activation}, whose "
                         f"outputs have no known range: give calibration images "
                         f"(--calibrate DIR_OR_GLOB)")
    mean, std = np.array(info.mean), np.array(info.std)
    input_range = (float(np.min(-mean / std)), float(np.max((1.0 - mean) / std)))
    # The logits of pooled features in [0, 6]: at most |b_k| + 6 * sum_c |w_kc| in magnitude.
    classifier = model_file.layers[-1]
    bound = float(np.max(np.abs(classifier.bias) + 6.0 * np.abs(classifier.weight).sum(axis=1)))
    return [input_range] + [(0.0, 6.0)] * (len(model._ops) - 1) + [(-bound, bound)]


def quantize_model_file(model_file, batches=None, percentile=None):
    """(int8 ModelFile, QuantizeReport) of a float32 ModelFile.

    batches: an iterable of float32 (N, 3, H, W) preprocessed calibration batches, or None
    (ReLU6 networks only, see known_ranges). The report's agreement is the fraction of
    calibration images whose top-1 class is the same for the float and the int8 model.
    """
    from .model import Model

    if model_file.info.precision != "float32":
        raise InputError(f"{model_file.path or 'the model'} is already "
                         f"{model_file.info.precision}")
    model = Model(model_file)
    batches = None if batches is None else list(batches)
    if batches:
        ranges, images = observe_ranges(model, batches, percentile)
        calibration = (f"{images} images, " + (f"percentile {percentile:g}" if percentile
                                               else "min/max"))
    else:
        ranges, images = known_ranges(model, model_file), 0
        calibration = "none: [0, 6] after every layer, logits bounded by the weights"
    quantizations = [quantization_for_range(low, high) for low, high in ranges]
    int8_file = _quantized_file(model_file, model, quantizations)
    agreement = None
    if batches:
        int8_model = Model(int8_file)
        same = sum(int(np.sum(model(x).argmax(axis=1) == int8_model(x).argmax(axis=1)))
                   for x in batches)
        agreement = same / images
    return int8_file, QuantizeReport(calibration, images, agreement)


def _quantized_file(model_file, model, quantizations):
    """The int8 ModelFile from the float records and one Quantization per tensor:
    quantizations[0] for the input, then one per op of `model` (the pooling op's is not
    used: its int8 form, AVERAGE_POOL_2D, keeps its input's quantization)."""
    op_names = [op.spec.name for op in model._ops]
    output_of = dict(zip(op_names, quantizations[1:]))
    layers = []
    input_quantization = quantizations[0]
    previous = input_quantization
    for record in model_file.layers:
        kind = kind_of(record.kind)
        pooled = None
        if kind.flat_input:
            pooled = previous  # AVERAGE_POOL_2D keeps its input's quantization
            input_of_layer = pooled
        else:
            input_of_layer = previous
        if kind.has_bn:
            weight, bias = fold_batch_norm(record)
        else:
            weight, bias = record.weight, record.bias
        bias = np.zeros(weight.shape[0], np.float32) if bias is None else bias
        q_weight, weight_scale = quantize_weights(weight, bias, input_of_layer.scale)
        output = output_of[record.name]
        quant = LayerQuantization(weight_scale=weight_scale, output=output, pooled=pooled,
                                  pool_op="average")
        layers.append(LayerRecord(name=record.name, kind=record.kind, stride=record.stride,
                                  weight=q_weight,
                                  bias=quantize_bias(bias, input_of_layer.scale, weight_scale),
                                  source_name=record.source_name, quant=quant))
        previous = output
    info = replace(model_file.info, precision="int8", input_quantization=input_quantization,
                   format_version=FORMAT_VERSIONS["int8"])
    return ModelFile(info=info, layers=layers, labels=model_file.labels)
